"""Running `tritonserver` in a container: started with host networking but bound to 127.0.0.1 on
free ports, the model repository mounted read-only, sandboxed like the runners (read-only root,
no capabilities, unprivileged user); readiness polled over HTTP while the log is scanned for
fatal errors, so a model that fails to load ends the wait at once with the line that says why.
"""
from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import docker

from orchestrator.containers import engine
from orchestrator.errors import EnvironmentProblem, ServerFailed

HOST = "127.0.0.1"  # tests and benchmarks talk only to the loopback interface
REPOSITORY_MOUNT = "/models"
BACKENDS_DIR = "/opt/tritonserver/backends"  # both flavors: NGC's images and images/triton-cpu
# Lines of the server log that mean it will not become ready (case-insensitive). Not every
# "E..." line is fatal: a CPU-only host logs "CudaDriverHelper has not been initialized".
FATAL_PATTERNS = ("failed to load", "error: ", "address already in use", "unrecognized option",
                  "failed to start", "unable to load backend")
FAILED_MODEL = re.compile(r"failed to load '([^']+)' version \d+: (.*?)\"?$", re.IGNORECASE)
GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")
PORT_RETRIES = 3
FATAL_GRACE_S = 15.0

_backends_cache: dict[str, set[str]] = {}


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it moments later; a lost race is
    retried with new ports)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def check_port_free(port: int, option: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise EnvironmentProblem(f"port {port} on {HOST} is in use: choose another with {option}") from None


def image_backends(client: docker.DockerClient, image_id: str, image: str, run_id: str) -> set[str]:
    """The backends the server image really carries: its backends folder, listed by a short
    container of the image (labels could go stale; the folder is what tritonserver loads)."""
    if image_id in _backends_cache:
        return _backends_cache[image_id]
    spec = engine.ContainerSpec(
        image=image, command=["ls", "-1", BACKENDS_DIR], mounts=[],
        labels={engine.RUN_LABEL: run_id, engine.ROLE_LABEL: "triton-backends"}, pids=64)
    state, output = engine.run_to_exit(client, spec, timeout_s=60)
    if state is None or state.code != 0:
        raise EnvironmentProblem(f"cannot list {BACKENDS_DIR} in {image}: "
                                 f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}")
    backends = {line.strip() for line in output.splitlines() if line.strip()}
    _backends_cache[image_id] = backends
    return backends


def log_message(line: str) -> str:
    """A log line without glog's prefix and quotes, up to its first escaped newline (Python
    tracebacks come as one line with literal \\n)."""
    return GLOG_PREFIX.sub("", line.strip()).strip('"').split("\\n")[0].strip()


def fatal_line(log: str) -> Optional[str]:
    for line in log.splitlines():
        lowered = line.lower()
        if any(pattern in lowered for pattern in FATAL_PATTERNS):
            return log_message(line)
    return None


def failed_models(log: str) -> dict[str, str]:
    """Models the log says failed to load, with the reason."""
    found = {}
    for line in log.splitlines():
        match = FAILED_MODEL.search(log_message(line))
        if match:
            found.setdefault(match.group(1), match.group(2).strip())
    return found


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class TritonServer:
    """One tritonserver container; a context manager that always removes it."""

    def __init__(self, client: docker.DockerClient, image: str, repository: Path, models: list[str], run_id: str,
                 log_path: Path, gpus: str = "none", shm_size: str = "256m", ready_timeout_s: float = 180.0,
                 http_port: int = 0, grpc_port: int = 0, pids: int = 4096):
        self.client = client
        self.image = image
        self.repository = repository.resolve()
        self.models = models
        self.run_id = run_id
        self.log_path = log_path
        self.gpus = gpus
        self.shm_size = shm_size
        self.ready_timeout_s = ready_timeout_s
        self.requested_ports = (http_port, grpc_port)
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.pids = pids
        self.container = None

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def command(self) -> list[str]:
        # Explicit model control loads just the models asked for; the repository may hold more.
        # Metrics are off: nothing reads them, and an open metrics port would be one more listener.
        return [
            "tritonserver", f"--model-repository={REPOSITORY_MOUNT}", "--model-control-mode=explicit",
            *[f"--load-model={model}" for model in self.models],
            f"--http-address={HOST}", f"--http-port={self.http_port}",
            f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false", "--exit-on-error=true", "--strict-readiness=true",
        ]

    def start(self) -> "TritonServer":
        """Start and wait until every model is ready; ServerFailed says why it did not."""
        for attempt in range(PORT_RETRIES):
            self.http_port = self.requested_ports[0] or free_port()
            self.grpc_port = self.requested_ports[1] or free_port()
            while self.grpc_port == self.http_port:
                self.grpc_port = free_port()
            try:
                self._start_once()
                return self
            except ServerFailed as error:
                self.stop()
                port_race = "address already in use" in str(error).lower()
                if not port_race or any(self.requested_ports) or attempt == PORT_RETRIES - 1:
                    raise
            except BaseException:  # Ctrl-C while waiting, Docker errors: leave no server behind
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        spec = engine.ContainerSpec(
            image=self.image, command=self.command(),
            mounts=[engine.Mount(source=self.repository, target=REPOSITORY_MOUNT, read_only=True)],
            labels={engine.RUN_LABEL: self.run_id, engine.ROLE_LABEL: "triton-server"},
            network="host", gpus=self.gpus, pids=self.pids, shm_size=self.shm_size,
        )
        self.container = engine.start_container(self.client, spec)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        ready_url = f"{self.http_url}/v2/health/ready"
        while True:
            if http_ok(ready_url):
                return
            log = self.logs()
            state = engine.exit_state(self.container)
            if fatal_line(log) or state is not None:
                log = self._settle()
                failed = failed_models(log)
                reason = (f"failed to load {next(iter(failed))}: {next(iter(failed.values()))}" if failed
                          else fatal_line(log) or f"tritonserver exited with code {state.code if state else '?'}")
                raise ServerFailed(f"Triton did not start: {reason} (log: {self.log_path})", failed)
            if time.monotonic() > deadline:
                self.save_log()
                raise ServerFailed(f"Triton was not ready after {self.ready_timeout_s:.0f} s "
                                   f"(log: {self.log_path})", failed_models(log))
            time.sleep(0.25)

    def _settle(self) -> str:
        """After a fatal line: give the server a moment to finish loading the other models and
        exit (--exit-on-error), so the log names every model that failed. Returns the log."""
        deadline = time.monotonic() + FATAL_GRACE_S
        while engine.exit_state(self.container) is None and time.monotonic() < deadline:
            time.sleep(0.25)
        self.save_log()
        return self.logs()

    def check_running(self) -> None:
        """Raise ServerFailed when the server has stopped on its own."""
        state = engine.exit_state(self.container)
        if state is not None:
            self.save_log()
            log = self.logs()
            reason = fatal_line(log) or f"exit code {state.code}" + (", out of memory" if state.oom_killed else "")
            raise ServerFailed(f"Triton stopped: {reason} (log: {self.log_path})")

    def logs(self) -> str:
        return engine.container_logs(self.container) if self.container is not None else ""

    def save_log(self) -> None:
        if self.container is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(self.logs())

    def server_version(self) -> Optional[str]:
        """The version the server reports (`GET /v2`)."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2", timeout=5) as response:
                return json.load(response).get("version")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.container is None:
            return
        try:
            self.save_log()
        finally:
            engine.remove_container(self.container)
            self.container = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
