"""The Triton stage without Docker: perf_analyzer's CSV (a real one, made on this host), its
command line, input data and retries, the server log scan (a real log) and readiness wait, the
TensorRT version guard, the stage's handling of failures (its Docker side handed in as fakes),
and the final table."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from rich.console import Console
from test_tensorrt_guard import torchscript_file
from tritonclient.grpc import model_config_pb2 as mc

from orchestrator.config import TritonSettings
from orchestrator.containers import engine
from orchestrator.containers.gpus import GpuRequest
from orchestrator.errors import ServerFailed
from orchestrator.progress import print_summary
from orchestrator.results import (
    Environment,
    ImageRecord,
    RunResults,
    Selection,
    TritonLatency,
    TritonResults,
    TritonRun,
    VariantResult,
)
from orchestrator.run.workspace import Workspace
from orchestrator.triton import stage as triton_stage
from orchestrator.triton.perf_analyzer import (
    Measurement,
    PerfAnalyzer,
    PerfFailed,
    command,
    last_message,
    parse_csv,
    unstable,
    write_input_data,
)
from orchestrator.triton.repository import read_config
from orchestrator.triton.serve import request_body
from orchestrator.triton.server import InContainer, TritonServer, failed_models, fatal_line, log_message
from orchestrator.triton.tensorrt_guard import TensorRTMismatch, builder_tensorrt, same_version
from runners.contract.protocol import IOSpec, LatencyStats, ProfileEntry, TensorSpec

DATA = Path(__file__).resolve().parent / "data"


# --- perf_analyzer -------------------------------------------------------------------------------

def test_parse_a_real_perf_analyzer_csv():
    rows = parse_csv((DATA / "perf_analyzer_verbose.csv").read_text())
    assert [r.concurrency for r in rows] == [1, 2]
    one = rows[0]
    assert one.throughput == pytest.approx(13274.8)
    assert one.latency_ms == TritonLatency(p50=0.273, p90=0.348, p95=0.389, p99=0.567)
    assert one.server_queue_ms == pytest.approx(0.013)
    assert one.server_compute_ms == pytest.approx((9 + 98 + 67) / 1000)
    assert rows[1].latency_ms.p99 == pytest.approx(3.158)


def test_parse_csv_stops_at_the_first_blank_line_and_checks_columns():
    text = (DATA / "perf_analyzer_verbose.csv").read_text() + "\nExtra section,with,other,columns\n1,2,3,4\n"
    assert len(parse_csv(text)) == 2
    with pytest.raises(PerfFailed, match="lacks the columns .*p99 latency"):
        parse_csv("Concurrency,Inferences/Second\n1,100\n")
    with pytest.raises(PerfFailed, match="empty CSV"):
        parse_csv("\n\n")


def test_command_is_an_argument_list_in_model_analyzers_form():
    args = command("onnx-fp32", 8, 2, "127.0.0.1:8001", "/perf/x.csv", 50, "/perf/in.json")
    assert args[0] == "perf_analyzer"
    joined = " ".join(args)
    for part in ("-m onnx-fp32", "-b 8", "-u 127.0.0.1:8001", "-i grpc", "-f /perf/x.csv", "--verbose-csv",
                 "--concurrency-range 2:2", "--measurement-mode count_windows", "--measurement-request-count 50",
                 "--input-data /perf/in.json"):
        assert part in joined


def test_an_unbatched_model_is_measured_without_a_batch_option():
    args = command("fixed-fp32", None, 1, "127.0.0.1:8001", "/perf/x.csv", 50, "/perf/in.json")
    assert "-b" not in args and "--batch-size" not in args
    assert args[:3] == ["perf_analyzer", "-m", "fixed-fp32"] and "--input-data" in args


# As perf_analyzer prints them: when the windows disagree, and (some versions) when no request
# finished within a window.
SETTINGS_LINES = ("*** Measurement Settings ***\n  Batch size: 4\n  Service Kind: Triton\n"
                  '  Using "count_windows" mode for stabilization\n  Minimum number of samples in each window: 50\n'
                  "  Using synchronous calls for inference\n  Stabilizing using average latency\n\n"
                  "Request concurrency: 1\n")
NOT_STABLE = SETTINGS_LINES + ("Failed to obtain stable measurement within 10 measurement windows for concurrency 1. "
                               "Please try to increase the --measurement-request-count.\n")
NO_REQUESTS = SETTINGS_LINES + "No valid requests recorded within time interval. Please use a larger time window.\n"


def test_unstable_outputs_are_recognised():
    assert unstable(NOT_STABLE) and unstable(NO_REQUESTS)
    assert not unstable(SETTINGS_LINES + "error: failed to get model metadata: Request for unknown model\n")


class FakeRuns:
    """perf_analyzer containers: each call answers with the next (exit code, output); exit 0
    writes a real CSV where -f says."""

    def __init__(self, folder: Path, outputs: list[tuple[int, str]]):
        self.folder, self.outputs, self.commands = folder, outputs, []

    def __call__(self, spec: engine.ContainerSpec, timeout_s: float):
        self.commands.append(spec.command)
        code, output = self.outputs.pop(0)
        if code == 0:
            csv_name = spec.command[spec.command.index("-f") + 1].rpartition("/")[2]
            (self.folder / csv_name).write_text((DATA / "perf_analyzer_verbose.csv").read_text())
        return engine.ExitState(code=code, oom_killed=False, error=""), output


def perf_analyzer(folder: Path, outputs: list[tuple[int, str]]) -> tuple[PerfAnalyzer, FakeRuns]:
    runs = FakeRuns(folder, outputs)
    return PerfAnalyzer(runs, "nav-orch/triton:cpu", "run", folder, TritonSettings(measurement_request_count=50)), runs


def test_a_larger_time_window_is_asked_for_with_a_longer_window(tmp_path):
    perf, runs = perf_analyzer(tmp_path, [(1, NO_REQUESTS), (1, NOT_STABLE), (0, SETTINGS_LINES)])
    point, csv_path = perf.measure("onnx-fp32", 4, 1, "127.0.0.1:1", None)
    assert point.stable and point.concurrency == 1 and csv_path.name == "onnx-fp32-b4-c1-try3.csv"
    assert [args[args.index("--measurement-request-count") + 1] for args in runs.commands] == ["50", "100", "200"]
    assert all(args[args.index("-b") + 1] == "4" for args in runs.commands)


def test_other_failures_are_not_retried_and_unbatched_runs_take_no_batch_size(tmp_path):
    perf, runs = perf_analyzer(tmp_path / "perf", [(1, SETTINGS_LINES + "error: Request for unknown model\n")])
    with pytest.raises(PerfFailed, match="unknown model .log: perf/fixed-fp32-c1.log"):
        perf.measure("fixed-fp32", None, 1, "127.0.0.1:1", None)
    (args,) = runs.commands
    assert "-b" not in args


def test_input_data_holds_real_sample_rows(tmp_path):
    samples = {"x": np.arange(12, dtype=np.float32).reshape(6, 2), "m": np.ones((6, 3), dtype=np.int64)}
    path = write_input_data(samples, ["x", "m"], batched=True, path=tmp_path / "in.json")
    steps = json.loads(path.read_text())["data"]
    assert len(steps) == 4
    assert steps[1]["x"] == {"content": [2.0, 3.0], "shape": [2]}
    assert steps[0]["m"] == {"content": [1, 1, 1], "shape": [3]}
    whole = json.loads(write_input_data(samples, ["x", "m"], False, tmp_path / "w.json").read_text())["data"]
    assert len(whole) == 1 and whole[0]["x"]["shape"] == [6, 2]


def test_last_message_prefers_errors():
    output = "*** Measurement Settings ***\nError: failed to get model metadata: Request for unknown model\n\n"
    assert last_message(output) == "Error: failed to get model metadata: Request for unknown model"


# --- the server log --------------------------------------------------------------------------------

def test_a_real_failed_load_log_names_the_model_and_why():
    log = (DATA / "triton_failed_load.log").read_text()
    assert failed_models(log) == {
        "torchscript-trace-fp32": "Internal: ValueError: unknown runtime 'nonsense' "
                                  "(onnxruntime, torchscript, exported-program)"}
    assert fatal_line(log).startswith("Failed to initialize Python stub: ValueError: unknown runtime 'nonsense'")
    assert "\\n" not in fatal_line(log)


def test_benign_error_lines_of_a_cpu_host_are_not_fatal():
    log = ('E1125 04:03:24.660965 7 server.cc:241] "CudaDriverHelper has not been initialized."\n'
           'W1125 04:03:24.660753 7 pinned_memory_manager.cc:273] "Unable to allocate pinned system memory"\n'
           'I1125 04:03:26.949859 7 grpc_server.cc:2558] "Started GRPCInferenceService at 127.0.0.1:18001"\n')
    assert fatal_line(log) is None
    assert log_message(log.splitlines()[2]) == "Started GRPCInferenceService at 127.0.0.1:18001"


class FakeContainer:
    """A server container as docker's SDK shows it: running until `exit_code` is set."""

    def __init__(self, log: str = "", exit_code: Optional[int] = None):
        self.log, self.exit_code = log, exit_code

    def reload(self) -> None:
        pass

    @property
    def status(self) -> str:
        return "running" if self.exit_code is None else "exited"

    @property
    def attrs(self) -> dict:
        return {"State": {"Running": self.exit_code is None, "ExitCode": self.exit_code}}

    def logs(self, stdout: bool, stderr: bool) -> bytes:
        return self.log.encode()


