"""Running `tritonserver` in a container: started with host networking but bound to 127.0.0.1 on
free ports, the model repository mounted read-only, sandboxed like the runners (read-only root,
no capabilities, unprivileged user); readiness polled with tritonclient over gRPC while the log is
scanned for fatal errors, so a model that fails to load ends the wait at once with the line that
says why.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Protocol

import docker
import tritonclient.grpc as triton_grpc
from docker.models.containers import Container
from tritonclient.utils import InferenceServerException

from orchestrator.config import OptimizeConfig, TritonSettings, default_of
from orchestrator.containers import engine
from orchestrator.errors import BadInput, EnvironmentProblem, ServerFailed

HOST = "127.0.0.1"  # tests and benchmarks talk only to the loopback interface
LOOPBACK = ("127.0.0.1", "localhost", "::1")
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
STOP_GRACE_S = 30.0  # a local server's time to stop after SIGTERM
POLL_S = 0.25  # between readiness checks
CALL_TIMEOUT_S = 1.0  # one readiness or version call
# gRPC waits up to two minutes between connection attempts by default: while the server starts,
# that would make readiness late by as much. The server is on the loopback: never via a proxy.
# Given channel arguments replace tritonclient's own, which lift gRPC's 4 MiB message limit: lifted here
# too (a batch of BERT's hidden states is 25 MB).
CHANNEL_ARGS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500),
                ("grpc.enable_http_proxy", 0), ("grpc.max_send_message_length", 2**31 - 1),
                ("grpc.max_receive_message_length", 2**31 - 1))


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it moments later; a lost race is
    retried with new ports)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def check_listen(host: str, ports: dict[str, int], host_option: str = "--host") -> None:
    """Before anything starts: the ports (by option) are 1-65535 or 0 (a free one), `host` is an
    address of this machine, and each port given is free there."""
    for option, port in ports.items():
        if not 0 <= port <= 65535:
            raise BadInput(f"{option} {port}: a port is 1 to 65535 (leave it out for a free one)")
    check_host(host, host_option)
    for option, port in ports.items():
        if port:
            check_port_free(port, option, host)


def probe_bind(host: str, port: int) -> None:
    """Bind a socket to `host`:`port` as a server would, and let it go; raises what the bind raises."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind(address)


def check_host(host: str, option: str) -> None:
    """`host` resolves to an address a server on this machine can bind (port 0: any free port)."""
    try:
        probe_bind(host, 0)
    except (socket.gaierror, UnicodeError) as error:
        why = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise BadInput(f"{option} {host}: cannot be resolved ({why}); give an address of this machine, such as "
                       f"{HOST}, or 0.0.0.0 for all of them") from None
    except OSError as error:
        raise BadInput(f"{option} {host}: cannot be bound here ({error.strerror}); give an address of this "
                       f"machine, such as {HOST}, or 0.0.0.0 for all of them") from None


