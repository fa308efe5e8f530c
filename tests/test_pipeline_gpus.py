"""The optimize pipeline's orchestration on GPUs, with a fake executor standing in for the runners
(the GPU paths themselves run on GPU hosts: docs/performance.md). What is checked: which sessions
run, on which GPU, with which jobs on which device."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from orchestrator.config import OptimizeConfig
from orchestrator.model_ref import ModelRef
from orchestrator.progress import QuietReporter
from orchestrator.results import Environment, ImageRecord, RunResults
from orchestrator.run.executor import OnResult, Placement
from orchestrator.run.pipeline import Pipeline
from orchestrator.run.recording import Recorder
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import (
    REFERENCE_OUTPUTS,
    GpuInfo,
    IOSpec,
    Job,
    JobResult,
    LatencyStats,
    OutputError,
    ProfileEntry,
    TensorSpec,
    Verification,
)

# Throughput by variant: the compiled fp16 variant wins; fp16 wins among the eager ones.
SPEED = {"torch-compile-cudagraphs-fp16": 900.0, "torchscript-trace-fp16": 500.0}


class FakeRunners:
    """Answers every job as a runner that succeeded would, and records each session."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.sessions: list[tuple[str, str | None, list[tuple[str, str]]]] = []
        self.turns: dict[str, object] = {}  # session -> the turns it takes on its GPU (None: none)
        self.placements: dict[str, Placement] = {}
        self.prewarmed = 0
        self.lock = threading.Lock()

    def expect(self, folders: list, inputs: list, at_once: int) -> None:
        """Warm runners: nothing to start here."""

    def prewarm(self, image: str, count: int) -> None:
        """Warm runners: nothing to start here; how many is recorded."""
        self.prewarmed = count

    def run(self, name: str, image: str, jobs: list[Job], on_result: OnResult,
            placement: Placement) -> dict[str, JobResult]:
        with self.lock:
            self.sessions.append((name, placement.gpu, [(job.id, job.device) for job in jobs]))
            self.turns[name] = placement.turns
            self.placements[name] = placement
        results = {}
        for job in jobs:
            result = self.answer(job, placement)
            results[job.id] = result
            on_result(result)
        return results

    def answer(self, job: Job, placement: Placement) -> JobResult:
        gpu = (GpuInfo("NVIDIA H100 80GB HBM3", f"GPU-{placement.gpu}", "580", "9.0")
               if placement.gpu is not None else None)
        if job.kind == "reference":
            np.savez(self.workspace.reference / REFERENCE_OUTPUTS, y=np.ones((4, 2), np.float32))
            io = IOSpec(inputs=[TensorSpec("x", "float32", [None, 3])], outputs=[TensorSpec("y", "float32", [None, 2])])
            # An NGC image: Torch-TensorRT's variants are built, not skipped.
            return JobResult(job.id, job.kind, "ok", io=io, fingerprint="model", gpu=gpu,
                             versions={"torch_tensorrt": "2.9.0", "tensorrt": "10.13.3.9"},
                             memory_formats=["contiguous"])  # no 4-D convolution weights
        if job.kind in ("export", "convert"):
            return JobResult(job.id, job.kind, "ok", artifact="model")
        if job.kind == "verify":
            return JobResult(job.id, job.kind, "ok", gpu=gpu, verification=Verification(
                True, {"y": OutputError(0.0, 0.0, 1e-3, 1e-3, True)}))
        speed = SPEED.get(job.id.removeprefix("profile-"), 100.0)
        entry = ProfileEntry(4, LatencyStats(1.0, 1.0, 1.0, 1.0, 1.0), speed, 3, True)
        return JobResult(job.id, job.kind, "ok", profile=[entry], gpu=gpu)

    def cancel(self) -> None:
        pass


def optimize_on(tmp_path: Path, gpus: list[str], formats: list[str] | None,
                precisions: list[str] | None = None, gpu_sessions: int = 6,
                runners_type: type[FakeRunners] = FakeRunners, exhaustive: bool = False,
                memory_formats: tuple[str, ...] = ("contiguous",)) -> tuple[FakeRunners, RunResults]:
    model = tmp_path / "model.py"
    model.write_text("def make(): ...\n")
    config = OptimizeConfig(model=ModelRef(path=model, form="factory", factory="make", framework="torch"),
                            workspace=tmp_path / "ws", formats=formats, precisions=precisions,
                            memory_formats=list(memory_formats), batch_sizes=[4], gpus="all", jobs=4,
                            gpu_sessions=gpu_sessions, exhaustive=exhaustive)
    workspace = Workspace(config.workspace).create()
    runners = runners_type(workspace)
    results = RunResults(environment=Environment(nav_orch="0", host_python="3.11"))
    recorder = Recorder(results, ImageRecord(tag="local", id="python"), workspace, QuietReporter(),
                        {g: f"GPU-{g}" for g in gpus})
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=np.zeros((4, 3), np.float32))
    Pipeline(config, workspace, runners, recorder, "inputs", gpus).execute(samples)  # type: ignore[arg-type]
    return runners, results