class FakeHealth:
    """Readiness as tritonclient reports it: not ready for the first `not_ready` polls."""

    def __init__(self, not_ready: int):
        self.not_ready, self.polls, self.closed = not_ready, 0, False

    def ready(self) -> bool:
        self.polls += 1
        return self.polls > self.not_ready

    def version(self) -> str:
        return "2.51.0"

    def close(self) -> None:
        self.closed = True


def waiting_server(tmp_path: Path, container: FakeContainer, health: FakeHealth,
                   ready_timeout_s: float = 30.0) -> TritonServer:
    """A server whose container has started: what is left is the wait for readiness."""
    server = TritonServer(None, "nav-orch/triton:cpu", tmp_path, ["onnx-fp32"], "run", tmp_path / "server.log",
                          ready_timeout_s=ready_timeout_s, health=lambda url: health)
    server.running, server.health = InContainer(container), health
    return server


def test_readiness_is_polled_until_the_server_says_ready(tmp_path):
    health = FakeHealth(not_ready=2)
    server = waiting_server(tmp_path, FakeContainer(), health)
    server.wait_ready()
    assert health.polls == 3 and server.server_version() == "2.51.0"


def test_a_fatal_log_line_ends_the_wait_with_the_model_that_failed(tmp_path):
    log = (DATA / "triton_failed_load.log").read_text()
    server = waiting_server(tmp_path, FakeContainer(log, exit_code=1), FakeHealth(not_ready=10**6))
    with pytest.raises(ServerFailed, match="failed to load torchscript-trace-fp32: Internal: ValueError") as caught:
        server.wait_ready()
    assert set(caught.value.failed_models) == {"torchscript-trace-fp32"}
    assert (tmp_path / "server.log").read_text() == log


