"""nvidia-smi's CSV as typed rows: the runners read the GPU a job ran on, the host its GPUs.

Standard library only: it runs inside every image and on the host.
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from runners.contract.protocol import GpuInfo

# SmiGpu's field -> nvidia-smi's name for it (`nvidia-smi --help-query-gpu`).
QUERY_FIELDS: dict[str, str] = {
    "index": "index",
    "name": "name",
    "uuid": "uuid",
    "driver": "driver_version",
    "compute_capability": "compute_cap",
    "sm_clock_mhz": "clocks.sm",
    "memory_clock_mhz": "clocks.mem",
    "max_sm_clock_mhz": "clocks.max.sm",
}
CLOCK_FIELDS = ("sm_clock_mhz", "memory_clock_mhz", "max_sm_clock_mhz")
# The host asks only for what every driver knows: drivers before R510 reject `compute_cap`, and
# `nav-orch doctor` must still see their GPUs to say that the driver is too old.
HOST_FIELDS = ("index", "name", "uuid", "driver")
RUNNER_FIELDS = tuple(QUERY_FIELDS)

# Runs a command, returning its stdout, or None where it is missing, fails or hangs.
SmiCall = Callable[[Sequence[str]], Optional[str]]


@dataclass(frozen=True)
class SmiGpu:
    """One GPU as nvidia-smi lists it; fields not queried stay empty."""

    index: str = ""
    name: str = ""
    uuid: str = ""
    driver: str = ""
    compute_capability: str = ""
    sm_clock_mhz: Optional[int] = None
    memory_clock_mhz: Optional[int] = None
    max_sm_clock_mhz: Optional[int] = None

    def info(self) -> GpuInfo:
        """As a job result records it."""
        return GpuInfo(self.name, self.uuid, self.driver, self.compute_capability,
                       self.sm_clock_mhz, self.memory_clock_mhz, self.max_sm_clock_mhz)


def command(fields: Sequence[str], device: Optional[str] = None) -> list[str]:
    """The nvidia-smi call for `fields` (SmiGpu's names), of one device (index or UUID) or all."""
    query = ",".join(QUERY_FIELDS[name] for name in fields)
    return ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits",
            *(["-i", device] if device is not None else [])]


def parse_csv(text: str, fields: Sequence[str]) -> list[SmiGpu]:
    """The rows of `command(fields)`'s output; a line of another width (a message) is skipped."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != len(fields):
            continue
        # Clocks read "[N/A]" (or "[Not Supported]") where the GPU does not report them.
        values: dict[str, Any] = {name: (int(value) if value.isdigit() else None) if name in CLOCK_FIELDS else value
                                  for name, value in zip(fields, parts)}
        gpus.append(SmiGpu(**values))
    return gpus


def run_command(argv: Sequence[str], timeout_s: float = 30.0) -> Optional[str]:
    """`argv`'s stdout; None where the program is missing, fails or hangs."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def query(fields: Sequence[str], device: Optional[str] = None, run: SmiCall = run_command) -> list[SmiGpu]:
    """The GPUs nvidia-smi lists (only `device` when given); none where nvidia-smi is missing or fails."""
    out = run(command(fields, device))
    return parse_csv(out, fields) if out else []
