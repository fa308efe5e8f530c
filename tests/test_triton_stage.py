"""The Triton stage without Docker: perf_analyzer's CSV (a real one, made on this host), its
command line and input data, the server log scan (a real log), the TensorRT version guard, the
stage's handling of failures, and the final table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from orchestrator.triton import stage as triton_stage
from orchestrator.errors import ServerFailed
from orchestrator.config import TritonSettings
from orchestrator.results import (
    Environment, ImageRecord, RunResults, Selection, TritonLatency, TritonResults, TritonRun, VariantResult,
)
from orchestrator.triton.perf_analyzer import Measurement, PerfFailed, command, last_message, parse_csv, write_input_data
from orchestrator.progress import print_summary
from orchestrator.triton.tensorrt_guard import TensorRTMismatch, builder_tensorrt, check_plan, same_version
from orchestrator.triton.server import failed_models, fatal_line, log_message
from orchestrator.run.workspace import Workspace
from runners.protocol import IOSpec, LatencyStats, ProfileEntry, TensorSpec

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


# --- the TensorRT version guard --------------------------------------------------------------------

def environment(versions=None, label="from-base") -> Environment:
    return Environment(nav_orch="0", host_python="3.11", images=[ImageRecord(
        tag="nav-orch/pytorch:25.10", id="sha256:x", labels={"org.nav-orch.tensorrt": label},
        versions=versions or {})])


def test_plan_served_only_by_the_same_tensorrt():
    built = builder_tensorrt(environment({"tensorrt": "10.13.3.9"}))
    assert built == "10.13.3.9"
    check_plan("trt-fp16", built, "nav-orch/triton:25.10", {"org.nav-orch.tensorrt": "10.13.3"})
    with pytest.raises(TensorRTMismatch, match="built with TensorRT 10.13.3.9 but nav-orch/triton:25.09 carries "
                                               "TensorRT 10.11.0"):
        check_plan("trt-fp16", built, "nav-orch/triton:25.09", {"org.nav-orch.tensorrt": "10.11.0"})
    with pytest.raises(TensorRTMismatch, match="has no TensorRT"):
        check_plan("trt-fp16", built, "nav-orch/triton:cpu", {"org.nav-orch.tensorrt": "none"})
    with pytest.raises(TensorRTMismatch, match="does not say which TensorRT.*NGC_TENSORRT_VERSION=10.13.3.9"):
        check_plan("trt-fp16", built, "nav-orch/triton:25.10", {"org.nav-orch.tensorrt": "from-base"})
    with pytest.raises(TensorRTMismatch, match="version that built the plan is unknown"):
        check_plan("trt-fp16", builder_tensorrt(environment()), "nav-orch/triton:25.10",
                   {"org.nav-orch.tensorrt": "10.13.3"})


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


@pytest.fixture
def stage_world(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path / "ws").create()
    np.savez(workspace.reference / "samples.npz", input=np.ones((2, 4), dtype=np.float32))
    results = RunResults(environment=environment(), best="onnx-fp32", variants=[
        verified(workspace, "onnx-fp32", "model.onnx", 100.0),
        verified(workspace, "torchscript-trace-fp32", "model.ts", 50.0),
        verified(workspace, "torch-compile-fp32", "compile.json", 500.0),
    ])
    started: list[list[str]] = []

    class FakeServer:
        def __init__(self, client, image, repository, models, *args, **kwargs):
            self.models, self.grpc_url = models, "127.0.0.1:1"
            started.append(models)

        def __enter__(self):
            if "torchscript-trace-fp32" in self.models:
                raise ServerFailed("Triton did not start", {"torchscript-trace-fp32": "Internal: boom"})
            return self

        def __exit__(self, *exc):
            pass

        def server_version(self):
            return "2.51.0"

        def check_running(self):
            pass

    class FakePerf:
        def __init__(self, client, image, run_id, folder, settings):
            self.folder = folder
            folder.mkdir(parents=True, exist_ok=True)

        def measure(self, model, batch_size, concurrency, grpc_url, input_data):
            if concurrency == 2:
                raise PerfFailed("no stable measurement")
            point = Measurement(concurrency, 1000.0 * batch_size, TritonLatency(p50=1, p90=2, p95=3, p99=4), 0.1, 0.5)
            return point, self.folder / f"{model}-b{batch_size}-c{concurrency}.csv"

    monkeypatch.setattr(triton_stage, "require_image", lambda client, tag: type("I", (), {"id": "sha256:t", "labels": {}}))
    monkeypatch.setattr(triton_stage, "image_backends", lambda *args: {"python"})
    monkeypatch.setattr(triton_stage, "TritonServer", FakeServer)
    monkeypatch.setattr(triton_stage, "PerfAnalyzer", FakePerf)
    return workspace, results, started


class Notes:
    def __init__(self):
        self.lines = []

    def stage(self, variant, stage, detail=""):
        self.lines.append(f"{variant}: {stage} {detail}")

    def note(self, text):
        self.lines.append(text)


def test_a_model_that_fails_to_load_is_recorded_and_the_rest_measured(stage_world):
    workspace, results, started = stage_world
    saves = []
    settings = TritonSettings(all_variants=True, concurrency=[1, 2])
    stage = triton_stage.TritonStage(None, workspace, "run", settings, [], Notes(), lambda: saves.append(1))
    triton = stage.run(results, IO, [1, 4], "throughput", None, "cpu")
    assert results.triton is triton and triton.image == "nav-orch/triton:cpu"
    assert triton.model_repository == "triton/model_repository"
    assert started == [["onnx-fp32", "torchscript-trace-fp32"], ["onnx-fp32"]]
    assert [(r.variant, r.batch_size, r.concurrency, r.backend) for r in triton.runs] == [
        ("onnx-fp32", 1, 1, "python"), ("onnx-fp32", 4, 1, "python")]
    assert triton.runs[1].throughput == 4000.0 and triton.server_version == "2.51.0"
    assert "torch-compile-fp32: format torch-compile is a runtime, not a deployable artifact" in triton.error
    assert "torchscript-trace-fp32: Triton failed to load it: Internal: boom" in triton.error
    assert "onnx-fp32 batch 1 concurrency 2: no stable measurement" in triton.error
    assert len(saves) >= len(triton.runs)  # results.json rewritten as figures arrive


def test_the_best_runtime_falls_back_to_the_best_servable_variant(stage_world):
    workspace, results, started = stage_world
    results.best = "torch-compile-fp32"
    stage = triton_stage.TritonStage(None, workspace, "run", TritonSettings(concurrency=[1]), [], Notes())
    triton = stage.run(results, IO, [1], "throughput", None, "cpu")
    assert started == [["onnx-fp32"]]
    assert "served onnx-fp32 instead" in triton.error
    assert [r.variant for r in triton.runs] == ["onnx-fp32"]


def test_an_unexpected_failure_becomes_the_stage_error(stage_world, monkeypatch):
    workspace, results, _ = stage_world

    def broken(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(triton_stage, "image_backends", broken)
    stage = triton_stage.TritonStage(None, workspace, "run", TritonSettings(), [], Notes())
    triton = stage.run(results, IO, [1], "throughput", None, "cpu")
    assert triton.error == "RuntimeError: disk on fire (traceback: triton/stage.log)"
    assert "Traceback" in (workspace.root / "triton" / "stage.log").read_text()


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
