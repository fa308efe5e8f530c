"""nav-orch on a GPU against a hand-tuned baseline, side by side in one run.

    python benchmarks/gpu_resnet50.py --workspace /tmp/nav-resnet50 [--executor local] [--out result.json]

1. Times the whole `nav-orch optimize` of ResNet-50 (torchvision, random weights) over
   every PyTorch format and precision the GPU host offers (the host process imports no
   framework; with `--executor local` the runners are subprocesses of `--python`).
2. Then, in one process of `--python`, measures nav-orch's chosen variant and the baseline
   `torch.compile(model.half(), mode="reduce-overhead")` with the same timing loop as the
   runners (runners/measure.py: calls synchronized, stable windows), batch 64 and batch 1.
3. Prints throughput at batch 64, their ratio, latency at batch 1, and the wall time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = f"{ROOT}/examples/resnet50.py:make_resnet50"


def optimize(args: argparse.Namespace) -> tuple[float, dict]:
    command = [sys.executable, "-m", "orchestrator.cli", "optimize", MODEL, "--input", "x:8,3,224,224:float32",
               "--gpus", args.gpus, "--images", args.images, "--executor", args.executor,
               "--workspace", str(args.workspace), "--batch-sizes", "1,8,64", "--progress", "plain", "--json",
               "--force"]
    if args.executor == "local":  # nav-orch refuses --python with Docker (containers bring their own)
        command += ["--python", args.python]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"nav-orch optimize failed with exit code {run.returncode}")
    return wall, json.loads(run.stdout)


def measure(workspace: Path, variant: str) -> dict:
    """Runs inside `--python` (it imports torch): the chosen variant, then the baseline."""
    import torch

    sys.path.insert(0, str(ROOT))
    from examples.resnet50 import make_resnet50
    from runners import torch_runner
    from runners.measure import time_calls
    from runners.protocol import ProfileSettings, read_job

    settings = ProfileSettings()
    job = read_job(workspace / "jobs" / f"profile-{variant}" / "job.json")
    chosen = torch_runner.load_variant(job)
    baseline = torch.compile(make_resnet50().half().cuda(), mode="reduce-overhead")
    figures = {}
    with torch.inference_mode():
        for name, model, dtype in (("nav-orch", chosen, torch_runner.DTYPES[job.precision]),
                                   ("baseline", baseline, torch.float16)):
            for batch in (64, 1):
                x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)

                def run() -> None:
                    model(x)  # noqa: B023 - run in this iteration
                    torch.cuda.synchronize()

                entry = time_calls(run, settings, batch)
                figures[f"{name}_bs{batch}"] = {"throughput": entry.throughput, "p50_ms": entry.latency_ms.p50,
                                                 "stable": entry.stable}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nav-resnet50"))
    parser.add_argument("--executor", default="local")
    parser.add_argument("--python", default="python3", help="the Python holding torch (local executor)")
    parser.add_argument("--gpus", default="all")
    parser.add_argument("--images", default="25.10")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--measure", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.workspace, args.measure)))
        return

    wall, results = optimize(args)
    best = results["best"]
    measured = subprocess.run([args.python, __file__, "--workspace", str(args.workspace), "--measure", best],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    figures = json.loads(measured.stdout.strip().splitlines()[-1])
    nav64, base64 = figures["nav-orch_bs64"], figures["baseline_bs64"]
    nav1, base1 = figures["nav-orch_bs1"], figures["baseline_bs1"]
    gpu = results["environment"]["gpus"][0] if results["environment"]["gpus"] else {}
    rows = [
        ("chosen variant", best, "torch.compile fp16 reduce-overhead", ""),
        ("throughput bs64 (img/s)", f"{nav64['throughput']:,.0f}", f"{base64['throughput']:,.0f}",
         f"{nav64['throughput'] / base64['throughput']:.3f}"),
        ("p50 latency bs1 (ms)", f"{nav1['p50_ms']:.3f}", f"{base1['p50_ms']:.3f}",
         f"{nav1['p50_ms'] / base1['p50_ms']:.3f}"),
        ("wall time of optimize (s)", f"{wall:.1f}", "-", ""),
    ]
    print(f"GPU: {gpu.get('name', '?')} (driver {gpu.get('driver', '?')}, SM clock {gpu.get('sm_clock_mhz')} MHz "
          f"of {gpu.get('max_sm_clock_mhz')})")
    print(f"{'':28}{'nav-orch':>24}{'baseline':>38}{'ratio':>8}")
    for label, ours, theirs, ratio in rows:
        print(f"{label:28}{ours:>24}{theirs:>38}{ratio:>8}")
    print("variants:")
    for variant in results["variants"]:
        big = max(variant["profile"], key=lambda e: e["batch_size"]) if variant["profile"] else None
        figure = f"{big['throughput']:,.0f} img/s at bs{big['batch_size']}" if big else variant["error"] or ""
        print(f"  {variant['name']:34} {variant['status']:8} {figure}")
    if args.out:
        args.out.write_text(json.dumps({"wall_s": wall, "best": best, "figures": figures, "gpu": gpu,
                                        "variants": results["variants"], "jobs": results["jobs"]}, indent=2))


if __name__ == "__main__":
    main()
