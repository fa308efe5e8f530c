"""Evidence of placement: each job's timing records the GPU its runner computed on, and whether
that is the GPU the scheduler placed it on (issue "Several GPUs, measured")."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from orchestrator.progress import QuietReporter
from orchestrator.results import Environment, ImageRecord, RunResults
from orchestrator.run.recording import Recorder
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import GpuInfo, JobResult
from runners.harness.common import gpu_info

ROW = "{index}, NVIDIA H100 80GB HBM3, {uuid}, 580.95.05, 9.0, 1980, 2619, 1980\n"


def recorder(tmp_path: Path) -> Recorder:
    results = RunResults(environment=Environment(nav_orch="0", host_python="3.11"))
    return Recorder(results, ImageRecord(tag="local", id="python"), Workspace(tmp_path).create(), QuietReporter(),
                    {"0": "GPU-aaaa", "2": "GPU-cccc"})


def ran_on(uuid: Optional[str]) -> JobResult:
    gpu = GpuInfo("NVIDIA H100 80GB HBM3", uuid, "580.95.05", "9.0") if uuid else None
    return JobResult("profile-x", "profile", "ok", gpu=gpu, duration_s=1.5)


def test_a_job_on_its_placed_gpu_says_so(tmp_path):
    rec = recorder(tmp_path)
    rec.record_timing(ran_on("GPU-cccc"), "check-torch", "2")
    (timing,) = rec.results.timeline
    assert (timing.placement, timing.gpu_uuid, timing.on_placed_gpu) == ("GPU 2", "GPU-cccc", True)


def test_a_job_on_another_gpu_is_flagged(tmp_path):
    rec = recorder(tmp_path)
    rec.record_timing(ran_on("GPU-aaaa"), "check-torch", "2")
    assert rec.results.timeline[0].on_placed_gpu is False


def test_unknown_evidence_is_no_verdict(tmp_path):
    rec = recorder(tmp_path)
    rec.record_timing(ran_on(None), "check-torch", "2")  # the runner reported no GPU
    rec.record_timing(ran_on("GPU-aaaa"), "build", None)  # placed on the CPUs
    rec.record_timing(ran_on("GPU-bbbb"), "check-torch", "1")  # a GPU the host did not list
    assert [t.on_placed_gpu for t in rec.results.timeline] == [None, None, None]
    assert [t.placement for t in rec.results.timeline] == ["GPU 2", "CPU", "GPU 1"]


class Smi:
    def __init__(self) -> None:
        self.devices: list[str] = []

    def __call__(self, argv: Sequence[str]) -> Optional[str]:
        device = argv[argv.index("-i") + 1]
        self.devices.append(device)
        return ROW.format(index=2, uuid=device)


def test_a_runner_reads_the_gpu_its_framework_used_before_the_visible_one():
    smi = Smi()
    info = gpu_info({"CUDA_VISIBLE_DEVICES": "2"}, smi, used="GPU-cccc")
    assert info is not None and info.uuid == "GPU-cccc"
    gpu_info({"CUDA_VISIBLE_DEVICES": "2"}, smi)
    assert smi.devices == ["GPU-cccc", "2"]
