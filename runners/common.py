"""What every runner module shares: skipping, loading arrays, describing errors and GPUs.

Kept apart from main.py, which runs as `__main__`: an exception class defined there would
be a different class from the one the runner modules import.
"""
from __future__ import annotations

import os
import platform
import subprocess
from typing import Optional

import numpy as np

from runners.protocol import GpuInfo


class Skip(Exception):
    """Raised by a handler when the job cannot apply to this model (status `skipped`)."""


def base_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "numpy": np.__version__}


def gpu_info() -> Optional[GpuInfo]:
    """The first visible GPU, read with nvidia-smi (present wherever the NVIDIA runtime is)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    fields = "name,uuid,driver_version,compute_cap,clocks.sm,clocks.mem,clocks.max.sm"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", visible],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = [part.strip() for part in out.splitlines()[0].split(",")] if out.strip() else []
    if len(parts) != 7:
        return None
    clocks = [int(v) if v.isdigit() else None for v in parts[4:]]
    return GpuInfo(parts[0], parts[1], parts[2], parts[3], *clocks)


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    message = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return message if len(message) <= 400 else message[:397] + "..."
