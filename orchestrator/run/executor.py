"""Executors run a *session* (a list of jobs) in one runner process: in a container
(`DockerExecutor`, the default) or as a subprocess of a given Python (`LocalExecutor`).

Both write the jobs, watch for results while the process runs (to report progress),
bound it in time, and turn a process that died without results into `failed` results
that say why.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, Optional, Protocol

import docker
from docker.models.containers import Container

from orchestrator.containers import engine
from orchestrator.containers.gpus import docker_gpus
from orchestrator.errors import DISK_FULL_TEXT, EnvironmentProblem, is_disk_full
from orchestrator.run import memory_limit, untrusted
from orchestrator.run.runner_output import job_result
from orchestrator.run.turns import GpuTurns
from orchestrator.run.workspace import Workspace
from runners import RUNNERS_DIR
from runners.contract.protocol import (
    JOB_FILE,
    RESULT_FILE,
    SESSION_EXIT,
    SESSION_LOG,
    SESSION_REQUEST,
    TURN_GO,
    TURN_READY,
    TURN_RIVALS,
    TURNS_ENV,
    Job,
    JobResult,
    Rival,
    SessionExit,
    WarmSession,
    from_dict,
    to_json,
)

# How often a session's runner is looked at: its exit, and the results and turn requests it writes. On
# a shared GPU every turn passes through these looks (a profile's ready, its result, the next one's
# ready), so there they are ten times as frequent: at 0.1 s each look waits 50 ms on average, and
# ResNet-50's 26 profiles on an H100 pass about 80 of them (an estimate; the gain is unmeasured).
POLL_S = 0.1
TURN_POLL_S = 0.01

CONTAINER_CODE = "/nav/code"
CONTAINER_CACHE = "/nav/cache"


def cache_environment(cache_dir: str) -> dict[str, str]:
    """Where compilers keep their caches, so a variant compiled to verify it is not
    compiled from scratch again to profile it in another process."""
    return {"TORCHINDUCTOR_CACHE_DIR": f"{cache_dir}/torchinductor", "TRITON_CACHE_DIR": f"{cache_dir}/triton",
            # TensorRT builder timing caches (runners/toolchains/tensorrt_build.py names them per version and GPU).
            "NAV_ORCH_TENSORRT_CACHE": f"{cache_dir}/tensorrt"}

OnResult = Callable[[JobResult], None]


@dataclass(frozen=True)
class Placement:
    """Where a session runs: on one GPU (an index) or none, and with how many CPU threads
    per framework (None: all; sessions that share the CPUs split them, instead of each
    starting a thread per core). `turns`: the GPU is shared with other sessions, and the
    session's timed jobs take turns on it (orchestrator/run/turns.py); with each turn the runner
    is told the `rivals` known then, the profiles its own are measured against."""

    gpu: Optional[str] = None
    threads: Optional[int] = None
    turns: Optional[GpuTurns] = None
    rivals: Callable[[], list[Rival]] = list

    def environment(self) -> dict[str, str]:
        """What the runner process needs, a rerun script's included."""
        return {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)} if self.threads else {}

    def process_environment(self) -> dict[str, str]:
        """`environment`, and what only the session's own process gets: a rerun runs alone and takes no turns."""
        return {**self.environment(), **({TURNS_ENV: "1"} if self.turns is not None else {})}


ANY_PLACEMENT = Placement()  # no GPU, every CPU thread


@dataclass
class Exit:
    code: int
    oom_killed: bool = False
    timed_out: bool = False


class Process(Protocol):
    def poll(self) -> Optional[Exit]: ...
    def stop(self) -> None: ...
    def output(self) -> str: ...


def describe_exit(exit: Exit, timeout_s: float, memory: Optional[int] = None, contained: bool = True) -> str:
    """Why a runner left no result, in one line; `memory` is its limit in bytes, where it has one, and
    `contained` says whether it ran in a container (whose engine says when it ran out of memory)."""
    if exit.timed_out:
        return f"timed out after {timeout_s:.0f} s"
    if exit.oom_killed:
        if memory is None:
            return "out of memory (the runner had no limit: set --memory, or lower --jobs)"
        return f"out of memory at {memory_limit.describe(memory)} (the runner's limit): raise --memory or lower --jobs"
    code = exit.code
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == signal.SIGKILL and not contained:  # no engine to ask; the kernel's OOM killer sends it
            return f"runner died on {name} (out of memory, most likely: lower --jobs)"
        return f"runner died on {name}"
    if code:
        return f"runner exited with code {code} before writing a result"
    return "runner wrote no result"


