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
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import docker
from pydantic import ValidationError

from orchestrator import docker_engine
from orchestrator.errors import BadInput
from orchestrator.models import JOB_RESULT
from orchestrator.workspace import Workspace
from runners.protocol import JOB_FILE, RESULT_FILE, Job, JobResult

RUNNERS_DIR = Path(__file__).resolve().parent.parent / "runners"
CONTAINER_CODE = "/nav/code"
CONTAINER_CACHE = "/nav/cache"


def cache_environment(cache_dir: str) -> dict[str, str]:
    """Where compilers keep their caches, so a variant compiled to verify it is not
    compiled from scratch again to profile it in another process."""
    return {"TORCHINDUCTOR_CACHE_DIR": f"{cache_dir}/torchinductor", "TRITON_CACHE_DIR": f"{cache_dir}/triton",
            # TensorRT builder timing caches (runners/tensorrt_plan.py names them per version and GPU).
            "NAV_ORCH_TENSORRT_CACHE": f"{cache_dir}/tensorrt"}

OnResult = Callable[[JobResult], None]


@dataclass
class Placement:
    """Where a session runs: on one GPU (an index) or none, and with how many CPU threads
    per framework (None: all; sessions that share the CPUs split them, instead of each
    starting a thread per core)."""

    gpu: Optional[str] = None
    threads: Optional[int] = None

    def environment(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)} if self.threads else {}


@dataclass
class Exit:
    code: int
    oom_killed: bool = False
    timed_out: bool = False


class Process(Protocol):
    def poll(self) -> Optional[Exit]: ...
    def stop(self) -> None: ...
    def output(self) -> str: ...


def describe_exit(exit: Exit, timeout_s: float) -> str:
    """Why a runner left no result, in one line."""
    if exit.timed_out:
        return f"timed out after {timeout_s:.0f} s"
    if exit.oom_killed:
        return "killed: out of memory"
    code = exit.code
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"runner died on {name}"
    if code:
        return f"runner exited with code {code} before writing a result"
    return "runner wrote no result"


def read_result(job: Job, job_dir: Path) -> Optional[JobResult]:
    path = job_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        return JOB_RESULT.validate_json(path.read_text())
    except ValidationError as error:
        return JobResult(job.id, job.kind, "failed", error=f"invalid result from the runner: {error.errors()[0]['msg']}")


class Executor:
    """Runs sessions; subclasses say how a runner process is started."""

    def __init__(self, workspace: Workspace, timeout_s: float):
        self.workspace = workspace
        self.timeout_s = timeout_s
        self.cancelled = threading.Event()

    def start(self, name: str, image: str, jobs: list[Job], placement: Placement) -> Process:
        """Start one runner process for the jobs."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop every running session (Ctrl-C): their jobs end as failed."""
        self.cancelled.set()

    def run(self, name: str, image: str, jobs: list[Job], on_result: OnResult,
            placement: Placement = Placement()) -> dict[str, JobResult]:
        for job in jobs:
            (self.workspace.job_dir(job.id) / RESULT_FILE).unlink(missing_ok=True)
        process = self.start(name, image, jobs, placement)
        reported: dict[str, JobResult] = {}
        exit = None
        try:
            # Each job gets the timeout from the moment the previous one reported.
            deadline = time.monotonic() + self.timeout_s
            while exit is None:
                exit = process.poll()
                if exit is None and (time.monotonic() > deadline or self.cancelled.is_set()):
                    process.stop()
                    exit = Exit(code=-signal.SIGKILL, timed_out=not self.cancelled.is_set())
                if self._report_new(jobs, reported, on_result):
                    deadline = time.monotonic() + self.timeout_s
                if exit is None:
                    time.sleep(0.1)
            (self.workspace.logs / f"{name}.log").write_text(process.output())
        finally:
            process.stop()
        reason = "interrupted" if self.cancelled.is_set() else describe_exit(exit, self.timeout_s)
        for job in jobs:
            if job.id not in reported:
                result = JobResult(job.id, job.kind, "failed", error=f"{reason} (log: logs/{name}.log)")
                reported[job.id] = result
                on_result(result)
        return reported

    def _report_new(self, jobs: list[Job], reported: dict[str, JobResult], on_result: OnResult) -> bool:
        """Report results that appeared since the last look; True if any did."""
        new = False
        for job in jobs:
            if job.id not in reported:
                result = read_result(job, self.workspace.job_dir(job.id))
                if result is not None:
                    reported[job.id] = result
                    on_result(result)
                    new = True
        return new


def write_job(job: Job, job_dir: Path) -> Path:
    path = job_dir / JOB_FILE
    path.write_text(json.dumps(dataclasses.asdict(job), indent=2))
    return path


class MountPlan:
    """Maps host paths to container paths: writable folders first, then read-only
    inputs, each reusing a mount that already holds it (an export's output is the next
    job's input, and does not exist yet when the container starts)."""

    def __init__(self) -> None:
        self.mounts: list[docker_engine.Mount] = []

    def _find(self, path: Path) -> Optional[str]:
        for mount in self.mounts:
            if path == mount.source or mount.source in path.parents:
                return mount.target + "/" + str(path.relative_to(mount.source)) if path != mount.source else mount.target
        return None

    def add(self, source: Path, target: str, read_only: bool) -> str:
        self.mounts.append(docker_engine.Mount(source=source, target=target, read_only=read_only))
        return target

    def writable(self, folder: Path) -> str:
        folder = folder.resolve()
        return self._find(folder) or self.add(folder, f"/nav/io/{len(self.mounts)}", read_only=False)

    def readable(self, path: Path) -> str:
        path = path.resolve()
        found = self._find(path)
        if found:
            return found
        if path.is_dir():
            return self.add(path, f"/nav/io/{len(self.mounts)}", read_only=True)
        return self.add(path, f"/nav/io/{len(self.mounts)}/{path.name}", read_only=True)