def test_a_trace_is_exported_on_the_gpu_it_is_checked_on(tmp_path):
    runners, results = optimize_on(tmp_path, ["0"], ["torchscript-trace", "exported-program"], ["fp32", "fp16"])
    sessions = {name: (gpu, jobs) for name, gpu, jobs in runners.sessions}
    # The exported program is exported on the CPUs, the trace in the check session on the GPU.
    assert sessions["export-exported-program-fp32"] == (None, [("export-exported-program-fp32", "cpu")])
    assert not any(name.startswith("export-torchscript-trace") for name in sessions)
    gpu, jobs = sessions["check-torch"]
    assert gpu == "0"
    # Every export and verification comes before the first profile, which waits for a turn.
    assert [job for job, _ in jobs] == [
        "export-torchscript-trace-fp32", "verify-torchscript-trace-fp32", "export-torchscript-trace-fp16",
        "verify-torchscript-trace-fp16", "verify-exported-program-fp32", "verify-exported-program-fp16",
        "profile-torchscript-trace-fp32", "profile-torchscript-trace-fp16", "profile-exported-program-fp32",
        "profile-exported-program-fp16"]
    assert {device for _, device in jobs} == {"cuda"}
    assert {v.name: v.status for v in results.variants} == {
        "torchscript-trace-fp32": "ok", "torchscript-trace-fp16": "ok", "exported-program-fp32": "ok",
        "exported-program-fp16": "ok"}
    assert results.best == "torchscript-trace-fp16"
    assert all(t.on_placed_gpu for t in results.timeline if t.placement != "CPU" and t.kind != "export")


def test_a_torch_tensorrt_program_is_exported_and_compiled_on_the_gpu_it_is_checked_on(tmp_path):
    """A program exported on the CPUs and moved to the GPU takes the fake-tensor path that failed
    torch.compile (variant_loader.place_program): Torch-TensorRT's is exported in its check session."""
    runners, results = optimize_on(tmp_path, ["0"], ["torch-tensorrt", "exported-program"], ["fp16"])
    sessions = {name: (gpu, jobs) for name, gpu, jobs in runners.sessions}
    assert sessions["export-exported-program-fp16"] == (None, [("export-exported-program-fp16", "cpu")])
    assert not any(name.startswith("export-torch-tensorrt") for name in sessions)
    gpu, jobs = sessions["check-torch"]
    assert gpu == "0"
    assert jobs[:3] == [("export-torch-tensorrt-fp16", "cuda"), ("convert-torch-tensorrt-fp16", "cuda"),
                        ("verify-torch-tensorrt-fp16", "cuda")]
    assert {v.name: v.status for v in results.variants} == {"torch-tensorrt-fp16": "ok", "exported-program-fp16": "ok"}


def test_on_two_gpus_the_checks_spread_and_only_the_compiled_fp32_waits_for_the_winner(tmp_path):
    # No precisions given: fp32, fp16 and bf16; the compiled fp32 is built only if fp32 wins.
    runners, results = optimize_on(tmp_path, ["0", "1"], ["torchscript-trace", "torch-compile-cudagraphs"])
    placed = {name: gpu for name, gpu, _ in runners.sessions}
    assert placed["check-torch-1"] is not None and placed["check-torch-2"] is not None
    variants = {v.name: v for v in results.variants}
    assert variants["torch-compile-cudagraphs-fp16"].status == variants["torch-compile-cudagraphs-bf16"].status == "ok"
    assert variants["torch-compile-cudagraphs-fp32"].status == "skipped"
    assert "fp16 was the fastest precision of the other formats" in variants["torch-compile-cudagraphs-fp32"].error
    assert results.best == "torch-compile-cudagraphs-fp16"
    # A compiled variant's session exports it (its options), so its compile starts after the reference.
    compiled = next(jobs for name, _, jobs in runners.sessions if name == "check-torch-compile-cudagraphs-fp16")
    assert compiled == [("export-torch-compile-cudagraphs-fp16", "cuda"), ("verify-torch-compile-cudagraphs-fp16",
                        "cuda"), ("profile-torch-compile-cudagraphs-fp16", "cuda")]
    assert not any(name.startswith("export-torch-compile") for name, _, _ in runners.sessions)
    # The sessions on one GPU take the same turns there (the reference runs before all, alone); each
    # GPU job ran on the GPU it was placed on.
    shared = [(name, gpu) for name, gpu, _ in runners.sessions if name != "reference"]
    for name, gpu in shared:
        others = {runners.turns[other] for other, elsewhere in shared if elsewhere == gpu}
        assert (runners.turns[name] is None) == (gpu is None) and len(others) == 1, name
    assert {t.placement for t in results.timeline} >= {"GPU 0", "GPU 1"}
    assert all(t.on_placed_gpu for t in results.timeline if t.placement != "CPU" and t.kind != "export")