class Executor:
    """Runs sessions; subclasses say how a runner process is started."""

    contained = True  # in a container, whose engine says when a runner ran out of memory

    def __init__(self, workspace: Workspace, timeout_s: float, memory: Optional[int] = None):
        self.workspace = workspace
        self.timeout_s = timeout_s
        self.memory = memory  # each runner's memory limit in bytes; None: none
        self.cancelled = threading.Event()
        self.warm = WarmRunners(workspace.root)
        # The run's folders a warm runner sees from its start, written and read-only (`expect`).
        self.expected: list[Path] = []
        self.expected_inputs: list[Path] = []
        self.about_image: Sequence[str] = ()  # said in each rerun.sh: a derived image and its requirements

    def expect(self, folders: Sequence[Path], inputs: Sequence[Path], at_once: int) -> None:
        """The folders the run's CPU sessions will write (their jobs' and outputs') and the user's
        inputs they read: a warm runner sees them all from its start, and so can serve any session.
        `at_once`: the CPU sessions that run at a time, and so the idle warm runners worth keeping."""
        self.expected, self.expected_inputs = list(dict.fromkeys(folders)), list(dict.fromkeys(inputs))
        self.warm.keep = at_once

    def prewarm(self, image: str, count: int) -> None:
        """Start warm runners of the image up to `count` (the CPU sessions that run at a time), so
        that they are ready when the sessions come."""
        for _ in range(count - self.warm.count(image)):
            self.warm.release(self.warm.add(self.start_server(image, [])))

    def start(self, name: str, image: str, jobs: list[Job], placement: Placement) -> Process:
        """The runner process of the jobs: a session of a warm runner on the CPU, a fresh process on
        a GPU (whose runner must not inherit another's CUDA, and pays little for its start there)."""
        if placement.gpu is not None:
            return self.start_fresh(name, image, jobs, placement)
        # Any warm runner of the image will do: the session's thread share is its own process's.
        server = (self.warm.take(image, lambda server: self.sees(server, jobs))
                  or self.warm.add(self.start_server(image, jobs)))
        job_files = self.write_jobs(jobs, server.mounts)
        write_rerun_scripts(self.workspace, jobs, partial(server.rerun, placement, jobs), job_files,
                            self.about_image)
        return self.warm.submit(server, job_files, placement.process_environment())

    def write_jobs(self, jobs: list[Job], mounts: Optional[Mounts]) -> list[str]:
        """Each job's job.json, its paths as its runner sees them (in a container: by `mounts`); the
        files' paths, as the runner sees them too."""
        job_files = []
        for job in jobs:
            job_dir = self.workspace.job_dir(job.id)
            write_job(as_seen_inside(job, mounts) if mounts else job, job_dir)
            job_files.append(f"{mounts.writable(job_dir) if mounts else job_dir}/{JOB_FILE}")
        return job_files

    def writes(self, job: Job) -> list[Path]:
        """The folders a job writes: its own and its output's (one where they are the same)."""
        return list(dict.fromkeys([self.workspace.job_dir(job.id), Path(job.output_dir)]))

    def written_and_read(self, jobs: list[Job]) -> tuple[list[Path], list[Path]]:
        """The folders the jobs write, and the inputs they read."""
        written = [folder for job in jobs for folder in self.writes(job)]
        read = [Path(path) for job in jobs for each in (job, *job.compared) for path in each.inputs.paths().values()]
        return written, read

    def sees(self, server: Server, jobs: list[Job]) -> bool:
        """Whether the warm runner sees every folder the jobs write and every input they read."""
        mounts = server.mounts
        written, read = self.written_and_read(jobs)
        return mounts is None or (all(mounts.holds(folder, writable=True) for folder in written)
                                  and all(mounts.holds(path, writable=False) for path in read))

    def start_fresh(self, name: str, image: str, jobs: list[Job], placement: Placement) -> Process:
        """Start one runner process for the jobs."""
        raise NotImplementedError

    def start_server(self, image: str, jobs: list[Job]) -> Server:
        """Start a warm runner of the image that sees the run's expected folders and what the jobs need."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop every running session (Ctrl-C): their jobs end as failed."""
        self.cancelled.set()

    def close(self) -> None:
        """The run is over: stop the warm runners, clear what they may have left in the run's
        folders (links, devices), and take back the expected folders no job used."""
        self.warm.close()
        for folder in self.expected:
            untrusted.sweep(self.workspace.root, folder)
            try:
                os.rmdir(folder)  # only an empty folder, never through a link
            except OSError:
                pass

    def new_queue(self) -> tuple[str, Path]:
        """A warm runner's name and its empty queue folder (an earlier run's, of the same name, goes)."""
        name = f"warm-{self.warm.next_number()}"
        queue = self.workspace.jobs / f".{name}"
        if queue.is_symlink() or (queue.exists() and not queue.is_dir()):
            queue.unlink()
        shutil.rmtree(queue, ignore_errors=True)  # never follows a link inside
        queue.mkdir()
        return name, queue

    def run(self, name: str, image: str, jobs: list[Job], on_result: OnResult,
            placement: Placement = ANY_PLACEMENT) -> dict[str, JobResult]:
        reported: dict[str, JobResult] = {}
        for job in jobs:
            # An earlier run's turn must not start this one.
            for stale in (RESULT_FILE, TURN_READY, TURN_RIVALS, TURN_GO):
                (self.workspace.job_dir(job.id) / stale).unlink(missing_ok=True)
            refused = self.untrusted_input(job)
            if refused is not None:
                reported[job.id] = refused
                on_result(refused)
        runnable = [job for job in jobs if job.id not in reported]
        if runnable:
            self._run_process(name, image, runnable, on_result, placement, reported)
        return reported

    def untrusted_input(self, job: Job) -> Optional[JobResult]:
        """A failed result when an input that an earlier runner wrote does not pass the checks
        (a link, a device, too large); inputs this session writes itself do not exist yet."""
        for path in (Path(path) for each in (job, *job.compared) for path in each.inputs.paths().values()):
            if self.workspace.written_by_runners(path):
                try:
                    untrusted.check_tree(self.workspace.root, path, missing_ok=True)
                except untrusted.UntrustedOutput as error:
                    return JobResult(job.id, job.kind, "failed", error=str(error))
        return None

    def _run_process(self, name: str, image: str, jobs: list[Job], on_result: OnResult, placement: Placement,
                     reported: dict[str, JobResult]) -> None:
        try:
            output = self._run_session(name, image, jobs, on_result, placement, reported)
            failed = [reported[job.id].error or "" for job in jobs if reported[job.id].status == "failed"]
            full = self.workspace.out_of_space([*failed, output] if failed else [])
        except OSError as error:  # the host's own write into the workspace: a result's save, a log, a job file
            if not is_disk_full(error):
                raise
            full = self.workspace.out_of_space([DISK_FULL_TEXT])
        if full is not None:  # every later job would fail alike: the run stops, keeping what finished
            for job in jobs:  # a half-written artifact goes, so that results.json can still be saved
                if job.kind in ("export", "convert") and getattr(reported.get(job.id), "status", "") != "ok":
                    shutil.rmtree(job.output_dir, ignore_errors=True)  # unlinks links, never follows them
            raise full

    def _run_session(self, name: str, image: str, jobs: list[Job], on_result: OnResult, placement: Placement,
                     reported: dict[str, JobResult]) -> str:
        """Run the jobs in one runner process; what it printed."""
        turns = placement.turns
        if turns is not None and not self._wait_to_start(name, turns):
            self._fail_unreported(jobs, reported, on_result, "interrupted")
            return ""
        exit = None
        output = ""
        try:
            process = self.start(name, image, jobs, placement)
            try:
                # Each job gets the timeout from the moment the previous one reported; waiting for a
                # turn on a shared GPU is not the job's time.
                deadline = time.monotonic() + self.timeout_s
                granted: set[str] = set()
                polled = 0.0
                while exit is None:
                    if time.monotonic() - polled >= POLL_S:  # a container's state is a Docker API call
                        exit, polled = process.poll(), time.monotonic()
                    if exit is None and (time.monotonic() > deadline or self.cancelled.is_set()):
                        process.stop()
                        exit = Exit(code=-signal.SIGKILL, timed_out=not self.cancelled.is_set())
                    new = self._report_new(jobs, reported, on_result)
                    if turns is not None:
                        if any(job.id in granted for job in new):  # its timed job is done
                            turns.done(name)
                        if all(job.id in reported for job in jobs):
                            # Its runner only shuts down now (seconds, for torch and CUDA), which does
                            # not disturb another session's timing: the GPU is theirs.
                            turns.leave(name)
                        if exit is None and self._waiting_for_turn(name, jobs, reported, granted, turns,
                                                                   placement.rivals):
                            deadline = time.monotonic() + self.timeout_s
                    if new:
                        deadline = time.monotonic() + self.timeout_s
                    if exit is None:
                        time.sleep(POLL_S if turns is None else TURN_POLL_S)
                output = process.output()
                untrusted.write_text(self.workspace.logs / f"{name}.log", output)
            finally:
                process.stop()
        finally:
            if turns is not None:
                turns.leave(name)
        why = describe_exit(exit, self.timeout_s, self.memory, self.contained)
        self._fail_unreported(jobs, reported, on_result, "interrupted" if self.cancelled.is_set() else why, log=name)
        self._sweep(jobs, reported, on_result)
        return output

    def _wait_to_start(self, name: str, turns: GpuTurns) -> bool:
        """Wait until no session on the GPU is timing (a start would disturb it); False if cancelled."""
        while not turns.try_enter(name):
            if self.cancelled.wait(TURN_POLL_S):
                return False
        return True

    def _waiting_for_turn(self, name: str, jobs: list[Job], reported: dict[str, JobResult], granted: set[str],
                          turns: GpuTurns, rivals: Callable[[], list[Rival]]) -> bool:
        """Give the runner its turn where it asked for one and it is free, the rivals known now written
        before it; True while it still waits. The runner's marker is only looked at, never followed or read."""
        for job in jobs:
            if job.id in reported or job.id in granted:
                continue
            if os.path.lexists(self.workspace.job_dir(job.id) / TURN_READY):
                if not turns.ask(name):
                    return True
                granted.add(job.id)
                try:
                    untrusted.write_text(self.workspace.job_dir(job.id) / TURN_RIVALS,
                                         json.dumps([dataclasses.asdict(rival) for rival in rivals()]))
                    untrusted.write_text(self.workspace.job_dir(job.id) / TURN_GO, "")
                except OSError:
                    pass  # the runner meddled with the marker: its job waits and times out, nothing else
        return False

    def _fail_unreported(self, jobs: list[Job], reported: dict[str, JobResult], on_result: OnResult, reason: str,
                         log: Optional[str] = None) -> None:
        where = f" (log: logs/{log}.log)" if log else ""
        for job in jobs:
            if job.id not in reported:
                result = JobResult(job.id, job.kind, "failed", error=f"{reason}{where}")
                reported[job.id] = result
                on_result(result)

    def _sweep(self, jobs: list[Job], reported: dict[str, JobResult], on_result: OnResult) -> None:
        """Once the session is over, remove what its runner left that is not plain data from the
        folders of its jobs and the shared cache; a job whose folders held such things fails, even if
        it had reported success. A warm runner could also write the run's other folders: what it
        left there fails the job that uses it as an input (`untrusted_input`), and goes at `close`."""
        def folders(job: Job) -> list[Path]:
            return [folder for folder in self.writes(job) if self.workspace.written_by_runners(folder)]

        # Each folder once, though several jobs of the session may write it (an export and a
        # conversion share their variant's folder): what it held fails every one of them.
        found = {folder: untrusted.sweep(self.workspace.root, folder)
                 for folder in dict.fromkeys(folder for job in jobs for folder in folders(job))}
        shared = untrusted.sweep(self.workspace.root, self.workspace.cache)
        for job in jobs:
            problems = shared + [problem for folder in folders(job) for problem in found[folder]]
            if problems and reported[job.id].status == "ok":
                result = JobResult(job.id, job.kind, "failed", error=f"{untrusted.PREFIX}: {'; '.join(problems)}")
                reported[job.id] = result
                on_result(result)

    def _report_new(self, jobs: list[Job], reported: dict[str, JobResult], on_result: OnResult) -> list[Job]:
        """Report results that appeared since the last look; the jobs they belong to."""
        new = []
        for job in jobs:
            if job.id not in reported:
                result = job_result(job, self.workspace)
                if result is not None:
                    reported[job.id] = result
                    on_result(result)
                    new.append(job)
        return new


