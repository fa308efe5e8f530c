"""How long a runner process takes to end after its last result is written, which the host waits
for before the steps after its session start: the interpreter's own exit against
runners/harness/main.py `leave` (exit handlers, then os._exit).

    python3 benchmarks/runner_exit.py [--device cuda] [--rounds 3]

Each process loads ResNet-50 (torchvision; without it a small convnet), runs it eagerly and, for
"compiled", through torch.compile (on a GPU mode="reduce-overhead", as nav-orch's compiled
variants), prints the time, then ends one way or the other. The rounds alternate the two ways;
prints the seconds from that print to the process's end, per case and way.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import sys, time, torch
device, compiled, way = sys.argv[1], sys.argv[2] == "compiled", sys.argv[3]
try:
    import torchvision
    model = torchvision.models.resnet50().eval().to(device)
except ImportError:  # a smoke test of this script where torchvision is missing
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval().to(device)
x = torch.randn(8, 3, 224, 224, device=device)
with torch.inference_mode():
    if compiled:
        model = torch.compile(model, mode="reduce-overhead" if device == "cuda" else None)
    for _ in range(3):
        model(x)
if device == "cuda":
    torch.cuda.synchronize()
print(time.time(), flush=True)
if way == "leave":
    from runners.harness.main import leave
    leave(0)
"""


def seconds_to_end(device: str, case: str, way: str) -> float:
    process = subprocess.Popen([sys.executable, "-c", CHILD, device, case, way], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[1])
    printed = float(process.stdout.readline())
    process.wait()
    return time.time() - printed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    for case in ("eager", "compiled"):
        ends: dict[str, list[float]] = {"exit": [], "leave": []}
        for index in range(arguments.rounds):
            for way in ("exit", "leave") if index % 2 == 0 else ("leave", "exit"):
                ends[way].append(seconds_to_end(arguments.device, case, way))
        print(f"{arguments.device} {case}: " + ", ".join(
            f"{way} {statistics.median(values):.2f} s (range {min(values):.2f}-{max(values):.2f})"
            for way, values in ends.items()), flush=True)


if __name__ == "__main__":
    main()
