"""Under resource pressure, without containers: each runner's default memory limit, an out-of-memory
runner named with its limit, a full disk stopping the run as an environment problem, and a batch size
that runs out of (GPU) memory costing its point, not the variant."""
import signal

import numpy as np
import pytest
from conftest import ROOT, nav_orch
from pydantic import ValidationError
from test_executor import FakeExecutor, jobs
from test_measure import RowModel, verify_job

from orchestrator.config import OptimizeConfig
from orchestrator.errors import DiskFull, ExitCode
from orchestrator.model_ref import ModelRef
from orchestrator.results import Environment, RunResults, VariantResult
from orchestrator.run import memory_limit
from orchestrator.run.executor import Exit, describe_exit
from orchestrator.run.memory_limit import GIB, MIB
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import Job, JobResult, ProfileGap, ProfileSettings
from runners.harness.measure import Timing, profile_result, verification_result, verify_at_batch_sizes

EXAMPLES = ROOT / "examples"
FAST = ProfileSettings(warmup_calls=1, window_ms=1, min_window_calls=2, stable_windows=2, max_windows=3)


def config(**values) -> OptimizeConfig:
    return OptimizeConfig(model=ModelRef(path="model.onnx", form="onnx"), workspace=".", **values)


@pytest.mark.parametrize("given, kept", [(None, "none"), ("auto", "auto"), ("NONE", "none"), ("512m", "512m"),
                                         (" 8G ", "8g"), ("1073741824", "1073741824")])
def test_memory_takes_auto_none_or_a_docker_size(given, kept):
    assert config().memory == "auto"  # a limit unless the user says none
    assert config(memory=given).memory == kept


@pytest.mark.parametrize("given", ["8x", "lots", "1m", "-1g", "1.5g", ""])
def test_a_bad_memory_limit_names_what_is_accepted(given):
    with pytest.raises(ValidationError, match="is not a memory limit; give a size as Docker reads it"):
        config(memory=given)


def test_the_cli_refuses_a_bad_memory_limit_before_any_container():
    run = nav_orch("optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32", "--memory", "8x")
    assert run.returncode == ExitCode.BAD_INPUT, run.stderr
    assert run.stderr.count("\n") == 1 and "'8x' is not a memory limit" in run.stderr, run.stderr


def test_the_default_shares_the_host_less_a_reserve_among_the_runners_at_once():
    at_once = memory_limit.runners_at_once(cpu_sessions=2, gpus=0, sessions_per_gpu=6)
    assert at_once == 2
    # 16 GiB: 2 GiB of it stay the host's (a tenth is less), the rest is halved; 24 GiB: a tenth stays.
    assert memory_limit.runner_limit("auto", 16 * GIB, at_once) == 7 * GIB
    assert memory_limit.runner_limit("auto", 24 * GIB, at_once) == int(24 * GIB * 0.9) // 2 // MIB * MIB
    # 128 GiB with 16 CPU sessions beside 6 on one GPU: 12.8 GiB stay, 115.2 GiB shared 22 ways (whole MiB).
    share = memory_limit.runner_limit("auto", 128 * GIB, memory_limit.runners_at_once(16, 1, 6))
    assert share == int(128 * GIB * 0.9) // 22 // MIB * MIB
    assert memory_limit.runner_limit("auto", 4 * GIB, 16) == memory_limit.FLOOR  # never below a framework's need
    assert memory_limit.runner_limit("512m", 24 * GIB, at_once) == 512 * MIB  # the user's own, as given
    assert memory_limit.runner_limit("none", 24 * GIB, at_once) is None
    assert memory_limit.docker_memory(11 * GIB) == "11264m" and memory_limit.docker_memory(None) is None
    assert memory_limit.describe(512 * MIB) == "512 MiB" and memory_limit.describe(11 * GIB) == "11.0 GiB"


def test_out_of_memory_names_the_limit_and_what_to_do():
    killed = Exit(code=137, oom_killed=True)
    assert describe_exit(killed, 30, 512 * MIB) == ("out of memory at 512 MiB (the runner's limit): raise --memory "
                                                    "or lower --jobs")
    assert describe_exit(killed, 30, None) == "out of memory (the runner had no limit: set --memory, or lower --jobs)"
    # A local runner has no engine to ask: a SIGKILL that nav-orch did not send is most likely the OOM killer.
    assert describe_exit(Exit(code=-signal.SIGKILL), 30, contained=False) == (
        "runner died on SIGKILL (out of memory, most likely: lower --jobs)")
    assert describe_exit(Exit(code=-signal.SIGKILL), 30) == "runner died on SIGKILL"