# --- warm runners -----------------------------------------------------------------------------
# One runner process (runners/harness/serve.py) serves a run's CPU sessions one after another, each in
# a child it forks, so that a small model's run does not pay a container's start and its framework's
# import in every session. Any warm runner of a session's image serves it (the thread share is the
# session process's own), but in a container it sees only the folders it was started with: a session
# it cannot see gets another runner. The session's process is what a fresh runner would be; its exit
# and log come back through files in the runner's queue folder, read as untrusted like all runner output.

WARM_LOG_MAX_BYTES = 64 << 20  # what is kept of a warm session's log: its end


@dataclass
class Server:
    """A warm runner process: its queue folder on the host, and what it sees."""

    image: str  # its image (with the local executor: its Python)
    process: Process
    queue: Path
    # The command line that reruns a session's jobs (their files) by hand in this runner's environment (rerun.sh).
    rerun: Callable[[Placement, list[Job], list[str]], list[str]]
    mounts: Optional[Mounts] = None  # in a container: what it sees, fixed at its start; else host paths
    sessions: int = 0


class WarmRunners:
    """The idle warm runners of one executor. A session takes one that fits, or the executor starts
    one for it; it comes back when its session ended cleanly, and is stopped otherwise."""

    def __init__(self, root: Path):
        self.root = root  # the workspace root: every queue folder lies under it
        self.lock = threading.Lock()
        self.idle: list[Server] = []
        self.running: list[Server] = []
        self.started = 0
        self.keep = 2  # idle runners of one image worth keeping (Executor.expect)

    def next_number(self) -> int:
        with self.lock:
            self.started += 1
            return self.started

    def count(self, image: str) -> int:
        with self.lock:
            return sum(server.image == image for server in self.running)

    def take(self, image: str, fits: Callable[[Server], bool]) -> Optional[Server]:
        with self.lock:
            for server in list(self.idle):
                if server.process.poll() is not None:  # it stopped while idle (its idle timeout)
                    self.idle.remove(server)
                    self.running.remove(server)
                elif server.image == image and fits(server):
                    self.idle.remove(server)
                    return server
        return None

    def add(self, server: Server) -> Server:
        with self.lock:
            self.running.append(server)
        return server

    def submit(self, server: Server, job_files: list[str], environment: dict[str, str]) -> WarmProcess:
        number = server.sessions
        server.sessions += 1
        request = server.queue / SESSION_REQUEST.format(number)
        pending = request.with_name(f".{request.name}.tmp")
        untrusted.write_text(pending, to_json(WarmSession(jobs=job_files, environment=environment)))
        os.replace(pending, request)  # the runner never reads half a request
        return WarmProcess(self, server, number)

    def release(self, server: Server) -> None:
        """Keep the runner for a later session, unless as many of its image idle already."""
        with self.lock:
            if sum(other.image == server.image for other in self.idle) < self.keep:
                self.idle.append(server)
                return
        self.discard(server)

    def discard(self, server: Server) -> None:
        server.process.stop()
        shutil.rmtree(server.queue, ignore_errors=True)  # the host read what it needed from it
        with self.lock:
            if server in self.running:
                self.running.remove(server)

    def close(self) -> None:
        """Stop every warm runner (the run is over, or stopping)."""
        with self.lock:
            servers, self.running, self.idle = self.running, [], []
        for server in servers:
            server.process.stop()
            shutil.rmtree(server.queue, ignore_errors=True)