def test_a_server_never_ready_is_a_clear_error_in_time(tmp_path):
    server = waiting_server(tmp_path, FakeContainer("I1125 model loading"), FakeHealth(not_ready=10**6),
                            ready_timeout_s=0.3)
    with pytest.raises(ServerFailed, match=r"Triton was not ready after 0 s \(log: .*server.log\)"):
        server.wait_ready()


# --- the TensorRT version guard --------------------------------------------------------------------

def environment(versions=None, label="from-base") -> Environment:
    return Environment(nav_orch="0", host_python="3.11", images=[ImageRecord(
        tag="nav-orch/pytorch:25.10", id="sha256:x", labels={"org.nav-orch.tensorrt": label},
        versions=versions or {})])


def test_builder_version_from_labels_and_disagreement():
    assert builder_tensorrt(environment(label="10.13.3.9")) == "10.13.3.9"
    env = environment({"tensorrt": "10.13.3.9"})
    env.images.append(ImageRecord(tag="nav-orch/tensorflow:25.10", id="sha256:y", versions={"tensorrt": "10.9.0"}))
    with pytest.raises(TensorRTMismatch, match="different TensorRT versions"):
        builder_tensorrt(env)
    assert not same_version("10.13", "10.13.3")
    assert not same_version("10.13.3", "10.13.4")


# --- the stage's orchestration, Docker replaced by fakes --------------------------------------------

IO = IOSpec(inputs=[TensorSpec("input", "float32", [None, 4])], outputs=[TensorSpec("output", "float32", [None, 2])])


def verified(workspace: Workspace, name: str, artifact: str, throughput: float) -> VariantResult:
    folder = workspace.variant_dir(name)
    (folder / artifact).write_bytes(b"weights")
    entry = ProfileEntry(1, LatencyStats(1, 1, 1, 1, 1), throughput, 3, True)
    return VariantResult(name=name, format=name.rsplit("-", 1)[0], precision="fp32", status="ok",
                         artifact=workspace.relative(folder / artifact), profile=[entry])


