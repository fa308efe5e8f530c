"""`nav-orch doctor`: is this host ready to run nav-orch, and if not, what to do."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import docker

from orchestrator.containers import engine
from orchestrator.containers.bake import BakeError, BakeFile, load_bake_file
from orchestrator.containers.gpus import HostGpu
from orchestrator.errors import NavOrchError

Level = Literal["ok", "info", "warn", "fail"]


@dataclass
class Finding:
    check: str
    level: Level
    detail: str
    fix: str = ""


def check_docker(connect: Callable[[], docker.DockerClient]) -> tuple[Finding, Optional[docker.DockerClient]]:
    try:
        client = connect()
    except NavOrchError as error:
        return Finding("docker", "fail", error.finding if isinstance(error, engine.NoDaemon) else str(error),
                       "install Docker (Debian: apt-get install docker.io), start dockerd, or set DOCKER_HOST"), None
    return Finding("docker", "ok", f"Docker engine {engine.engine_version(client)}"), client


def check_bake_file(path: Path) -> tuple[Finding, Optional[BakeFile]]:
    """The image matrix that nav-orch ships: unreadable only in a broken installation."""
    try:
        bake = load_bake_file(path)
    except BakeError as error:
        return Finding("image matrix", "fail", str(error), "reinstall nav-orch"), None
    return Finding("image matrix", "ok", f"{bake.path} ({len(bake.targets)} targets)"), bake


def check_images(client: docker.DockerClient, bake: BakeFile, flavor: str, required: bool) -> list[Finding]:
    """Every image of the flavor's bake group: built or not, and how to build it."""
    findings = []
    for target in bake.select(flavor):
        for tag in target.tags:
            info = engine.inspect_image(client, tag)
            if info is not None:
                findings.append(Finding(f"image {tag}", "ok", f"built ({info.id[7:19]})"))
            else:
                use = "--images cpu" if flavor == "cpu" else "--images <NGC release> on GPUs"
                needed = "not built" if required else f"not built (needed only for {use})"
                findings.append(Finding(f"image {tag}", "fail" if required else "info", needed,
                                        f"nav-orch images build --flavor {flavor}"))
    return findings


def check_base(client: docker.DockerClient, base: str) -> Finding:
    if engine.inspect_image(client, base) is not None:
        return Finding(f"image {base}", "ok", "built (the CPU images' base)")
    return Finding(f"image {base}", "warn", "missing: the CPU images cannot be rebuilt without it",
                   "nav-orch images bootstrap")


def check_gpu_runtime(client: Optional[docker.DockerClient]) -> Finding:
    runtimes = engine.engine_runtimes(client) if client is not None else []
    if "nvidia" in runtimes or shutil.which("nvidia-container-cli"):
        return Finding("nvidia runtime", "ok", "the NVIDIA container toolkit is installed")
    return Finding("nvidia runtime", "fail", "containers cannot get GPUs: no NVIDIA container toolkit",
                   "install nvidia-container-toolkit, run `nvidia-ctk runtime configure --runtime=docker` "
                   "and restart dockerd")


def check_driver(gpu: HostGpu, release: str, min_driver: str) -> Finding:
    branch = gpu.driver.split(".", 1)[0]
    if branch.isdigit() and min_driver.isdigit() and int(branch) < int(min_driver):
        return Finding(f"driver on GPU {gpu.index}", "fail",
                       f"driver {gpu.driver} is older than R{min_driver}, which NGC {release} needs",
                       f"install driver R{min_driver} or later (data-center GPUs: or the CUDA forward-compatibility "
                       "package), or build the images of an older release with --set NGC_RELEASE=...")
    return Finding(f"driver on GPU {gpu.index}", "ok", f"{gpu.name}, driver {gpu.driver} (NGC {release} needs "
                   f"R{min_driver}+)")


def diagnose(bake: Optional[BakeFile], connect: Callable[[], docker.DockerClient],
             gpus: Callable[[], list[HostGpu]], base_image: str) -> list[Finding]:
    """Every finding; without a bake file (see `check_bake_file`) the images and the driver's
    needs are unknown, and only Docker, the base image and the GPUs are checked."""
    docker_finding, client = check_docker(connect)
    findings = [docker_finding]
    host_gpus = gpus()
    if client is not None:
        findings.append(check_base(client, base_image))
        if bake is not None:
            findings += check_images(client, bake, "cpu", required=not host_gpus)
            findings += check_images(client, bake, "cuda", required=bool(host_gpus))
    if not host_gpus:
        findings.append(Finding("gpus", "info", "no NVIDIA GPU (nvidia-smi finds none): runs use the CPU images"))
        return findings
    findings.append(check_gpu_runtime(client))
    if bake is not None:
        variables = bake.resolve_variables()
        findings += [check_driver(gpu, variables["NGC_RELEASE"], variables["NGC_MIN_DRIVER"]) for gpu in host_gpus]
    return findings