class WarmProcess:
    """One session in a warm runner, seen as the runner process of that session."""

    def __init__(self, pool: WarmRunners, server: Server, number: int):
        self.pool = pool
        self.server = server
        self.number = number
        self.exit: Optional[Exit] = None
        self.server_exited = False
        self.log = ""

    def poll(self) -> Optional[Exit]:
        if self.exit is not None:
            return self.exit
        path = self.server.queue / SESSION_EXIT.format(self.number)
        if os.path.lexists(path):
            try:
                ended = from_dict(SessionExit, json.loads(untrusted.read_bytes(self.pool.root, path, 4096)))
            except (untrusted.UntrustedOutput, ValueError) as error:
                ended = SessionExit(code=1)
                self.log = f"[nav-orch] the warm runner's exit record is unusable: {error}\n"
            self.exit = Exit(code=ended.code, oom_killed=ended.oom_killed)
            return self.exit
        exited = self.server.process.poll()
        if exited is not None:  # the runner itself died (killed, out of memory): the session with it
            self.exit, self.server_exited = exited, True
        return self.exit

    def stop(self) -> None:
        """Give the runner back once its session ended cleanly; otherwise (a timeout, a cancel, a
        crash of the runner itself) stop it: the session's process goes with it."""
        if self.exit is None or self.server_exited:
            self.read_log()
            self.pool.discard(self.server)
        else:
            self.pool.release(self.server)

    def read_log(self) -> str:
        if not self.log:
            path = self.server.queue / SESSION_LOG.format(self.number)
            try:
                with untrusted.open_file(self.pool.root, path, untrusted.ARTIFACT_MAX_BYTES) as log:
                    log.seek(max(0, os.fstat(log.fileno()).st_size - WARM_LOG_MAX_BYTES))
                    self.log = log.read().decode(errors="replace")
            except FileNotFoundError:
                self.log = ""
            except untrusted.UntrustedOutput as error:
                self.log = f"[nav-orch] {error}\n"
            if self.server_exited:
                self.log += self.server.process.output()
        return self.log

    def output(self) -> str:
        return self.read_log()


