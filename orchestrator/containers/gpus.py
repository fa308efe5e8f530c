"""The host's GPUs, read with nvidia-smi (the host imports no CUDA library), and `--gpus` values."""
from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from orchestrator.errors import BadInput, EnvironmentProblem
from runners.contract import nvidia_smi

# What the host knows of a GPU: index, name, UUID and driver (the runners' parser, HOST_FIELDS).
HostGpu = nvidia_smi.SmiGpu

# The keys of Docker's --gpus (docker/cli opts/gpus.go); those whose value is a comma-separated list.
GPU_KEYS = ("count", "device", "capabilities", "driver", "options")
LIST_KEYS = ("device", "capabilities", "options")


def is_count(text: str) -> bool:
    return text == "all" or (text.isascii() and text.isdigit())


def gpu_fields(value: str) -> dict[str, list[str]]:
    """The fields of a --gpus value by key (a bare field is the count), read as Docker reads them:
    one CSV record, so `"device=0,2"` is one field. Unquoted, `device=0,2` and
    `capabilities=compute,utility` are values Docker refuses (a count beside devices; `utility`
    is no count); nav-orch has always read the first as two devices, so there a bare item
    continues the list before it. ValueError says what is wrong."""
    try:
        (record,) = csv.reader([value], strict=True)
    except csv.Error as error:
        raise ValueError(f"unbalanced quotes ({error})") from None
    fields: dict[str, list[str]] = {}
    last = ""
    for field in record:
        if '"' in field:
            raise ValueError(f"a quote inside {field!r}: quote whole fields, as in \"device=0,2\"")
        key, has_value, value_text = (part.strip() for part in field.partition("="))
        if not has_value and (last == "device" or (last == "capabilities" and not is_count(key))):
            fields[last].append(key)
            continue
        if not has_value:
            key, value_text = "count", key
        if key not in GPU_KEYS:
            raise ValueError(f"unknown key {key!r} (keys: {', '.join(GPU_KEYS)})")
        if key in fields:
            raise ValueError(f"{key} given twice")
        fields[key] = [item.strip() for item in value_text.split(",")] if key in LIST_KEYS else [value_text]
        last = key
    for key, items in fields.items():
        if not all(items):
            raise ValueError(f"an empty {key}")
    return fields


def csv_field(field: str) -> str:
    """A field as Docker's CSV reader takes it back: quoted when it holds a comma."""
    return f'"{field}"' if "," in field else field


@dataclass(frozen=True)
class GpuRequest:
    """A `--gpus` value in Docker's syntax: every GPU (`all`), the first `count` (`N`, `count=N`),
    or the `devices` named by index or UUID (`device=0,2`, Docker's quoted `"device=0,2"`), with
    the `capabilities`, `driver` and `options` Docker passes to the device driver; none of them
    (`none`, `0`) asks for no GPU. Without a count or devices Docker asks for one GPU."""

    all: bool = False
    count: int = 0
    devices: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()  # as given; Docker adds "gpu", which selects the GPU driver
    driver: str = ""
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> GpuRequest:
        value = text.strip()
        if value in ("", "none"):
            return cls()
        try:
            return cls.from_fields(gpu_fields(value))
        except ValueError as error:
            raise BadInput(f"--gpus {text!r} is not docker's syntax: {error}; use all, a count, device=0,2 "
                           "(or \"device=0,2\"), count=N, capabilities=..., driver=..., joined by commas, "
                           "or none") from None

    @classmethod
    def from_fields(cls, fields: dict[str, list[str]]) -> GpuRequest:
        """The request of gpu_fields' fields; ValueError for a count that is not one, or a count
        with devices (Docker's daemon refuses that pair)."""
        devices = tuple(fields.get("device", ()))
        (count,) = fields.get("count", ["" if devices else "1"])  # Docker's default: one GPU
        if count and devices:
            raise ValueError("count and device exclude each other: name the devices or give a count")
        if count and not is_count(count):
            raise ValueError(f"count {count!r} is neither all nor a whole number")
        if count.isdigit() and int(count) == 0:
            return cls()  # no GPU, whatever else it says
        options = tuple((key, val) for key, _, val in (item.partition("=") for item in fields.get("options", ())))
        return cls(all=count == "all", count=int(count) if count.isdigit() else 0, devices=devices,
                   capabilities=tuple(fields.get("capabilities", ())), driver=fields.get("driver", [""])[0],
                   options=options)

    @property
    def wanted(self) -> bool:
        return self.all or self.count > 0 or bool(self.devices)

    def __str__(self) -> str:
        """Docker's syntax again, as its CLI reads it (fields with commas quoted): for messages
        and `docker run --gpus`."""
        if not self.wanted:
            return "none"
        fields = ["device=" + ",".join(self.devices)] if self.devices else ["all" if self.all else str(self.count)]
        if self.capabilities:
            fields.append("capabilities=" + ",".join(self.capabilities))
        if self.driver:
            fields.append(f"driver={self.driver}")
        if self.options:
            fields.append("options=" + ",".join(f"{key}={val}" for key, val in self.options))
        return ",".join(csv_field(field) for field in fields)


def docker_gpus(request: Union[GpuRequest, str], indices: Sequence[str]) -> str:
    """The --gpus of a container nav-orch starts: the user's request narrowed to the GPUs nav-orch
    placed the container on (it places work itself), keeping the capabilities, driver and options
    the user gave; "none" without GPUs. `auto` asks for nothing beyond the GPUs."""
    request = GpuRequest() if request == "auto" else request
    request = GpuRequest.parse(request) if isinstance(request, str) else request
    if not indices:
        return "none"
    return str(dataclasses.replace(request, all=False, count=0, devices=tuple(indices)))


def nvidia_driver_loaded() -> bool:
    """A quick test for `auto` defaults (no nvidia-smi call): the driver's control device exists."""
    return Path("/dev/nvidiactl").exists()


def host_gpus(run: nvidia_smi.SmiCall = nvidia_smi.run_command) -> list[HostGpu]:
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