def check_port_free(port: int, option: str, host: str = HOST) -> None:
    try:
        probe_bind(host, port)
    except OSError as error:
        why = "is in use" if error.errno == errno.EADDRINUSE else f"cannot be used ({error.strerror})"
        raise EnvironmentProblem(f"port {port} on {host} {why}: choose another with {option}") from None


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections at `host`:`port` now."""
    try:
        with socket.create_connection((host, port), timeout=CALL_TIMEOUT_S):
            return True
    except OSError:
        return False


def reachable(host: str) -> str:
    """Where this machine reaches a server bound to `host` (the loopback for every address)."""
    return HOST if host in ("0.0.0.0", "::") else host


def image_backends(client: docker.DockerClient, image: str, run_id: str) -> set[str]:
    """The backends the server image really carries: its backends folder, listed by a short
    container of the image (labels could go stale; the folder is what tritonserver loads)."""
    spec = engine.ContainerSpec(
        image=image, command=["ls", "-1", BACKENDS_DIR], mounts=[],
        labels={engine.RUN_LABEL: run_id, engine.ROLE_LABEL: "triton-backends"}, pids=64)
    state, output = engine.run_to_exit(client, spec, timeout_s=60)
    if state is None or state.code != 0:
        raise EnvironmentProblem(f"cannot list {BACKENDS_DIR} in {image}: "
                                 f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}")
    return {line.strip() for line in output.splitlines() if line.strip()}


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
    found: dict[str, str] = {}
    for line in log.splitlines():
        match = FAILED_MODEL.search(log_message(line))
        if match:
            found.setdefault(match.group(1), match.group(2).strip())
    return found


class Health(Protocol):
    """What the server is asked over its API while it starts and runs."""

    def ready(self) -> bool: ...
    def version(self) -> Optional[str]: ...
    def load(self, model: str, config_json: str) -> None: ...
    def close(self) -> None: ...


class GrpcHealth:
    """Health over Triton's gRPC endpoint, through tritonclient. A server not (yet) listening is
    not ready, never an error: readiness is polled from the moment the container starts."""

    def __init__(self, url: str):
        self.client = triton_grpc.InferenceServerClient(url, channel_args=list(CHANNEL_ARGS))

    def ready(self) -> bool:
        try:
            return bool(self.client.is_server_ready(client_timeout=CALL_TIMEOUT_S))
        except InferenceServerException:
            return False

    def version(self) -> Optional[str]:
        try:
            return self.client.get_server_metadata(client_timeout=CALL_TIMEOUT_S).version or None
        except InferenceServerException:
            return None

    def load(self, model: str, config_json: str) -> None:
        """(Re)load `model` with `config_json` in place of its config.pbtxt (explicit model control)."""
        self.client.load_model(model, config=config_json)

    def close(self) -> None:
        self.client.close()


class Running(Protocol):
    """Where a server runs: a container, or a process of a local Python."""

    def exit_state(self) -> Optional[engine.ExitState]: ...
    def logs(self) -> str: ...
    def remove(self) -> None: ...


class InContainer:
    def __init__(self, container: Container):
        self.container = container

    def exit_state(self) -> Optional[engine.ExitState]:
        return engine.exit_state(self.container)

    def logs(self) -> str:
        return engine.container_logs(self.container)

    def remove(self) -> None:
        engine.remove_container(self.container)


class LocalProcess:
    """A server as a subprocess (its own session, so the whole group stops), its output in `log`."""

    def __init__(self, argv: list[str], environment: dict[str, str], log: Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("w+b")
        self.popen = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, **environment}, start_new_session=True)

    def exit_state(self) -> Optional[engine.ExitState]:
        code = self.popen.poll()
        return None if code is None else engine.ExitState(code=code, oom_killed=False, error="")

    def logs(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def remove(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


class TritonServer:
    """One tritonserver container (subclasses: a local process); a context manager that always removes it."""

    def __init__(self, client: Optional[docker.DockerClient], image: str, repository: Path, models: list[str],
                 run_id: str, log_path: Path, gpus: str = "none",
                 shm_size: str = default_of(TritonSettings, "shm_size"),
                 ready_timeout_s: float = default_of(TritonSettings, "ready_timeout_s"),
                 http_port: int = 0, grpc_port: int = 0, pids: int = default_of(OptimizeConfig, "pids"),
                 health: Callable[[str], Health] = GrpcHealth, host: str = HOST):
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
        self.host = host  # the address it binds; the host talks to it over the loopback unless it is another
        self.open_health = health  # a Health for the server's gRPC address
        self.health: Optional[Health] = None
        self.running: Optional[Running] = None
        self.ready_s: Optional[float] = None  # from the container's start until every model was ready

    @property
    def http_url(self) -> str:
        return f"http://{reachable(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{reachable(self.host)}:{self.grpc_port}"

    def command(self) -> list[str]:
        return ["tritonserver", f"--model-repository={REPOSITORY_MOUNT}", *self.options()]

    def options(self) -> list[str]:
        """Everything but the program and its repository, wherever the server runs."""
        # Explicit model control loads just the models asked for; the repository may hold more.
        # Metrics are off: nothing reads them, and an open metrics port would be one more listener.
        return [
            "--model-control-mode=explicit",
            *[f"--load-model={model}" for model in self.models],
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false", "--exit-on-error=true", "--strict-readiness=true",
        ]

    def launch(self, spec: engine.ContainerSpec) -> Running:
        assert self.client is not None, "a server that runs as a process launches itself"
        return InContainer(engine.start_container(self.client, spec))

    def mounts(self) -> list[engine.Mount]:
        return [engine.Mount(source=self.repository, target=REPOSITORY_MOUNT, read_only=True)]

    def environment(self) -> dict[str, str]:
        return {}

    def start(self) -> TritonServer:
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
            image=self.image, command=self.command(), mounts=self.mounts(), environment=self.environment(),
            labels={engine.RUN_LABEL: self.run_id, engine.ROLE_LABEL: "triton-server"},
            network="host", gpus=self.gpus, pids=self.pids, shm_size=self.shm_size,
        )
        started = time.monotonic()
        self.running = self.launch(spec)
        self.health = self.open_health(self.grpc_url)
        self.wait_ready()
        self.ready_s = time.monotonic() - started

    def wait_ready(self) -> None:
        """Poll readiness until the server is ready; ServerFailed as soon as its log has a fatal
        line or it exits, or when `ready_timeout_s` has passed."""
        assert self.health is not None, "started first"
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.ready():
                return
            log = self.logs()
            state = self.started().exit_state()
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
            time.sleep(POLL_S)

    def ready(self) -> bool:
        """Ready over gRPC, and its HTTP endpoint listening: Triton starts its HTTP service after the
        gRPC one, and a request in between was refused (CI, 2026-12-07). A server with no HTTP port
        chosen yet has none to wait for."""
        assert self.health is not None, "started first"
        return self.health.ready() and (not self.http_port or listening(reachable(self.host), self.http_port))

    def _settle(self) -> str:
        """After a fatal line: give the server a moment to finish loading the other models and
        exit (--exit-on-error), so the log names every model that failed. Returns the log."""
        deadline = time.monotonic() + FATAL_GRACE_S
        while self.started().exit_state() is None and time.monotonic() < deadline:
            time.sleep(0.25)
        self.save_log()
        return self.logs()

    def check_running(self) -> None:
        """Raise ServerFailed when the server has stopped on its own."""
        state = self.started().exit_state()
        if state is not None:
            self.save_log()
            log = self.logs()
            reason = fatal_line(log) or f"exit code {state.code}" + (", out of memory" if state.oom_killed else "")
            raise ServerFailed(f"Triton stopped: {reason} (log: {self.log_path})")

    def started(self) -> Running:
        assert self.running is not None, "started first"
        return self.running

    def logs(self) -> str:
        return self.running.logs() if self.running is not None else ""

    def save_log(self) -> None:
        if self.running is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(self.logs())

    def load_model(self, model: str, config_json: str) -> None:
        """Reload `model` with another config (JSON); ServerFailed with the server's reason when it
        does not load (the server goes on)."""
        assert self.health is not None, "started first"
        try:
            self.health.load(model, config_json)
        except InferenceServerException as error:
            raise ServerFailed(f"{model} did not load: {log_message(error.message() or str(error))}") from None

    def server_version(self) -> Optional[str]:
        """The version the server reports (its metadata), None when it does not answer."""
        return self.health.version() if self.health is not None else None

    def stop(self) -> None:
        if self.health is not None:
            self.health.close()
            self.health = None
        if self.running is None:
            return
        try:
            self.save_log()
        finally:
            self.running.remove()
            self.running = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