RERUN_FILE = "rerun.sh"
RUNNER_COMMAND = ["python", "-m", "runners.harness.main"]  # then the session's job files


def write_rerun_scripts(workspace: Workspace, jobs: list[Job], command: Callable[[list[str]], list[str]],
                        job_files: list[str], about: Sequence[str] = ()) -> None:
    """Each job's folder gets the exact command that reruns it without nav-orch, with the jobs before
    it in its session (those it needs), so a failure can be debugged in the same container. `about`:
    comment lines on what runs it (a derived image and its requirements)."""
    for index, job in enumerate(jobs):
        untrusted.write_text(workspace.job_dir(job.id) / RERUN_FILE,
                             "#!/bin/sh\n"
                             "# Reruns this job (after the ones before it in its session) without nav-orch;\n"
                             "# it rewrites this job's result in the workspace.\n"
                             + "".join(f"# {line}\n" for line in about)
                             + shlex.join(command(job_files[:index + 1])) + "\n")


def as_seen_inside(job: Job, mounts: Mounts) -> Job:
    """`job` with its paths as its container sees them (a compare job's candidates' too)."""
    return dataclasses.replace(
        job,
        output_dir=mounts.writable(Path(job.output_dir)),
        inputs=dataclasses.replace(job.inputs, **{role: mounts.readable(Path(path))
                                                  for role, path in job.inputs.paths().items()}),
        compared=[as_seen_inside(each, mounts) for each in job.compared],
    )


