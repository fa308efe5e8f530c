"""Warm runners (runners/harness/serve.py, orchestrator/run/executor.py): one runner process serves a
run's CPU sessions one after another, each in a process of its own, and goes once it misbehaves."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from orchestrator.run.executor import LocalExecutor, Mounts, Placement
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import Job, JobInputs, JobResult, ModelSource, ProfileSettings

FUNCTION = """import os, sys, time

def record(x):
    # Which process ran the session, and which one forked it.
    with open(os.environ["PIDS_FILE"], "a") as f:
        f.write(f"{os.getpid()} {os.getppid()} {os.environ.get('OMP_NUM_THREADS', '')}\\n")
    return x * 2

def crash(x):
    os._exit(3)

def hang(x):
    time.sleep(60)
    return x
"""


def function_job(workspace: Workspace, tmp_path: Path, job_id: str, factory: str) -> Job:
    return Job(id=job_id, kind="profile", runner="python", output_dir=str(workspace.job_dir(job_id)),
               inputs=JobInputs(model=str(tmp_path / "model"), samples=str(tmp_path / "samples.npz")),
               model=ModelSource(form="function", file="fn.py", factory=factory), format="python",
               batch_sizes=[1], profiling=ProfileSettings(warmup_calls=1, window_ms=1.0, min_window_calls=1,
                                                          stable_windows=1, max_windows=1))


def run_one(executor: LocalExecutor, workspace: Workspace, tmp_path: Path, job_id: str, factory: str,
            threads: int = 1) -> JobResult:
    """One session of one job that calls the function `factory`; its result."""
    job = function_job(workspace, tmp_path, job_id, factory)
    return executor.run(job_id, "local", [job], lambda result: None, Placement(threads=threads))[job_id]


def setup(tmp_path: Path, monkeypatch, timeout_s: float = 60) -> tuple[Workspace, LocalExecutor]:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "fn.py").write_text(FUNCTION)
    np.savez(tmp_path / "samples.npz", x=np.ones((2, 3), np.float32))
    monkeypatch.setenv("PIDS_FILE", str(tmp_path / "pids"))  # the runner's environment is the host's, here
    workspace = Workspace(tmp_path / "ws").create()
    return workspace, LocalExecutor(workspace, timeout_s, sys.executable)


def test_one_warm_runner_serves_sessions_one_after_another_each_in_a_process_of_its_own(tmp_path, monkeypatch):
    workspace, executor = setup(tmp_path, monkeypatch)
    try:
        first = run_one(executor, workspace, tmp_path, "profile-a", "record", threads=1)
        second = run_one(executor, workspace, tmp_path, "profile-b", "record", threads=2)
        assert first.status == "ok", first.error
        assert second.status == "ok", second.error
        runs = {tuple(line.split()) for line in (tmp_path / "pids").read_text().splitlines()}
        pids = {pid for pid, _, _ in runs}
        parents = {parent for _, parent, _ in runs}
        assert len(pids) == 2 and len(parents) == 1  # two session processes, forked by one runner
        assert {threads for _, _, threads in runs} == {"1", "2"}  # each its own thread share
        assert sorted(p.name for p in workspace.jobs.glob(".warm-*")) == [".warm-1"]
        assert "profile-b: ok" in (workspace.logs / "profile-b.log").read_text()  # the session's own log
        rerun = (workspace.job_dir("profile-b") / "rerun.sh").read_text()
        assert "runners.harness.main" in rerun and "OMP_NUM_THREADS=2" in rerun  # a fresh process, by hand
    finally:
        executor.close()
    assert executor.warm.running == [] and not list(workspace.jobs.glob(".warm-*"))


def test_a_session_that_dies_fails_its_jobs_and_the_runner_serves_the_next(tmp_path, monkeypatch):
    workspace, executor = setup(tmp_path, monkeypatch)
    try:
        crashed = run_one(executor, workspace, tmp_path, "profile-a", "crash")
        assert crashed.status == "failed"
        assert crashed.error.startswith("runner exited with code 3 before writing a result")
        after = run_one(executor, workspace, tmp_path, "profile-b", "record")
        assert after.status == "ok", after.error
        assert sorted(p.name for p in workspace.jobs.glob(".warm-*")) == [".warm-1"]
    finally:
        executor.close()


def test_a_session_past_its_timeout_takes_its_runner_with_it(tmp_path, monkeypatch):
    workspace, executor = setup(tmp_path, monkeypatch, timeout_s=3)
    try:
        hung = run_one(executor, workspace, tmp_path, "profile-a", "hang")
        assert hung.status == "failed"
        assert hung.error.startswith("timed out after 3 s")
        assert executor.warm.running == []  # stopped, with the session's process in its group
        after = run_one(executor, workspace, tmp_path, "profile-b", "record")
        assert after.status == "ok", after.error
        # The first runner went with its queue; a second one served the next session.
        assert sorted(p.name for p in workspace.jobs.glob(".warm-*")) == [".warm-2"]
    finally:
        executor.close()


def test_a_warm_container_serves_only_sessions_whose_folders_it_mounts(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    mounts = Mounts()
    mounts.writable(workspace.job_dir("export-a"))
    mounts.readable(tmp_path)  # the user's model folder, read-only
    assert mounts.holds(workspace.job_dir("export-a") / "job.json", writable=True)
    assert not mounts.holds(workspace.job_dir("export-b"), writable=True)  # under the read-only folder only
    assert mounts.holds(workspace.job_dir("export-b"), writable=False)
    assert not mounts.holds(Path("/elsewhere"), writable=False)



def test_a_later_run_in_the_same_workspace_starts_from_empty_queues(tmp_path, monkeypatch):
    workspace, executor = setup(tmp_path, monkeypatch)
    try:
        assert run_one(executor, workspace, tmp_path, "profile-a", "crash").status == "failed"
    finally:
        executor.close()
    again = LocalExecutor(workspace, 60, sys.executable)  # its first queue has the same name
    try:
        result = run_one(again, workspace, tmp_path, "profile-a", "record")
        assert result.status == "ok", result.error  # not the earlier run's exit, read as this one's
    finally:
        again.close()