def test_a_runner_that_found_the_disk_full_stops_the_run_as_an_environment_problem(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    full = JobResult("j0", "verify", "failed", error="OSError: [Errno 28] No space left on device: 'model.onnx'")
    with pytest.raises(DiskFull, match=f"no space left on the filesystem of {workspace.root} .* MiB free") as raised:
        FakeExecutor(workspace, [full], code=1).run("session", "image", jobs(tmp_path), lambda result: None)
    assert raised.value.exit_code == ExitCode.ENVIRONMENT
    assert "rerun the same command to finish only what is missing" in str(raised.value)
    # Any other failure is the job's alone.
    other = JobResult("j0", "verify", "failed", error="RuntimeError: shapes differ")
    results = FakeExecutor(workspace, [other], code=1).run("session", "image", jobs(tmp_path), lambda result: None)
    assert results["j0"].status == results["j1"].status == "failed"


class OutOfMemoryAt:
    """A call that raises as torch does once a batch is larger than the device holds."""

    def __init__(self, limit: int, error: type = RuntimeError, text: str = "CUDA out of memory. Tried to allocate"):
        self.limit, self.error, self.text = limit, error, text

    def __call__(self, batch_size: int):
        def call():
            if batch_size > self.limit:
                raise self.error(self.text)
        return call


def profile_job(batch_sizes: list[int]) -> Job:
    return Job("profile-v", "profile", "torch", "/tmp", variant="v", batch_sizes=batch_sizes, profiling=FAST)


def test_a_batch_size_out_of_memory_costs_its_point_and_the_larger_ones_not_the_variant():
    result = profile_result(profile_job([1, 8, 64, 256]), OutOfMemoryAt(8), Timing())
    assert result.status == "ok" and [entry.batch_size for entry in result.profile] == [1, 8]
    assert [gap.batch_size for gap in result.gaps] == [64, 256]
    assert all("out of memory" in gap.reason for gap in result.gaps)
    # Other frameworks' words for it count too.
    tf = profile_result(profile_job([1, 2]), OutOfMemoryAt(1, MemoryError, "OOM when allocating tensor"), Timing())
    assert [entry.batch_size for entry in tf.profile] == [1] and [gap.batch_size for gap in tf.gaps] == [2]


def test_only_a_variant_that_runs_no_batch_or_fails_otherwise_fails():
    with pytest.raises(RuntimeError, match="out of memory"):
        profile_result(profile_job([4, 8]), OutOfMemoryAt(2), Timing())
    with pytest.raises(ValueError, match="bad shape"):
        profile_result(profile_job([1, 8]), OutOfMemoryAt(1, ValueError, "bad shape"), Timing())


def test_a_verification_batch_out_of_memory_leaves_that_size_out_and_keeps_the_smaller_ones():
    samples = {"x": np.arange(10, dtype=np.float64).reshape(5, 2)}
    reference = RowModel()(samples)
    model = RowModel()

    def limited(inputs):
        if inputs["x"].shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(inputs)

    job = verify_job([2, 5, 8])
    verification = verify_at_batch_sizes(limited, samples, reference, job)
    assert verification.passed and verification.batch_sizes == [2]
    result = verification_result(job, verification)
    assert result.status == "ok" and [gap.batch_size for gap in result.gaps] == [5, 8]


def test_the_host_keeps_no_point_at_a_batch_size_its_verification_left_out(tmp_path):
    from orchestrator.progress import QuietReporter
    from orchestrator.results import ImageRecord
    from orchestrator.run.planning import Variant
    from orchestrator.run.recording import Recorder

    workspace = Workspace(tmp_path / "ws").create()
    results = RunResults(model="m", environment=Environment(nav_orch="0", host_python="3"))
    recorder = Recorder(results, ImageRecord(tag="t", id="i"), workspace, QuietReporter(), {})
    variant = Variant(name="onnx-fp32", format="onnx", precision="fp32")
    recorder.queue([variant])
    gap = ProfileGap(8, "out of memory at this batch size or a smaller one")
    recorder.on_result(variant, JobResult("verify", "verify", "ok", gaps=[gap]))
    points = profile_result(profile_job([1, 8]), OutOfMemoryAt(64), Timing()).profile
    recorder.on_result(variant, JobResult("profile", "profile", "ok", profile=points))
    recorded: VariantResult = recorder.variants[variant.name]
    assert [point.batch_size for point in recorded.profile] == [1] and recorded.gaps == [gap]
    assert recorded.status == "ok"