def write_job(job: Job, job_dir: Path) -> Path:
    path = job_dir / JOB_FILE
    untrusted.write_text(path, json.dumps(dataclasses.asdict(job), indent=2))
    return path


class Mounts:
    """Maps host paths to container paths: writable folders first, then read-only
    inputs, each reusing a mount that already holds it (an export's output is the next
    job's input, and does not exist yet when the container starts).

    Paths are taken as given, never resolved: the user's inputs were resolved once, up front,
    and a path inside a runner-writable folder was checked to hold no link (`untrusted`), so
    no mount can be steered to a host file by what a runner left behind."""

    def __init__(self) -> None:
        self.mounts: list[engine.Mount] = []

    def holding(self, path: Path) -> Optional[engine.Mount]:
        """The mount that holds the path (the first that does), if any."""
        return next((mount for mount in self.mounts if path == mount.source or mount.source in path.parents), None)

    def _find(self, path: Path) -> Optional[str]:
        mount = self.holding(path)
        if mount is None:
            return None
        return mount.target if path == mount.source else mount.target + "/" + str(path.relative_to(mount.source))

    def holds(self, path: Path, writable: bool) -> bool:
        """Whether a mount already holds the path (a writable one, where it must be written)."""
        mount = self.holding(path)
        return mount is not None and not (writable and mount.read_only)

    def add(self, source: Path, target: str, read_only: bool) -> str:
        if not source.is_absolute():
            raise ValueError(f"mount sources are absolute paths, not {source}")
        self.mounts.append(engine.Mount(source=source, target=target, read_only=read_only))
        return target

    def writable(self, folder: Path) -> str:
        return self._find(folder) or self.add(folder, f"/nav/io/{len(self.mounts)}", read_only=False)

    def readable(self, path: Path) -> str:
        found = self._find(path)
        if found:
            return found
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return self.add(path, f"/nav/io/{len(self.mounts)}", read_only=True)
        return self.add(path, f"/nav/io/{len(self.mounts)}/{path.name}", read_only=True)