def check_readable_by_runner(path: Path) -> None:
    """Fail early, with what to do, when the runner's user could not read an input.

    Only the mounted file or folder itself matters: a bind mount skips the permissions of
    the folders above it."""
    if docker_engine.container_user() == f"{os.getuid()}:{os.getgid()}":
        return  # runs as the calling user, who can read what it passed
    # A folder model (a SavedModel) is read whole: everything in it must be readable too.
    for item in [path, *(sorted(path.rglob("*")) if path.is_dir() else [])]:
        needed = stat.S_IROTH | (stat.S_IXOTH if item.is_dir() else 0)
        if item.stat().st_mode & needed != needed:
            raise BadInput(f"{item} is not readable by the runners' user ({docker_engine.container_user()}, "
                           "as nav-orch runs as root): make it readable ("
                           + (f"chmod -R o+rX {path})" if path.is_dir() else "chmod o+r)"))


class ContainerProcess:
    def __init__(self, container: docker.models.containers.Container):
        self.container = container
        self.logs = ""

    def poll(self) -> Optional[Exit]:
        state = docker_engine.exit_state(self.container)
        return None if state is None else Exit(code=state.code, oom_killed=state.oom_killed)

    def stop(self) -> None:
        if not self.logs:
            self.logs = docker_engine.container_logs(self.container)
        docker_engine.remove_container(self.container)

    def output(self) -> str:
        return self.logs or docker_engine.container_logs(self.container)


class DockerExecutor(Executor):
    """Each session runs in a fresh, sandboxed, labelled container of the run."""

    def __init__(self, workspace: Workspace, timeout_s: float, client: docker.DockerClient, run_id: str,
                 memory: Optional[str] = None, pids: int = 4096):
        super().__init__(workspace, timeout_s)
        self.client = client
        self.run_id = run_id
        self.memory = memory
        self.pids = pids

    def start(self, name: str, image: str, jobs: list[Job], placement: Placement) -> Process:
        plan = MountPlan()
        plan.add(RUNNERS_DIR, f"{CONTAINER_CODE}/runners", read_only=True)
        docker_engine.grant_container_user(self.workspace.cache)
        plan.add(self.workspace.cache, CONTAINER_CACHE, read_only=False)
        job_files = []
        for job in jobs:
            for folder in (self.workspace.job_dir(job.id), Path(job.output_dir)):
                docker_engine.grant_container_user(folder)
                plan.writable(folder)
        for job in jobs:
            inside = dataclasses.replace(
                job,
                output_dir=plan.writable(Path(job.output_dir)),
                inputs={role: plan.readable(Path(path)) for role, path in job.inputs.items()},
            )
            job_dir = self.workspace.job_dir(job.id)
            write_job(inside, job_dir)
            job_files.append(f"{plan.writable(job_dir)}/{JOB_FILE}")
        for mount in plan.mounts:
            if mount.read_only:
                check_readable_by_runner(mount.source)
        spec = docker_engine.ContainerSpec(
            image=image,
            command=["python", "-m", "runners.main", *job_files],
            mounts=plan.mounts,
            labels={docker_engine.RUN_LABEL: self.run_id, docker_engine.ROLE_LABEL: f"runner:{name}"},
            environment={"PYTHONPATH": CONTAINER_CODE, "PYTHONUNBUFFERED": "1", **cache_environment(CONTAINER_CACHE),
                         **placement.environment()},
            gpus=f"device={placement.gpu}" if placement.gpu is not None else "none",
            memory=self.memory,
            pids=self.pids,
        )
        return ContainerProcess(docker_engine.start_container(self.client, spec))


class SubprocessProcess:
    def __init__(self, popen: subprocess.Popen, log_path: Path):
        self.popen = popen
        self.log_path = log_path

    def poll(self) -> Optional[Exit]:
        code = self.popen.poll()
        return None if code is None else Exit(code=code)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class LocalExecutor(Executor):
    """Runs the runners as subprocesses of `python` (for hosts without Docker)."""

    def __init__(self, workspace: Workspace, timeout_s: float, python: str = sys.executable):
        super().__init__(workspace, timeout_s)
        self.python = python

    def start(self, name: str, image: str, jobs: list[Job], placement: Placement) -> Process:
        job_files = [str(write_job(job, self.workspace.job_dir(job.id))) for job in jobs]
        environment = {**os.environ, "PYTHONPATH": str(RUNNERS_DIR.parent), "PYTHONUNBUFFERED": "1",
                       **cache_environment(str(self.workspace.cache)), **placement.environment(),
                       # A session without a GPU must not see one: the scheduler gave it none.
                       "CUDA_VISIBLE_DEVICES": placement.gpu if placement.gpu is not None else ""}
        log_path = self.workspace.logs / f"{name}.log"
        with log_path.open("w") as log:
            popen = subprocess.Popen(
                [self.python, "-m", "runners.main", *job_files],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,  # so a timeout can kill the runner's whole group
            )
        return SubprocessProcess(popen, log_path)
