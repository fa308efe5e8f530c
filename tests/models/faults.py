"""Models that misbehave on purpose, for the fault-injection tests.

The `*_on_trace` models behave while the reference runs and misbehave only inside
torch.jit.trace, so one variant's runner fails while the other variants go on.
"""
import ctypes
import socket
import time
from pathlib import Path

import torch
from torch import nn


class OnTrace(nn.Module):
    def __init__(self, fault):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.fault = fault

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            self.fault()
        return self.linear(x)


def _segfault():
    ctypes.string_at(0)


def _hang():
    time.sleep(3600)


def _allocate():
    # Touch every page, so the memory is really used, past any small limit.
    hog = bytearray(3 * 1024**3)
    for i in range(0, len(hog), 4096):
        hog[i] = 1


def make_segfault_on_trace():
    return OnTrace(_segfault).eval()


def make_hang_on_trace():
    return OnTrace(_hang).eval()


def make_oom_on_trace():
    return OnTrace(_allocate).eval()


def make_slow_on_trace(seconds: float = 4.0):
    return OnTrace(lambda: time.sleep(seconds)).eval()


def make_writes_input():
    (Path(__file__).parent / "planted.txt").write_text("the sandbox let me write here")
    return nn.Linear(4, 2).eval()


def make_opens_network(port: int):
    interfaces = sorted(name for _, name in socket.if_nameindex())
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        conn.sendall(f"escaped; interfaces {interfaces}".encode())
    return nn.Linear(4, 2).eval()


def make_nan_outputs():
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    return model.eval()




def _cgroup_memory_limit() -> str:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # v2, v1
        if Path(path).exists():
            return Path(path).read_text().strip()
    return "unknown"


def make_says_its_memory_limit():
    """Behaves; says the memory limit of the cgroup it runs in, for the runner's log."""
    print(f"cgroup memory limit: {_cgroup_memory_limit()}", flush=True)
    return nn.Linear(4, 2).eval()


def make_large(width: int = 1024):
    """Behaves; every artifact of it takes about 4 * width**2 bytes (4 MiB at 1024)."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)).eval()