class ContainerProcess:
    def __init__(self, container: Container):
        self.container = container
        self.logs = ""

    def poll(self) -> Optional[Exit]:
        state = engine.exit_state(self.container)
        return None if state is None else Exit(code=state.code, oom_killed=state.oom_killed)

    def stop(self) -> None:
        if not self.logs:
            self.logs = engine.container_logs(self.container)
        engine.remove_container(self.container)

    def output(self) -> str:
        return self.logs or engine.container_logs(self.container)


class DockerExecutor(Executor):
    """Sessions run in sandboxed, labelled containers of the run: a CPU session in a warm one, a GPU
    session in a fresh one."""

    def __init__(self, workspace: Workspace, timeout_s: float, client: docker.DockerClient, run_id: str,
                 memory: Optional[int], pids: int, gpus: str, about_image: Sequence[str] = ()):
        super().__init__(workspace, timeout_s, memory)
        self.about_image = about_image  # said in each rerun.sh: a derived image and its requirements
        self.client = client
        self.gpus = gpus  # the user's --gpus: its capabilities, driver and options go to every container
        self.run_id = run_id
        self.pids = pids

    def start_fresh(self, name: str, image: str, jobs: list[Job], placement: Placement) -> Process:
        mounts = self.mounts_for(jobs)
        job_files = self.write_jobs(jobs, mounts)
        spec = self.spec(name, image, mounts, RUNNER_COMMAND, placement)
        write_rerun_scripts(self.workspace, jobs, partial(self.rerun, spec, mounts, placement, jobs), job_files,
                            self.about_image)
        own = dataclasses.replace(spec, command=[*RUNNER_COMMAND, *job_files],
                                  environment={**spec.environment, **placement.process_environment()})
        return ContainerProcess(engine.start_container(self.client, own))

    def start_server(self, image: str, jobs: list[Job]) -> Server:
        name, queue = self.new_queue()
        mounts = self.mounts_for(jobs, [queue, *self.expected], self.expected_inputs)
        spec = self.spec(name, image, mounts, ["python", "-m", "runners.harness.serve", mounts.writable(queue),
                                               "--preload"], ANY_PLACEMENT)
        container = engine.start_container(self.client, spec)
        return Server(image, ContainerProcess(container), queue, partial(self.rerun, spec, mounts), mounts)

    def mounts_for(self, jobs: list[Job], writable: Sequence[Path] = (), readable: Sequence[Path] = ()) -> Mounts:
        """The code, the cache, the `writable` folders and each job's folders, then the `readable`
        ones and the jobs' inputs (those not under a folder mounted before)."""
        mounts = Mounts()
        mounts.add(RUNNERS_DIR, f"{CONTAINER_CODE}/runners", read_only=True)
        mounts.add(self.workspace.cache, CONTAINER_CACHE, read_only=False)
        written, read = self.written_and_read(jobs)
        for folder in [*writable, *written]:
            mounts.writable(folder)
        for path in [*readable, *read]:
            mounts.readable(path)
        return mounts

    def spec(self, name: str, image: str, mounts: Mounts, command: list[str], placement: Placement
             ) -> engine.ContainerSpec:
        return engine.ContainerSpec(
            image=image,
            command=command,
            mounts=mounts.mounts,
            labels={engine.RUN_LABEL: self.run_id, engine.ROLE_LABEL: f"runner:{name}"},
            environment={"PYTHONPATH": CONTAINER_CODE, "PYTHONUNBUFFERED": "1", **cache_environment(CONTAINER_CACHE),
                         **placement.environment()},
            gpus=docker_gpus(self.gpus, [placement.gpu] if placement.gpu is not None else []),
            memory=memory_limit.docker_memory(self.memory),
            pids=self.pids,
        )

    def rerun(self, spec: engine.ContainerSpec, mounts: Mounts, placement: Placement, jobs: list[Job],
              job_files: list[str]) -> list[str]:
        """The `docker run` that reruns the jobs by hand, in the runner's sandbox and at its paths, with
        only what they read and write mounted (a warm runner mounts all of the run's folders, and the
        run takes back those it left empty)."""
        written, read = self.written_and_read(jobs)
        held = [mounts.holding(path) for path in [*written, *read]]
        kept = [mount for mount in spec.mounts if mount.source in (RUNNERS_DIR, self.workspace.cache) or mount in held]
        return engine.docker_run_command(dataclasses.replace(
            spec, mounts=kept, command=[*RUNNER_COMMAND, *job_files],
            environment={**spec.environment, **placement.environment()}))