class FakeServer:
    """A server that fails to load torchscript-trace-fp32 (as Triton's --exit-on-error does)."""

    def __init__(self, started: list[list[str]], *, image: str, repository: Path, models: list[str], run_id: str,
                 log_path: Path, gpus: str, shm_size: str, ready_timeout_s: float):
        self.models, self.grpc_url, self.ready_s = models, "127.0.0.1:1", 1.5
        started.append(models)

    def __enter__(self) -> FakeServer:
        if "torchscript-trace-fp32" in self.models:
            raise ServerFailed("Triton did not start", {"torchscript-trace-fp32": "Internal: boom"})
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def server_version(self) -> str:
        return "2.51.0"

    def check_running(self) -> None:
        pass


class FakePerf:
    """Measures 1000/s per sample; concurrency 2 never settles."""

    def __init__(self, measured: list[tuple[str, Optional[int], Optional[Path]]], *, image: str, run_id: str,
                 folder: Path, settings: TritonSettings):
        self.measured, self.folder = measured, folder
        folder.mkdir(parents=True, exist_ok=True)

    def measure(self, model: str, batch_size: Optional[int], concurrency: int, grpc_url: str,
                input_data: Optional[Path]) -> tuple[Measurement, Path]:
        self.measured.append((model, batch_size, input_data))
        if concurrency == 2:
            raise PerfFailed("no stable measurement")
        latency = TritonLatency(p50=1, p90=2, p95=3, p99=4)
        point = Measurement(concurrency, 1000.0 * (batch_size or 1), latency, 0.1, 0.5)
        return point, self.folder / f"{model}-b{batch_size}-c{concurrency}.csv"


class ShippedTensorRT:
    """The server image's TensorRT as a fake image_tensorrt: records each question."""

    def __init__(self, version: Optional[str]):
        self.version, self.asked = version, []

    def __call__(self, image: str, run_id: str) -> Optional[str]:
        self.asked.append(image)
        return self.version


class World:
    """A workspace with three verified variants, and the stage's Docker side as fakes that record
    what they were asked."""

    def __init__(self, root: Path):
        self.workspace = Workspace(root).create()
        np.savez(self.workspace.reference / "samples.npz", input=np.ones((2, 4), dtype=np.float32))
        self.results = RunResults(environment=environment(), best="onnx-fp32", variants=[
            verified(self.workspace, "onnx-fp32", "model.onnx", 100.0),
            verified(self.workspace, "torchscript-trace-fp32", "model.ts", 50.0),
            verified(self.workspace, "torch-compile-fp32", "compiled", 500.0),
        ])
        self.started: list[list[str]] = []
        self.measured: list[tuple[str, Optional[int], Optional[Path]]] = []
        self.tensorrt = ShippedTensorRT(None)
        self.tools = triton_stage.StageTools(
            require_image=lambda tag: engine.ImageInfo(tag=tag, id="sha256:t", labels={}),
            image_backends=lambda image, run_id: {"python"},
            image_tensorrt=self.tensorrt, server=partial(FakeServer, self.started),
            perf=partial(FakePerf, self.measured), images=triton_stage.triton_images)

    def stage(self, settings: TritonSettings, save: Callable[[], None] = lambda: None,
              **tools: Callable) -> triton_stage.TritonStage:
        """The stage with these fakes, any of them replaced by `tools`."""
        return triton_stage.TritonStage(self.workspace, "run", settings, [], Notes(),
                                        dataclasses.replace(self.tools, **tools), save)


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path / "ws")


class Notes:
    def __init__(self):
        self.lines = []

    def stage(self, variant, stage, detail=""):
        self.lines.append(f"{variant}: {stage} {detail}")

    def note(self, text):
        self.lines.append(text)