def test_the_default_search_on_a_gpu_leaves_out_what_cannot_win_or_run_and_says_why(tmp_path):
    """No formats given: the uncompiled ExportedProgram is not built beside the trace and the compiled
    format, and ONNX is skipped before its export where the runners' ONNX Runtime has no CUDA execution
    provider (the fake reference reports none)."""
    runners, results = optimize_on(tmp_path, ["0"], None)
    variants = {v.name: v for v in results.variants}
    for precision in ("fp32", "fp16", "bf16"):
        cut = variants[f"exported-program-{precision}"]
        assert cut.status == "skipped"
        assert cut.error == ("not built: on GPUs torchscript-trace and torch-compile-cudagraphs ran faster in every "
                             "model measured (--formats exported-program or --exhaustive builds it)")
    for precision in ("fp32", "fp16"):
        onnx = variants[f"onnx-{precision}"]
        assert onnx.status == "skipped"
        assert onnx.error == ("runs on GPUs only with ONNX Runtime's CUDA execution provider (onnxruntime-gpu), "
                              "which the runners' Python (python) lacks")
    sessions = [name for name, _, _ in runners.sessions]
    assert not [name for name in sessions if name.startswith(("export-exported-program", "export-onnx"))]
    assert sorted(name for name in sessions if name.startswith("export-")) == [
        "export-torchscript-script-bf16", "export-torchscript-script-fp16", "export-torchscript-script-fp32"]
    assert variants["torchscript-trace-fp16"].status == "ok"
    assert results.best == "torch-compile-cudagraphs-fp16"


def test_channels_last_variants_of_a_model_its_reference_found_no_convolutions_in_are_skipped_before_export(tmp_path):
    formats = ["torchscript-script", "torchscript-trace", "torch-compile-cudagraphs"]
    runners, results = optimize_on(tmp_path, ["0"], formats, ["fp16"], memory_formats=("contiguous", "channels_last"))
    variants = {v.name: v for v in results.variants}
    for name in ("torchscript-script-fp16-channels-last", "torchscript-trace-fp16-channels-last",
                 "torch-compile-cudagraphs-fp16-channels-last"):
        assert variants[name].status == "skipped"
        assert variants[name].error == "channels_last changes nothing here: the model has no 4-D convolution weights"
    ran = [job for _, _, jobs in runners.sessions for job, _ in jobs]
    assert not [job for job in ran if job.endswith("channels-last")]  # no export, session or compile spent on them
    assert not [name for name, _, _ in runners.sessions if name.endswith("channels-last")]
    assert {variants[n].status for n in ("torchscript-script-fp16", "torchscript-trace-fp16",
                                         "torch-compile-cudagraphs-fp16")} == {"ok"}


def test_exhaustive_builds_the_uncompiled_program_on_a_gpu(tmp_path):
    runners, results = optimize_on(tmp_path, ["0"], None, ["fp16"], exhaustive=True)
    assert {v.name: v.status for v in results.variants}["exported-program-fp16"] == "ok"


def test_the_warm_runners_started_beside_the_reference_are_the_exports_on_the_cpus_up_to_jobs(tmp_path):
    # The script and the program are exported on the CPUs; the trace and the compiled format in
    # their check sessions, on the GPU.
    for folder in ("two", "many"):
        (tmp_path / folder).mkdir()
    runners, _ = optimize_on(tmp_path / "two", ["0"], ["torchscript-trace", "torchscript-script", "exported-program",
                                                        "torch-compile-cudagraphs"], ["fp16"])
    assert runners.prewarmed == 2
    runners, _ = optimize_on(tmp_path / "many", ["0"], ["torchscript-script", "exported-program"],
                             ["fp32", "fp16", "bf16"])
    assert runners.prewarmed == 4  # --jobs, of six exports


