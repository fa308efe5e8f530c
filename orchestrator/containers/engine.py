"""Every call nav-orch makes to Docker: the SDK for containers and images, the CLI only
for `docker buildx bake` where it exists."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.images import Image
from docker.types import DeviceRequest
from docker.utils import parse_repository_tag

from orchestrator.config import OptimizeConfig, default_of
from orchestrator.containers.gpus import GpuRequest
from orchestrator.errors import EnvironmentProblem

LABEL_PREFIX = "org.nav-orch"
RUN_LABEL = f"{LABEL_PREFIX}.run"
ROLE_LABEL = f"{LABEL_PREFIX}.role"
# host:pid:start of the process that started a container, so that a later run can tell the
# containers of a host that was killed (SIGKILL, a reboot) from those of a run still going.
OWNER_LABEL = f"{LABEL_PREFIX}.owner"


# Where the Docker SDK looks for the daemon when DOCKER_HOST is not set.
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


class NoDaemon(EnvironmentProblem):
    """No Docker daemon answered; `finding` says so without what to do (`nav-orch doctor` has its own)."""

    def __init__(self, where: str, why: str):
        self.finding = f"no Docker daemon answers at {where} ({why})"
        super().__init__(f"{self.finding}: start it (e.g. `dockerd &`) or point DOCKER_HOST at it; "
                         "`nav-orch doctor` checks the whole setup")


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120, max_pool_size=32)
        client.ping()
    except docker.errors.DockerException as error:
        raise NoDaemon(os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST, daemon_error(error)) from None
    return client


def daemon_error(error: BaseException) -> str:
    """Why the daemon did not answer, in words: the OS error deep inside the SDK's (requests wraps
    it in urllib3's, whose text is a tuple's repr), else the SDK's first line."""
    pending: list[object] = [error]
    seen: set[int] = set()
    while pending:
        item = pending.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.strerror:
            return item.strerror.lower()
        pending += [*item.args, item.__cause__, item.__context__]
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def engine_version(client: docker.DockerClient) -> str:
    return client.version().get("Version", "unknown")


def host_memory(client: docker.DockerClient) -> int:
    """Bytes of memory of the host the daemon runs containers on (not always this process's host)."""
    return int(client.info().get("MemTotal", 0))


def engine_runtimes(client: docker.DockerClient) -> list[str]:
    """The OCI runtimes the engine knows (`nvidia` where the NVIDIA container toolkit set itself up)."""
    return sorted(client.info().get("Runtimes", {}))


@dataclass
class ImageInfo:
    tag: str
    id: str
    labels: dict[str, str]
    size: int = 0  # bytes; where it was asked for (labelled_images)


def inspect_image(client: docker.DockerClient, tag: str) -> Optional[ImageInfo]:
    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return ImageInfo(tag=tag, id=image_id(image), labels=dict(image.labels or {}))


def labelled_images(client: docker.DockerClient, label: str) -> list[ImageInfo]:
    """The images that carry `label`, one entry per tag (an untagged one by its ID), with their size."""
    found = []
    for image in client.images.list(filters={"label": label}):
        for tag in image.tags or [image_id(image)]:
            found.append(ImageInfo(tag=tag, id=image_id(image), labels=dict(image.labels or {}),
                                   size=int(image.attrs.get("Size") or 0)))
    return sorted(found, key=lambda info: info.tag)


def remove_image(client: docker.DockerClient, tag: str) -> bool:
    """Remove the image `tag` names (no force: Docker keeps one a container uses); whether it went."""
    try:
        client.images.remove(tag)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as error:
        if error.status_code == 409:  # in use by a container, which is Docker's call to make
            return False
        raise EnvironmentProblem(f"cannot remove image {tag}: {error.explanation or error}") from None
    return True


def image_id(image: Image) -> str:
    """The ID of an image the daemon returned (the SDK's type allows none)."""
    if image.id is None:
        raise EnvironmentProblem(f"Docker returned image {image.tags} without an ID")
    return image.id