def test_a_model_that_fails_to_load_is_recorded_and_the_rest_measured(world):
    saves = []
    stage = world.stage(TritonSettings(all_variants=True, concurrency=[1, 2]), lambda: saves.append(1))
    triton = stage.run(world.results, IO, [1, 4], "throughput", None, "cpu")
    assert world.results.triton is triton and triton.image == "nav-orch/triton:cpu"
    assert triton.model_repository == "triton/model_repository"
    assert world.started == [["onnx-fp32", "torchscript-trace-fp32"], ["onnx-fp32"]]
    assert [(r.variant, r.batch_size, r.concurrency, r.backend) for r in triton.runs] == [
        ("onnx-fp32", 1, 1, "python"), ("onnx-fp32", 4, 1, "python")]
    assert triton.runs[1].throughput == 4000.0 and triton.server_version == "2.51.0" and triton.ready_s == 1.5
    assert "torch-compile-fp32: compiled from its source where it runs" in triton.error
    assert "torchscript-trace-fp32: Triton failed to load it: Internal: boom" in triton.error
    assert "onnx-fp32 batch 1 concurrency 2: no stable measurement" in triton.error
    assert len(saves) >= len(triton.runs)  # results.json rewritten as figures arrive
    assert world.tensorrt.asked == []  # no engine to serve: no container asks the image for its TensorRT


def test_the_best_runtime_falls_back_to_the_best_servable_variant(world):
    world.results.best = "torch-compile-fp32"
    triton = world.stage(TritonSettings(concurrency=[1])).run(world.results, IO, [1], "throughput", None, "cpu")
    assert world.started == [["onnx-fp32"]]
    assert "served onnx-fp32 instead" in triton.error
    assert [r.variant for r in triton.runs] == ["onnx-fp32"]


def test_a_model_without_a_batch_axis_is_measured_unbatched_on_whole_samples(world):
    # A fixed-shape graph: axis 0 is 2 in the model, not a dynamic batch.
    fixed = IOSpec(inputs=[TensorSpec("input", "float32", [2, 4])], outputs=[TensorSpec("output", "float32", [2, 2])])
    # The search has its own tests (below).
    triton = world.stage(TritonSettings(concurrency=[1], search="off")).run(world.results, fixed, [2], "throughput",
                                                                            None, "cpu")
    assert triton.error is None
    config = read_config(world.workspace.root / "triton" / "model_repository", "onnx-fp32")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 4]
    ((model, batch_size, input_data),) = world.measured
    assert (model, batch_size) == ("onnx-fp32", None)
    (step,) = json.loads(input_data.read_text())["data"]
    assert step["input"]["shape"] == [2, 4]
    assert [(r.batch_size, r.concurrency) for r in triton.runs] == [(1, 1)]


def test_an_unexpected_failure_becomes_the_stage_error(world):
    def broken(image: str, run_id: str) -> set[str]:
        raise RuntimeError("disk on fire")

    triton = world.stage(TritonSettings(), image_backends=broken).run(world.results, IO, [1], "throughput", None,
                                                                       "cpu")
    assert triton.error == "RuntimeError: disk on fire (traceback: triton/stage.log)"
    assert "Traceback" in (world.workspace.root / "triton" / "stage.log").read_text()


def with_engines(world: World, *names: str) -> None:
    """Add verified TensorRT engines, the best first, built by TensorRT 10.13.3.9 as the runner
    reported; the runner image's label says "from-base", docker-bake.hcl's default."""
    world.results.environment = environment({"tensorrt": "10.13.3.9"})
    world.results.variants += [verified(world.workspace, name, "model.plan", 900.0) for name in names]
    world.results.best = names[0]


def test_an_engine_is_served_when_the_image_ships_its_tensorrt_whatever_the_labels(world):
    with_engines(world, "tensorrt-fp16", "tensorrt-fp32")
    shipped = ShippedTensorRT("10.13.3")
    stage = world.stage(TritonSettings(all_variants=True, concurrency=[1]), image_tensorrt=shipped,
                        image_backends=lambda image, run_id: {"python", "tensorrt"})
    triton = stage.run(world.results, IO, [1], "throughput", None, "25.10")
    assert world.started[0] == ["onnx-fp32", "torchscript-trace-fp32", "tensorrt-fp16", "tensorrt-fp32"]
    assert shipped.asked == ["nav-orch/triton:25.10"]  # one short container for every engine
    assert "TensorRT" not in (triton.error or "")
    assert {r.variant for r in triton.runs} >= {"tensorrt-fp16", "tensorrt-fp32"}


