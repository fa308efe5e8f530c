"""The host's GPUs, read with nvidia-smi (the host imports no CUDA library), and `--gpus` values."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from orchestrator.errors import BadInput, EnvironmentProblem
from runners import nvidia_smi

# What the host knows of a GPU: index, name, UUID and driver (the runners' parser, HOST_FIELDS).
HostGpu = nvidia_smi.SmiGpu


@dataclass(frozen=True)
class GpuRequest:
    """A `--gpus` value in Docker's syntax: every GPU (`all`), the first `count` (`N`), or the
    `devices` named by index or UUID (`device=0,2`); none of them (`none`, `0`) asks for no GPU."""

    all: bool = False
    count: int = 0
    devices: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GpuRequest:
        value = text.strip()
        if value in ("", "none"):
            return cls()
        if value == "all":
            return cls(all=True)
        if value.isascii() and value.isdigit():
            return cls(count=int(value))
        if value.startswith("device="):
            devices = tuple(device.strip() for device in value.removeprefix("device=").split(","))
            if all(devices):
                return cls(devices=devices)
        raise BadInput(f"--gpus {text!r} is not docker's syntax: use all, a count, device=0,2 or none")

    @property
    def wanted(self) -> bool:
        return self.all or self.count > 0 or bool(self.devices)

    def __str__(self) -> str:
        """Docker's syntax again, for messages."""
        if self.all:
            return "all"
        if self.devices:
            return "device=" + ",".join(self.devices)
        return str(self.count) if self.count else "none"


def nvidia_driver_loaded() -> bool:
    """A quick test for `auto` defaults (no nvidia-smi call): the driver's control device exists."""
    return Path("/dev/nvidiactl").exists()


def host_gpus(run: nvidia_smi.Run = nvidia_smi.run_command) -> list[HostGpu]:
    """Every GPU of the host; none where nvidia-smi is missing or fails."""
    return nvidia_smi.query(nvidia_smi.HOST_FIELDS, run=run)


def select_gpus(request: Union[GpuRequest, str], available: Sequence[HostGpu]) -> list[str]:
    """The GPU indices a `--gpus` value stands for on this host."""
    request = GpuRequest.parse(request) if isinstance(request, str) else request
    if not request.wanted:
        return []
    indices = [gpu.index for gpu in available]
    if not indices:
        raise EnvironmentProblem(f"--gpus {request}: this host has no NVIDIA GPU (nvidia-smi finds none); "
                                 "use --gpus none or --images cpu")
    if request.all:
        return indices
    if request.count:
        if request.count > len(indices):
            raise EnvironmentProblem(f"--gpus {request}: this host has only {len(indices)} GPU(s)")
        return indices[:request.count]
    by_key = {key: gpu.index for gpu in available for key in (gpu.index, gpu.uuid)}
    missing = [device for device in request.devices if device not in by_key]
    if missing:
        raise EnvironmentProblem(f"--gpus {request}: no GPU {', '.join(missing)} on this host "
                                 f"(it has {', '.join(indices)})")
    return [by_key[device] for device in request.devices]


def resolve_gpus(gpus: str, images_release: str, driver_loaded: Callable[[], bool] = nvidia_driver_loaded) -> str:
    """`--gpus` in Docker's syntax, checked; `auto`: every GPU when the host has any and the images
    can use them."""
    if gpus != "auto":
        return str(GpuRequest.parse(gpus))
    if images_release == "cpu":
        return "none"
    return "all" if driver_loaded() else "none"