def test_with_one_session_per_gpu_no_turns_are_taken(tmp_path):
    runners, results = optimize_on(tmp_path, ["0"], ["torchscript-trace", "torch-compile-cudagraphs"], ["fp16"],
                                   gpu_sessions=1)
    assert set(runners.turns.values()) == {None}
    assert results.best == "torch-compile-cudagraphs-fp16"


def test_each_turn_tells_the_runner_the_profiles_of_the_variants_verified_by_then(tmp_path):
    runners, results = optimize_on(tmp_path, ["0"], ["torchscript-trace", "torch-compile-cudagraphs"], ["fp16"],
                                   runners_type=OutOfMemory)
    # Asked after the run: every verified, profiled variant; the failed compiled one is none.
    rivals = runners.placements["check-torch"].rivals()
    assert [(r.variant, [e.throughput for e in r.profile]) for r in rivals] == [("torchscript-trace-fp16", [500.0])]
    assert results.best == "torchscript-trace-fp16"


class OutOfMemory(FakeRunners):
    def answer(self, job: Job, placement: Placement) -> JobResult:
        if job.id == "verify-torch-compile-cudagraphs-fp16":
            return JobResult(job.id, job.kind, "failed", error="OutOfMemoryError: CUDA out of memory. "
                             "Tried to allocate 2.00 GiB")
        if job.id == "profile-torch-compile-cudagraphs-fp16":  # as the runner skips a job whose needs failed
            return JobResult(job.id, job.kind, "skipped", error=f"needs {job.needs[0]}, which did not succeed")
        return super().answer(job, placement)


def test_a_variant_out_of_gpu_memory_says_that_sessions_shared_its_gpu(tmp_path):
    _, results = optimize_on(tmp_path, ["0"], ["torchscript-trace", "torch-compile-cudagraphs"], ["fp16"],
                             runners_type=OutOfMemory)
    failed = {v.name: v for v in results.variants}["torch-compile-cudagraphs-fp16"]
    assert failed.status == "failed"
    assert failed.error.startswith("verify: OutOfMemoryError: CUDA out of memory")
    assert "up to 6 sessions shared this GPU: a lower --gpu-sessions" in failed.error
    assert results.best == "torchscript-trace-fp16"


class CloseAndSlow(FakeRunners):
    """Every variant as fast as the others, each call taking `CALL_MS`; records the jobs it was given."""

    CALL_MS = 400.0

    def __init__(self, workspace: Workspace):
        super().__init__(workspace)
        self.jobs: list[Job] = []

    def answer(self, job: Job, placement: Placement) -> JobResult:
        self.jobs.append(job)
        if job.kind == "compare":
            return JobResult(job.id, job.kind, "ok", rounds={c.variant: [self.CALL_MS] * job.profiling.rounds
                                                             for c in job.compared})
        if job.kind != "profile":
            return super().answer(job, placement)
        latency = LatencyStats(*[self.CALL_MS] * 5)
        return JobResult(job.id, job.kind, "ok", profile=[ProfileEntry(4, latency, 10.0, 3, True)])


class CloseAndTooSlow(CloseAndSlow):
    CALL_MS = 1500.0


def test_slow_close_candidates_are_compared_with_fewer_calls_a_round(tmp_path):
    runners, results = optimize_on(tmp_path, ["0"], ["torchscript-trace", "exported-program"], ["fp16"],
                                   runners_type=CloseAndSlow)
    (compare,) = [job for job in runners.jobs if job.kind == "compare"]  # type: ignore[attr-defined]
    # 20 s a candidate (profiling.max_point_s) / (20 rounds x 400 ms): 2 calls a round.
    assert (compare.profiling.rounds, compare.profiling.round_calls) == (20, 2)
    assert results.selection is not None and results.selection.rounds == 20 and results.selection.tie


def test_close_candidates_too_slow_to_time_again_are_left_to_the_single_pass(tmp_path):
    runners, results = optimize_on(tmp_path, ["0"], ["torchscript-trace", "exported-program"], ["fp16"],
                                   runners_type=CloseAndTooSlow)
    assert not [job for job in runners.jobs if job.kind == "compare"]  # type: ignore[attr-defined]
    assert results.selection is not None and results.selection.rounds == 0
    assert ("the close candidates were not timed again (a call of 1,500 ms: 20 rounds would take longer than "
            "profiling.max_point_s, 20 s)") in results.selection.reason