@pytest.mark.parametrize("shipped, reason", [
    ("10.11.0", "tensorrt-fp16 was built with TensorRT 10.13.3.9 but nav-orch/triton:25.10 carries TensorRT 10.11.0"),
    (None, "tensorrt-fp16 holds a TensorRT engine, but nav-orch/triton:25.10 has no TensorRT"),
])
def test_an_engine_the_image_cannot_load_is_not_served(world, shipped, reason):
    with_engines(world, "tensorrt-fp16")
    stage = world.stage(TritonSettings(concurrency=[1]), image_tensorrt=ShippedTensorRT(shipped),
                        image_backends=lambda image, run_id: {"python", "tensorrt"})
    triton = stage.run(world.results, IO, [1], "throughput", None, "25.10")
    assert reason in triton.error
    assert world.started == [["onnx-fp32"]]  # the best servable variant instead
    assert "served onnx-fp32 instead" in triton.error


@pytest.mark.parametrize("engines, served", [(1, False), (0, True)])
def test_a_torch_tensorrt_file_is_held_to_its_tensorrt_where_it_embeds_engines(world, engines, served):
    """Torch-TensorRT's TorchScript embeds TensorRT engines, bound to the TensorRT that built them as a
    plan is; one whose graph all fell back to torch holds none, and no image is asked about TensorRT."""
    world.results.environment = environment({"tensorrt": "10.13.3.9"})
    variant = verified(world.workspace, "torch-tensorrt-fp16", "model.ts", 900.0)
    torchscript_file(world.workspace.root / variant.artifact, engines)
    world.results.variants.append(variant)
    world.results.best = variant.name
    shipped = ShippedTensorRT("10.11.0")
    stage = world.stage(TritonSettings(concurrency=[1]), image_tensorrt=shipped,
                        image_backends=lambda image, run_id: {"python", "pytorch"})
    triton = stage.run(world.results, IO, [1], "throughput", None, "25.10")
    if served:
        assert world.started == [["torch-tensorrt-fp16"]] and shipped.asked == []
    else:
        assert ("torch-tensorrt-fp16 was built with TensorRT 10.13.3.9 but nav-orch/triton:25.10 carries "
                "TensorRT 10.11.0") in triton.error
        assert world.started == [["onnx-fp32"]] and shipped.asked == ["nav-orch/triton:25.10"]


def test_the_server_gets_the_gpus_and_configs_name_none_of_their_host_indices(world):
    gpus_given: list[str] = []

    def server(**options):
        gpus_given.append(options["gpus"])
        return FakeServer(world.started, **options)

    stage = dataclasses.replace(world.stage(TritonSettings(concurrency=[1])), gpus=["0", "2"],
                                tools=dataclasses.replace(world.tools, server=server))
    stage.run(world.results, IO, [1], "throughput", None, "25.10")
    assert [GpuRequest.parse(gpus).devices for gpus in gpus_given] == [("0", "2")]
    (group,) = read_config(world.workspace.model_repository, "onnx-fp32").instance_group
    assert (group.kind, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, [])


def test_the_ready_to_copy_request_takes_the_shapes_the_server_serves():
    batched = mc.ModelConfig(max_batch_size=8, input=[mc.ModelInput(name="x", data_type=mc.TYPE_FP32, dims=[4]),
                                                      mc.ModelInput(name="k", data_type=mc.TYPE_INT64, dims=[1])])
    body = request_body({"x": np.ones((3, 4), np.float32), "k": np.arange(3)}, batched)
    assert [(i["name"], i["shape"], i["datatype"]) for i in body["inputs"]] == [("x", [1, 4], "FP32"),
                                                                                ("k", [1, 1], "INT64")]
    unbatched = mc.ModelConfig(input=[mc.ModelInput(name="x", data_type=mc.TYPE_FP32, dims=[3, 4]),
                                      mc.ModelInput(name="t", data_type=mc.TYPE_FP32, dims=[1])])
    body = request_body({"x": np.ones((3, 4), np.float32), "t": np.float32(2)}, unbatched)
    assert [(i["shape"], len(i["data"])) for i in body["inputs"]] == [([3, 4], 12), ([1], 1)]


def test_images_of_each_flavor():
    assert triton_stage.triton_images("cpu") == ("nav-orch/triton:cpu", "nav-orch/triton:cpu")
    assert triton_stage.triton_images("25.10") == ("nav-orch/triton:25.10", "nav-orch/triton-sdk:25.10")