class SubprocessProcess:
    def __init__(self, popen: subprocess.Popen, log: BinaryIO):
        self.popen = popen
        self.log = log  # the host's own handle: the log is read back through it, never by name

    def poll(self) -> Optional[Exit]:
        code = self.popen.poll()
        return None if code is None else Exit(code=code)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


# What the reference job's runner imports, per framework: a local Python must have these.
RUNNER_IMPORTS = {"torch": ["numpy", "torch"], "onnx": ["numpy", "onnxruntime", "onnx"],
                  "tensorflow": ["numpy", "tensorflow"], "jax": ["numpy", "jax", "tensorflow"]}
_PROBE = """
import hashlib, importlib.metadata, importlib.util, json, sys
packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
print(json.dumps({"missing": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None],
                  "packages": hashlib.sha256(("\\n".join([sys.version, *packages])).encode()).hexdigest()}))
"""


@dataclass
class PythonProbe:
    packages: str  # a digest of the Python's version and every installed distribution's version


def probe_python(python: str, framework: str) -> PythonProbe:
    """Check up front that the local executor's Python has what the framework's runner imports;
    its packages' digest joins the cache keys, so an upgraded environment never meets old results."""
    needed = RUNNER_IMPORTS[framework]
    fix = ("make one with the runners' packages: `python scripts/runners_venv.py DIR`, then pass "
           "--python DIR/bin/python")
    try:
        probe = subprocess.run([python, "-c", _PROBE, *needed], capture_output=True, text=True, timeout=120)
        found = json.loads(probe.stdout) if probe.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise EnvironmentProblem(f"--python {python} cannot be run ({error}): {fix}") from None
    if found is None:
        raise EnvironmentProblem(f"--python {python} failed: {probe.stderr.strip()[-200:]}: {fix}")
    if found["missing"]:
        raise EnvironmentProblem(f"--python {python} cannot import {', '.join(found['missing'])}, which the "
                                 f"{framework} runner needs: {fix}")
    return PythonProbe(packages=found["packages"])


class LocalExecutor(Executor):
    """Runs the runners as subprocesses of `python` (for hosts without Docker)."""

    contained = False

    def __init__(self, workspace: Workspace, timeout_s: float, python: str = sys.executable):
        super().__init__(workspace, timeout_s)
        self.python = python

    def start_fresh(self, name: str, image: str, jobs: list[Job], placement: Placement) -> Process:
        job_files = self.write_jobs(jobs, None)
        write_rerun_scripts(self.workspace, jobs, partial(self.rerun, placement, jobs), job_files)
        return self.spawn(name, [*RUNNER_COMMAND[1:], *job_files], placement)

    def start_server(self, image: str, jobs: list[Job]) -> Server:
        name, queue = self.new_queue()
        process = self.spawn(name, ["-m", "runners.harness.serve", str(queue), "--preload"], ANY_PLACEMENT)
        return Server(image, process, queue, self.rerun)

    def own_environment(self, placement: Placement) -> dict[str, str]:
        return {"PYTHONPATH": str(RUNNERS_DIR.parent), "PYTHONUNBUFFERED": "1",
                **cache_environment(str(self.workspace.cache)), **placement.environment(),
                # A session without a GPU must not see one: the scheduler gave it none. The index is
                # nvidia-smi's, which counts in PCI bus order; CUDA's own default order is another.
                "CUDA_VISIBLE_DEVICES": placement.gpu if placement.gpu is not None else "",
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

    def rerun(self, placement: Placement, jobs: list[Job], job_files: list[str]) -> list[str]:
        own = self.own_environment(placement)
        return ["env", *(f"{name}={value}" for name, value in own.items()), self.python, *RUNNER_COMMAND[1:],
                *job_files]

    def spawn(self, name: str, arguments: list[str], placement: Placement) -> SubprocessProcess:
        """`python ARGUMENTS` in the runners' environment, logging into logs/NAME.log."""
        environment = {**os.environ, **self.own_environment(placement), **placement.process_environment()}
        # Written live (users can follow it); read back through this handle, never by name.
        log = untrusted.create(self.workspace.logs / f"{name}.log")
        popen = subprocess.Popen(
            [self.python, *arguments],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,  # so a timeout can kill the runner's whole group
        )
        return SubprocessProcess(popen, log)