def gpu_requests(gpus: str) -> list[DeviceRequest]:
    """Docker's `--gpus` syntax as the device request Docker's CLI makes of it (docker/cli
    opts/gpus.go); none for `none`."""
    request = GpuRequest.parse(gpus)
    if not request.wanted:
        return []
    # "gpu" is the capability that selects the GPU driver; Docker's CLI adds it to any given.
    capabilities = [*request.capabilities, *(["gpu"] if "gpu" not in request.capabilities else [])]
    return [DeviceRequest(driver=request.driver, count=-1 if request.all else request.count,
                          device_ids=list(request.devices), capabilities=[capabilities],
                          options=dict(request.options))]


def container_user() -> str:
    """Containers run as the calling user and group, so they read exactly what that user can
    and what they write is the user's. With every capability dropped, even uid 0 gets no
    privilege beyond a file's owner bits (docs/concepts.md: "File access")."""
    return f"{os.getuid()}:{os.getgid()}"


@dataclass
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass
class ContainerSpec:
    image: str
    command: list[str]
    mounts: list[Mount]
    labels: dict[str, str]
    environment: dict[str, str] = field(default_factory=dict)
    gpus: str = "none"
    network: str = "none"  # runners get no network; servers get "host"
    memory: Optional[str] = None
    # A container that names no limit (perf_analyzer's) gets the runners' default: the sandbox has one.
    pids: Optional[int] = default_of(OptimizeConfig, "pids")
    shm_size: Optional[str] = None  # /dev/shm; Triton's Python backend talks to its stubs through it


# The sandbox every container gets (start_container and docker_run_command alike).
TMPFS = {"/tmp": "rw,exec,size=2g"}
SECURITY = ["no-new-privileges"]
WORKDIR = "/tmp"


def container_environment(spec: ContainerSpec) -> dict[str, str]:
    return {"HOME": WORKDIR, **spec.environment}


def start_container(client: docker.DockerClient, spec: ContainerSpec) -> Container:
    """Start a sandboxed container: no capabilities, no privilege gain, read-only root."""
    volumes = {str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts}
    try:
        return client.containers.run(
            spec.image,
            spec.command,
            detach=True,
            volumes=volumes,
            labels={**spec.labels, OWNER_LABEL: process_owner(os.getpid())},
            environment=container_environment(spec),
            network_mode=spec.network,
            device_requests=gpu_requests(spec.gpus),
            user=container_user(),
            read_only=True,
            tmpfs=TMPFS,
            cap_drop=["ALL"],
            security_opt=SECURITY,
            init=True,
            mem_limit=spec.memory,
            pids_limit=spec.pids,
            shm_size=spec.shm_size,
            working_dir=WORKDIR,
        )
    except docker.errors.ImageNotFound:
        raise EnvironmentProblem(
            f"image {spec.image} is not built: run `nav-orch images build` (see docs/images.md)"
        ) from None
    except docker.errors.APIError as error:
        raise EnvironmentProblem(f"Docker could not start {spec.image}: {error.explanation or error}") from None