def test_final_table_shows_served_figures_next_to_the_runners(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    results = RunResults(environment=environment(), best="onnx-fp32",
                         selection=Selection(objective="throughput", reason="highest throughput"),
                         variants=[verified(workspace, "onnx-fp32", "model.onnx", 250_000.0)])
    results.triton = TritonResults(image="nav-orch/triton:cpu", model_repository="triton/model_repository", runs=[
        TritonRun(variant="onnx-fp32", backend="python", batch_size=4, concurrency=2, throughput=11929.4,
                  latency_ms=TritonLatency(p50=0.6, p90=0.8, p95=1.1, p99=3.158), server_queue_ms=0.1,
                  server_compute_ms=0.3)], error="x: failed")
    console = Console(record=True, width=200)
    print_summary(results, console, "ws")
    text = console.export_text()
    assert "served/s" in text and "served p99 ms" in text
    assert "11,929 (bs4 c2)" in text and "3.158" in text and "250,000" in text
    assert "triton: x: failed" in text


# --- the configuration search on a served model --------------------------------------------------

class SearchedServer(FakeServer):
    """Loads every configuration it is given but one with 4 instances (out of memory, say)."""

    loaded: list[dict] = []

    def load_model(self, model: str, config_json: str) -> None:
        config = json.loads(config_json)
        self.loaded.append(config)
        if config["instanceGroup"][0]["count"] == 4:
            raise ServerFailed(f"{model} did not load: out of memory")


class SearchedPerf(FakePerf):
    """Throughput of the configuration last loaded: 1000/s per instance, more with the queue delay up to
    500 us, growing with concurrency up to 4; p99 grows with the delay."""

    def __init__(self, server_loads: list[dict], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_loads = server_loads

    def measure(self, model, batch_size, concurrency, grpc_url, input_data):
        self.measured.append((model, batch_size, input_data))
        # Before any load: the stage's own measurement of the config.pbtxt it wrote.
        written = {"instanceGroup": [{"count": 1}], "dynamicBatching": {}}
        config = self.server_loads[-1] if self.server_loads else written
        delay = int(config["dynamicBatching"].get("maxQueueDelayMicroseconds", 0))
        gain = {0: 1.0, 100: 1.2, 500: 1.5, 2000: 1.4}[delay]
        rate = 1000.0 * config["instanceGroup"][0]["count"] * gain * min(concurrency, 4)
        p99 = 1.0 + delay / 100
        return Measurement(concurrency, rate, TritonLatency(p50=p99 / 2, p90=p99, p95=p99, p99=p99), 0.1, 0.5), \
            self.folder / f"{model}-c{concurrency}.csv"


def test_the_search_loads_and_measures_each_configuration_and_deploys_the_best(world):
    loads: list[dict] = []
    SearchedServer.loaded = loads
    saves = []
    settings = TritonSettings(concurrency=[1], search="quick", search_concurrency=[1, 2, 4, 8])
    stage = world.stage(settings, lambda: saves.append(1), server=partial(SearchedServer, world.started),
                        perf=partial(SearchedPerf, loads, world.measured))
    triton = stage.run(world.results, IO, [1, 4], "throughput", None, "cpu")
    search = triton.search
    assert search is not None, triton.error
    assert search.variant == "onnx-fp32" and search.client_batch_size == 1
    assert len(loads) == len(search.trials) and search.trials[0].config == search.default == "i1-d0-b4"
    assert [(t.instances, t.max_queue_delay_us, t.max_batch_size) for t in search.trials] == [
        (c["instanceGroup"][0]["count"], int(c["dynamicBatching"].get("maxQueueDelayMicroseconds", 0)),
         c["maxBatchSize"]) for c in loads]  # each trial is the configuration loaded for it
    failed = [t for t in search.trials if t.error]
    assert failed and all(t.instances == 4 and "out of memory" in t.error for t in failed)
    best = max((t for t in search.trials if not t.error), key=lambda t: t.throughput)
    assert search.chosen == best.config and best.instances == 2 and best.max_queue_delay_us == 500
    assert best.concurrency == 4  # the sweep stopped at 8, which added nothing
    assert search.gain == pytest.approx(best.throughput / search.trials[0].throughput)
    deployed = read_config(world.workspace.model_repository, "onnx-fp32")
    assert deployed.instance_group[0].count == 2 and deployed.dynamic_batching.max_queue_delay_microseconds == 500
    assert len(saves) >= len(search.trials) and triton.error is None
    said = f"triton search: {len(search.trials)} configuration(s)"
    assert any(line.startswith(said) for line in stage.reporter.lines)
