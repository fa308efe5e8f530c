"""Runner entry point: `python -m runners.harness.main JOB.json [JOB.json ...]`.

Runs the jobs in order in this one process (so a framework is imported once), writes
each job's result next to its job file, and exits 0 whenever every result was written:
a job that failed is a result, not a crash.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import NoReturn, Optional

from runners.contract.protocol import (
    LOG_FILE,
    RESULT_FILE,
    TURN_AFTER_LOADING,
    TURN_GO,
    TURN_KINDS,
    TURN_READY,
    TURN_RIVALS,
    TURNS_ENV,
    Job,
    JobResult,
    Rival,
    from_dict,
    one_line,
    read_job,
    to_json,
    write_text_atomic,
)
from runners.harness.common import Handlers, Skip, base_versions, gpu_info, load_npz
from runners.harness.measure import Timing, compare_result
from runners.serving.variant_loader import CannotLoad


def wait_for_turn(job_dir: Path, poll_s: float = 0.01) -> list[Rival]:
    """Say this job is ready to time, and wait until the host gives it its turn on the GPU (the
    host stops the whole session if it never does); the rivals the host wrote before the turn."""
    (job_dir / TURN_READY).write_text("")
    while not (job_dir / TURN_GO).exists():
        time.sleep(poll_s)
    rivals = job_dir / TURN_RIVALS
    return from_dict(list[Rival], json.loads(rivals.read_text())) if rivals.exists() else []


def runner_module_name(runner: str) -> str:
    return f"runners.toolchains.{runner}_runner"


def runner_module(runner: str) -> ModuleType:
    return importlib.import_module(runner_module_name(runner))


def compare(job: Job, timing: Timing) -> JobResult:
    """A compare job: its candidates (`job.compared`, each a profile job) loaded side by side in this
    one process, each by its own runner's `timed_candidate` (the runners of COMPARING_RUNNERS, which
    share the model's image), then timed interleaved at the job's batch size once it has its turn."""
    (batch_size,) = job.batch_sizes
    samples = load_npz(job.compared[0].inputs.samples)  # the reference's, the same for every candidate
    with ExitStack() as stack:
        calls = {each.variant: runner_module(each.runner).timed_candidate(each, samples, batch_size, stack)
                 for each in job.compared}
        return compare_result(job, calls, timing)


def run_job(job: Job, job_dir: Path, done: dict[str, str], runners: dict[str, Handlers],
            timing: Timing) -> JobResult:
    """Run one job through its runner module and return its result. `runners` holds each runner
    module's handlers for this process (made once: they may share what they loaded, and `timing`).
    Where `timing` takes turns, a job that times work waits for its turn (runners/contract/protocol.py): a
    conversion before it starts, a profile or a comparison once its variants are loaded."""
    unmet = [need for need in job.needs if done.get(need) != "ok"]
    if unmet:
        return JobResult(job.id, job.kind, "skipped", error=f"needs {', '.join(unmet)}, which did not succeed")
    start, waited = time.perf_counter(), timing.waited_s
    if job.kind in TURN_KINDS and job.kind not in TURN_AFTER_LOADING:
        timing.wait_for_turn(job)
    module: Optional[ModuleType]
    try:
        module = runner_module(job.runner)
        if job.kind == "compare":
            result = compare(job, timing)
        else:
            if job.runner not in runners:
                runners[job.runner] = module.handlers(timing)
            result = runners[job.runner][job.kind](job)
    except (Skip, CannotLoad) as reason:  # a variant that cannot load here is skipped, with why
        result = JobResult(job.id, job.kind, "skipped", error=str(reason))
    except Exception as error:  # noqa: BLE001 - every failure of a job becomes its result
        (job_dir / LOG_FILE).write_text(traceback.format_exc())
        result = JobResult(job.id, job.kind, "failed", error=one_line(error))
        module = sys.modules.get(runner_module_name(job.runner))
    result.duration_s = time.perf_counter() - start - (timing.waited_s - waited)  # a turn is not the job's time
    if job.device.startswith("cuda"):
        # The framework's own word on its device, where its runner can give it (`gpu_uuid`), so
        # results.json shows that each job ran on the GPU it was placed on.
        used = getattr(module, "gpu_uuid", None)
        result.gpu = gpu_info(used=used() if used is not None else None)
    result.versions = {**base_versions(with_toolchains=job.kind == "reference", on_gpu=job.device.startswith("cuda")),
                       **(module.versions() if module else {})}
    return result


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m runners.harness.main JOB.json [JOB.json ...]", file=sys.stderr)
        return 2
    done: dict[str, str] = {}
    runners: dict[str, Handlers] = {}
    folders: dict[str, Path] = {}  # job id -> the folder of its job file, where its turn is asked for
    timing = Timing((lambda job: wait_for_turn(folders[job.id])) if os.environ.get(TURNS_ENV) else None)
    for job_path in map(Path, argv):
        job = read_job(job_path)
        folders[job.id] = job_path.parent
        print(f"[nav-orch runner] {job.kind} {job.id}", flush=True)
        result = run_job(job, job_path.parent, done, runners, timing)
        done[job.id] = result.status
        write_text_atomic(job_path.parent / RESULT_FILE, to_json(result))
        print(f"[nav-orch runner] {job.id}: {result.status} {result.error or ''}", flush=True)
    return 0


def leave(code: int) -> NoReturn:
    """End the runner process once its results are written: its exit handlers run (a model's cleanup
    may be one), the interpreter's teardown does not. The host waits for the process to end before
    the steps after its session start, and that teardown (torch's modules, CUDA) took 0.5 s after
    an eager torch session and 1.3 s after an Inductor compile on a 2-core CPU host, against 0.06-0.07 s
    this way (benchmarks/runner_exit.py, docs/performance.md)."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main(sys.argv[1:]))