def docker_run_command(spec: ContainerSpec) -> list[str]:
    """The `docker run` argument list of the container start_container starts (same sandbox, mounts
    and limits; no run label, and removed when it ends), for people to rerun a job by hand."""
    args = ["docker", "run", "--rm", "--network", spec.network, "--user", container_user(), "--read-only",
            "--cap-drop", "ALL", "--init", "--workdir", WORKDIR]
    args += [arg for path, options in TMPFS.items() for arg in ("--tmpfs", f"{path}:{options}")]
    args += [arg for option in SECURITY for arg in ("--security-opt", option)]
    for flag, value in (("--pids-limit", spec.pids), ("--memory", spec.memory), ("--shm-size", spec.shm_size)):
        if value:
            args += [flag, str(value)]
    gpus = GpuRequest.parse(spec.gpus)
    if gpus.wanted:
        args += ["--gpus", str(gpus)]  # Docker's CLI reads it as CSV: a device list travels quoted
    args += [arg for name, value in container_environment(spec).items() for arg in ("--env", f"{name}={value}")]
    args += [arg for m in spec.mounts for arg in ("--volume", f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}")]
    return [*args, spec.image, *spec.command]


@dataclass
class ExitState:
    code: int
    oom_killed: bool
    error: str


def exit_state(container: Container) -> Optional[ExitState]:
    """The container's exit, or None while it still runs."""
    container.reload()
    state = container.attrs["State"]
    if state.get("Running") or container.status in ("created", "restarting"):
        return None
    return ExitState(code=state.get("ExitCode", -1), oom_killed=bool(state.get("OOMKilled")),
                     error=state.get("Error", ""))


def container_logs(container: Container) -> str:
    try:
        return container.logs(stdout=True, stderr=True).decode(errors="replace")
    except docker.errors.APIError:
        return ""


# How long a removal that another call began may take before nav-orch gives up waiting on it.
REMOVAL_WAIT_S = 60.0


def remove_container(container: Container, wait_s: float = REMOVAL_WAIT_S, poll_s: float = 0.2) -> None:
    """Remove the container, and return only once Docker no longer lists it. Where another call
    (a warm runner's stop, the run's final sweep) began its removal, wait for that one: a run that
    exits while Docker still removes one of its containers leaves it listed for a while."""
    try:
        container.remove(force=True)
        return
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as error:
        if "already in progress" not in str(error):
            raise
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            container.reload()
        except docker.errors.NotFound:
            return
        time.sleep(poll_s)


def run_to_exit(client: docker.DockerClient, spec: ContainerSpec, timeout_s: float,
                poll_s: float = 0.2) -> tuple[Optional[ExitState], str]:
    """Run a short-lived container to its end: (its exit, or None when it ran past `timeout_s`
    and was killed; its output). The container is removed in every case, Ctrl-C included."""
    container = start_container(client, spec)
    try:
        deadline = time.monotonic() + timeout_s
        state = exit_state(container)
        while state is None and time.monotonic() < deadline:
            time.sleep(poll_s)
            state = exit_state(container)
        return state, container_logs(container)
    finally:
        remove_container(container)


def process_start(pid: int) -> Optional[str]:
    """When process `pid` started (clock ticks since boot, from /proc), "" where /proc is not
    there to tell, None when no such process runs: a reused pid starts at another time."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def process_owner(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{process_start(pid) or ''}"


def abandoned(labels: dict[str, str], running: bool) -> bool:
    """Whether a nav-orch container outlived the process that started it. One of another host
    is never judged; one without an owner (an older nav-orch) only once it has stopped."""
    owner = labels.get(OWNER_LABEL)
    if owner is None:
        return not running
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    now = process_start(int(pid))
    return now is None or (bool(started) and bool(now) and now != started)


def remove_abandoned(client: docker.DockerClient) -> int:
    """Remove the containers of nav-orch runs whose process is gone; returns how many."""
    containers = [container for container in client.containers.list(all=True, filters={"label": RUN_LABEL})
                  if abandoned(container.labels, container.status == "running")]
    for container in containers:
        remove_container(container)
    return len(containers)


def remove_labelled(client: docker.DockerClient, run_id: Optional[str] = None) -> int:
    """Remove the containers of one run (or of every nav-orch run); returns how many."""
    label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    containers = client.containers.list(all=True, filters={"label": label})
    for container in containers:
        remove_container(container)
    return len(containers)


# --- images -------------------------------------------------------------------------

def buildx_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "buildx", "version"], capture_output=True)
    return probe.returncode == 0


def bake(bake_file: Path, targets: Iterable[str], overrides: dict[str, str], no_cache: bool = False) -> None:
    """Build with `docker buildx bake`; `overrides` are the bake file's variables."""
    command = ["docker", "buildx", "bake", "--file", str(bake_file), "--load", *(["--no-cache"] if no_cache else []),
               *targets]
    # buildx resolves each target's context against the working directory, not the file.
    result = subprocess.run(command, env={**os.environ, **overrides}, cwd=bake_file.parent)
    if result.returncode != 0:
        raise EnvironmentProblem(f"`{' '.join(command)}` failed with exit code {result.returncode}")


@dataclass
class BuiltImage:
    id: str
    size: int  # bytes, as `docker images` counts them
    # What each earlier stage ended on: the classic builder keeps those images, untagged. A stage
    # without steps of its own ends on its base image, which the build did not make.
    stage_ids: list[str]


def build_image(
    client: docker.DockerClient,
    context: Path,
    dockerfile: str,
    tags: list[str],
    build_args: dict[str, str],
    labels: dict[str, str],
    on_line: Callable[[str], None],
    no_cache: bool = False,
) -> BuiltImage:
    """Build through the Docker API's classic builder."""
    stage_ids: list[str] = []  # the builder reports each stage's image (`aux`), the final one last
    stream = client.api.build(
        path=str(context), dockerfile=dockerfile, tag=tags[0], buildargs=build_args, labels=labels,
        rm=True, forcerm=True, decode=True, nocache=no_cache,
    )
    for chunk in stream:
        if "error" in chunk:
            raise EnvironmentProblem(f"building {tags[0]} failed: {chunk['error'].strip()}")
        if "stream" in chunk:
            on_line(chunk["stream"].rstrip("\n"))
        if "aux" in chunk and "ID" in chunk["aux"]:
            stage_ids.append(chunk["aux"]["ID"])
    image = client.images.get(stage_ids[-1] if stage_ids else tags[0])
    for tag in tags[1:]:
        repository, _, version = tag.rpartition(":")
        image.tag(repository, version)
    built = image_id(image)
    return BuiltImage(id=built, size=int(image.attrs.get("Size") or 0),
                      stage_ids=list(dict.fromkeys(i for i in stage_ids if i != built)))


def remove_untagged(client: docker.DockerClient, image_ids: Iterable[str],
                    on_line: Callable[[str], None]) -> list[str]:
    """Remove those of `image_ids` that no name (tag or digest) refers to, with their unnamed
    parents (`docker rmi`'s pruning). No force: Docker keeps an image that another image is
    built on or a container uses. Returns the IDs removed."""
    removed = []
    for image_id in image_ids:
        try:
            attrs = client.api.inspect_image(image_id)
            if [t for t in attrs.get("RepoTags") or [] if t != "<none>:<none>"] or attrs.get("RepoDigests"):
                continue
            client.api.remove_image(image_id)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: still needed, which is Docker's call to make
                reason = str(error.explanation or error).splitlines()[0]
                on_line(f"warning: could not remove the unused image {image_id[:19]}: {reason}")
            continue
        removed.append(image_id)
    return removed


def pull_image(client: docker.DockerClient, reference: str) -> ImageInfo:
    """Pull an image, as the builder does for a FROM image that is not here."""
    repository, tag = parse_repository_tag(reference)
    failure = f"cannot pull {reference}"
    try:
        for chunk in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if "error" in chunk:
                raise EnvironmentProblem(f"{failure}: {chunk['error'].strip().splitlines()[0]}")
    except docker.errors.APIError as error:
        raise EnvironmentProblem(f"{failure}: {str(error.explanation or error).splitlines()[0]}") from None
    info = inspect_image(client, reference)
    if info is None:
        raise EnvironmentProblem(f"{failure}: the pull left no such image")
    return info


def import_rootfs(client: docker.DockerClient, rootfs: Path, tag: str) -> str:
    """Make an image from a root filesystem folder (`docker import`)."""
    repository, _, version = tag.rpartition(":")
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "rootfs.tar"
        with tarfile.open(archive, mode="w") as tar:
            tar.add(str(rootfs), arcname=".")
        client.api.import_image_from_file(str(archive), repository=repository, tag=version)
    return image_id(client.images.get(tag))
