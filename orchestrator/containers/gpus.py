"""The host's GPUs, read with nvidia-smi (the host imports no CUDA library)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import BadInput, EnvironmentProblem


@dataclass
class HostGpu:
    index: str
    name: str
    uuid: str
    driver: str


def nvidia_driver_loaded() -> bool:
    """A quick test for `auto` defaults (no nvidia-smi call): the driver's control device exists."""
    return Path("/dev/nvidiactl").exists()


def host_gpus() -> list[HostGpu]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=index,name,uuid,driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [HostGpu(*(part.strip() for part in line.split(","))) for line in out.splitlines() if line.count(",") == 3]


def select_gpus(request: str, available: list[HostGpu]) -> list[str]:
    """The GPU indices a `--gpus` value (docker's syntax) stands for on this host."""
    request = request.strip()
    if request in ("", "none"):
        return []
    indices = [gpu.index for gpu in available]
    if not indices:
        raise EnvironmentProblem(f"--gpus {request}: this host has no NVIDIA GPU (nvidia-smi finds none); "
                                 "use --gpus none or --images cpu")
    if request == "all":
        return indices
    if request.isdigit():
        count = int(request)
        if count > len(indices):
            raise EnvironmentProblem(f"--gpus {request}: this host has only {len(indices)} GPU(s)")
        return indices[:count]
    if request.startswith("device="):
        wanted = request.removeprefix("device=").split(",")
        by_key = {key: gpu.index for gpu in available for key in (gpu.index, gpu.uuid)}
        missing = [w for w in wanted if w not in by_key]
        if missing:
            raise EnvironmentProblem(f"--gpus {request}: no GPU {', '.join(missing)} on this host "
                                     f"(it has {', '.join(indices)})")
        return [by_key[w] for w in wanted]
    raise BadInput(f"--gpus {request!r} is not docker's syntax: use all, a count, device=0,2 or none")
