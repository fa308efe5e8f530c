"""The memory each runner container may take: `--memory` as given, or by default (`auto`) the host's
memory, less a reserve for everything else on it, shared among the runners that may run at once. A
runaway model then meets its own cgroup's limit and fails its variant, where without one the kernel's
out-of-memory killer picks a victim anywhere on the host: another run, the Docker daemon, a shell."""
from __future__ import annotations

import re
from typing import Optional

MIB = 1 << 20
GIB = 1 << 30
AUTO, NONE = "auto", "none"
# Left to the host's own work (the daemon, nav-orch, a shell): a tenth of it, at least 2 GiB.
RESERVE_FRACTION, MIN_RESERVE = 0.1, 2 * GIB
# Below this no framework imports and builds anything, so an automatic limit never goes lower; on a
# small host with many runners at once, the runners may then together ask for more than it has.
FLOOR = 1 * GIB
# Docker's syntax: a number of bytes, or one with a unit b, k, m or g (case does not matter).
SIZE = re.compile(r"(\d+)([bkmg]?)")
UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": MIB, "g": GIB}


def check_memory_setting(value: str) -> str:
    """`--memory` normalized (auto, none, or a size as Docker reads it); ValueError names what is accepted."""
    text = value.strip().lower()
    if text in (AUTO, NONE) or (SIZE.fullmatch(text) and size_bytes(text) >= 6 * MIB):
        return text
    raise ValueError(f"{value!r} is not a memory limit; give a size as Docker reads it (512m, 8g, at least 6m), "
                     f"{AUTO} (the host's memory shared by the runners that run at once) or {NONE} (no limit)")


def size_bytes(size: str) -> int:
    match = SIZE.fullmatch(size)
    assert match is not None, size  # check_memory_setting let it through
    return int(match.group(1)) * UNITS[match.group(2)]


def runners_at_once(cpu_sessions: int, gpus: int, sessions_per_gpu: int) -> int:
    """How many runner containers a run may hold at a time: its CPU sessions beside those on its GPUs
    (orchestrator/run/scheduler.py)."""
    return max(1, cpu_sessions + gpus * sessions_per_gpu)


def runner_limit(setting: str, host_bytes: int, at_once: int) -> Optional[int]:
    """Bytes of memory each runner gets; None for no limit."""
    if setting == NONE:
        return None
    if setting != AUTO:
        return size_bytes(setting)
    reserve = max(MIN_RESERVE, int(host_bytes * RESERVE_FRACTION))
    share = (host_bytes - reserve) // max(1, at_once)
    return max(FLOOR, share // MIB * MIB)


def docker_memory(limit: Optional[int]) -> Optional[str]:
    """The limit as Docker's `--memory` takes it (whole MiB), the same in the SDK call and in rerun.sh."""
    return None if limit is None else (f"{limit // MIB}m" if limit % MIB == 0 else str(limit))


def describe(limit: int) -> str:
    """A limit for people: "512 MiB", "10.8 GiB"."""
    return f"{limit / GIB:.1f} GiB" if limit >= GIB else f"{limit / MIB:.0f} MiB"
