"""Sessions sharing a GPU: they run side by side and take turns at the jobs that time work on it."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np

from orchestrator.run.executor import Executor, Exit, LocalExecutor, Placement
from orchestrator.run.scheduler import Scheduler, Unit
from orchestrator.run.turns import GpuTurns
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import (
    RESULT_FILE,
    TURN_GO,
    TURN_READY,
    TURNS_ENV,
    Job,
    JobInputs,
    JobResult,
    LatencyStats,
    ModelSource,
    ProfileEntry,
    ProfileSettings,
    Rival,
    to_json,
)
from runners.harness.main import wait_for_turn


def test_a_turn_waits_until_no_other_session_runs():
    turns = GpuTurns()
    assert turns.try_enter("a") and turns.try_enter("b")
    assert not turns.ask("a")  # b still compiles
    turns.leave("b")
    assert turns.ask("a") and turns.ask("a")  # asking again while holding it keeps it
    turns.done("a")  # a is back at work: no one holds a turn
    assert turns.try_enter("c")
    assert not turns.ask("c")  # a is at work


def test_turns_go_in_the_order_asked_and_nothing_starts_during_one():
    turns = GpuTurns()
    for session in "abc":
        assert turns.try_enter(session)
    assert not turns.ask("b") and not turns.ask("a")
    assert not turns.ask("c")  # c is last in the queue
    assert turns.ask("b")
    assert not turns.try_enter("d")  # a start would disturb b's timing
    turns.done("b")
    turns.leave("b")
    assert not turns.ask("c") and turns.ask("a")
    turns.leave("a")
    assert turns.ask("c")
    turns.leave("c")  # a session that dies holding the turn gives it back
    assert turns.try_enter("d")


def test_the_runner_waits_for_the_hosts_go(tmp_path):
    started = threading.Event()

    def run():
        wait_for_turn(tmp_path, poll_s=0.001)
        started.set()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while not (tmp_path / TURN_READY).exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert (tmp_path / TURN_READY).exists()
    assert not started.wait(0.2)  # no go, no start
    (tmp_path / TURN_GO).write_text("")
    thread.join(5)
    assert started.is_set()


class TurnTakingProcess:
    """A runner session: its verify job takes `verify_s`; its profile job asks for a turn, then
    records how long it held it and who else ran meanwhile."""

    def __init__(self, workspace, name, jobs, log, verify_s, linger_s=0.0):
        self.workspace, self.name, self.jobs, self.log = workspace, name, jobs, log
        self.started = time.monotonic()
        self.verify_s, self.linger_s = verify_s, linger_s
        self.exit = None
        self.done_at = None

    def poll(self):
        if self.exit:
            if time.monotonic() - self.done_at < self.linger_s:  # its interpreter and CUDA shut down
                return None
            self.log.append(("exited", self.name, time.monotonic()))
            return self.exit
        verify, profile = self.jobs
        if time.monotonic() - self.started < self.verify_s:
            return None
        self.write(verify)
        folder = self.workspace.job_dir(profile.id)
        if not (folder / TURN_READY).exists():
            (folder / TURN_READY).write_text("")
            return None
        if not (folder / TURN_GO).exists():
            return None
        self.log.append(("timing", self.name, time.monotonic()))
        self.write(profile)
        self.exit, self.done_at = Exit(code=0), time.monotonic()
        return None  # exits at the next poll, as a runner does after writing its last result

    def write(self, job):
        path = self.workspace.job_dir(job.id) / RESULT_FILE
        if not path.exists():
            path.write_text(to_json(JobResult(job.id, job.kind, "ok")))

    def stop(self):
        pass

    def output(self):
        return ""


class TurnTakingExecutor(Executor):
    def __init__(self, workspace, verify_s, linger_s=None):
        super().__init__(workspace, timeout_s=60)
        self.log: list[tuple[str, str, float]] = []
        self.environments: dict[str, dict[str, str]] = {}
        self.verify_s = verify_s
        self.linger_s = linger_s or {}

    def start(self, name, image, jobs, placement):
        self.log.append(("start", name, time.monotonic()))
        self.environments[name] = placement.process_environment()
        return TurnTakingProcess(self.workspace, name, jobs, self.log, self.verify_s[name],
                                 self.linger_s.get(name, 0.0))


def session_jobs(tmp_path, name):
    return [Job(id=f"{kind}-{name}", kind=kind, runner="torch", output_dir=str(tmp_path / "ws" / "variants" / name))
            for kind in ("verify", "profile")]


def run_sessions(tmp_path, executor, names, turns):
    """The sessions on one GPU, each in a thread as the scheduler runs them, the first at work before
    the others start; their results."""
    results = {}

    def session(name):
        results.update(executor.run(name, "image", session_jobs(tmp_path, name), lambda r: None,
                                    Placement("0", turns=turns)))

    threads = [threading.Thread(target=session, args=(name,)) for name in names]
    threads[0].start()
    while not executor.log:
        time.sleep(0.01)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_a_session_times_only_once_the_others_on_its_gpu_are_done_compiling(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    executor = TurnTakingExecutor(workspace, {"quick": 0.0, "slow": 0.6})
    turns = GpuTurns()
    results = run_sessions(tmp_path, executor, ["slow", "quick"], turns)
    assert {r.status for r in results.values()} == {"ok"} and len(results) == 4
    events = {(what, name): at for what, name, at in executor.log}
    # quick was ready at once, but timed only after slow's verification (its compile) ended.
    assert events[("timing", "quick")] >= events[("start", "slow")] + 0.6
    assert all(env == {TURNS_ENV: "1"} for env in executor.environments.values())
    # The rerun scripts run alone: they must not wait for a turn.
    assert TURNS_ENV not in Placement("0", turns=turns).environment()


def test_a_session_whose_jobs_all_reported_no_longer_holds_up_the_others_turns(tmp_path):
    """A runner process takes seconds to exit after its last result (the interpreter, CUDA): the
    next session on the GPU times meanwhile."""
    workspace = Workspace(tmp_path / "ws").create()
    executor = TurnTakingExecutor(workspace, {"first": 0.0, "second": 0.3}, linger_s={"first": 1.5})
    results = run_sessions(tmp_path, executor, ["first", "second"], GpuTurns())
    assert {r.status for r in results.values()} == {"ok"} and len(results) == 4
    events = {(what, name): at for what, name, at in executor.log}
    assert events[("timing", "first")] < events[("timing", "second")] < events[("exited", "first")]


def test_units_share_a_gpu_up_to_per_gpu_and_an_exclusive_unit_runs_alone():
    lock = threading.Lock()
    running: dict[str, str] = {}
    most = {"0": 0, "1": 0}
    alone = []

    def unit(name, exclusive=False):
        def run(gpu):
            with lock:
                running[name] = gpu
                on_gpu = [n for n, g in running.items() if g == gpu]
                most[gpu] = max(most[gpu], len(on_gpu))
                if exclusive:
                    alone.append(on_gpu == [name])
            time.sleep(0.1)
            with lock:
                del running[name]
        return Unit(name, run, gpu=True, exclusive=exclusive)

    Scheduler(gpus=["0", "1"], jobs=1, per_gpu=3).run([unit(f"u{i}") for i in range(8)] + [unit("x", exclusive=True)])
    assert most == {"0": 3, "1": 3}
    assert alone == [True]


def test_a_real_runner_profiles_only_in_its_turn(tmp_path):
    """The local executor and a real runner process (the python runner, which needs no framework):
    the profile waits while another session on the GPU is at work, then runs in its turn, measured
    against the rivals the host knew when it gave the turn."""
    workspace = Workspace(tmp_path / "ws").create()
    (tmp_path / "fn.py").write_text("def double(x):\n    return x * 2\n")
    np.savez(tmp_path / "samples.npz", x=np.ones((2, 3), np.float32))
    job = Job(id="profile-fn", kind="profile", runner="python", output_dir=str(workspace.job_dir("profile-fn")),
              inputs=JobInputs(model=str(tmp_path), samples=str(tmp_path / "samples.npz")),
              model=ModelSource(form="function", file="fn.py", factory="double"), format="python",
              batch_sizes=[1], profiling=ProfileSettings(warmup_calls=1, window_ms=1.0, min_window_calls=1,
                                                         stable_windows=1, max_windows=2))
    turns = GpuTurns()
    assert turns.try_enter("compiling")
    results = {}
    known: list[Rival] = []  # what the host knows when it gives the turn, not when the session starts
    placement = Placement(None, turns=turns, rivals=lambda: known)
    executor = LocalExecutor(workspace, 60, sys.executable)
    thread = threading.Thread(target=lambda: results.update(executor.run(
        "profile", "local", [job], lambda r: None, placement)))
    thread.start()
    ready = workspace.job_dir(job.id) / TURN_READY
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the runner never asked for its turn"
    time.sleep(0.3)
    assert not results and not (workspace.job_dir(job.id) / TURN_GO).exists()  # "compiling" is at work
    known.append(Rival("faster", [ProfileEntry(1, LatencyStats(1e-6, 1e-6, 1e-6, 1e-6, 1e-6), 1e9, 3, True)]))
    turns.leave("compiling")
    thread.join(30)
    executor.close()
    assert results[job.id].status == "ok", results[job.id].error
    assert [(e.batch_size, e.beaten_by, e.windows) for e in results[job.id].profile] == [(1, "faster", 1)]
    # The 0.3 s and more it waited for its turn are not the job's time (the timeline shows the timing).
    assert results[job.id].duration_s < 0.3
