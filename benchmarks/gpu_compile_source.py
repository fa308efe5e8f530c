"""What a servable compiled variant would cost (issue 29), on a GPU.

    python benchmarks/gpu_compile_source.py --models resnet50 --out compile-source.json

A compiled variant (torch-compile-cudagraphs) is the source module compiled where it runs; a server
has no source module, but could have the variant's ExportedProgram. So, per model in fp16 (ResNet-50
channels_last), at each batch size, timed alternated in one process (rounds of `--calls` back-to-back
calls by CUDA events, A B A B ...; the median per call, and the median and min..max over rounds of B's
speed relative to A):
  A  torch.compile(module, mode="reduce-overhead")               what nav-orch measures today
  B  torch.compile(torch.export(module).module(), same mode)     what a server could load
With `--frozen`, B is instead the module compiled as nav-orch compiled its variants until 2026-12-07
(variant_loader.compile_module, weights frozen, static shapes): freezing's cost or gain, alternated.
Then the time from a fresh process's start to its first call of A at the largest batch size: cold,
and warm with the compile cache artifacts (torch.compiler.save_cache_artifacts) of an earlier
process loaded first. Writes the record to --out. Needs torch with CUDA, torchvision, transformers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from gpu_aoti import build, timed_calls  # noqa: E402 - the same models and timing as the AOTInductor benchmark


def first_call(name: str, size: int, cache: Path, save: bool) -> float:
    """Seconds from this process's start (torch imported) to its first call of A returning, with the
    cache artifacts in `cache` loaded first where it exists; `save`: write them there afterwards."""
    started = time.perf_counter()
    import torch

    if cache.exists():
        torch.compiler.load_cache_artifacts(cache.read_bytes())
    model, make = build(name, torch)
    compiled = torch.compile(model, mode="reduce-overhead")
    with torch.inference_mode():
        inputs = make(size)
        for _ in range(3):  # reduce-overhead records its CUDA graph on a later call than the first
            compiled(*inputs)
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    if save:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is not None:
            cache.write_bytes(artifacts[0])
    return elapsed


def measure(name: str, sizes: list[int], rounds: int, calls: int, as_nav_orch: bool, frozen: bool) -> dict:
    """`as_nav_orch`: both compiled with weights frozen (variant_loader.compile_module), B from its
    program saved and loaded back (torch_runner.export_compiled, load_compiled). `frozen`: B is A's
    module compiled with weights frozen."""
    import torch

    model, make = build(name, torch)
    record: dict = {"model": name, "as_nav_orch": as_nav_orch, "frozen": frozen, "batches": {}}
    with torch.inference_mode():
        if frozen:
            from runners.serving import variant_loader

            twin, _ = build(name, torch)  # a second instance: each compiled apart
            variants = {"A": torch.compile(model, mode="reduce-overhead"),
                        "B": variant_loader.compile_module(twin, "reduce-overhead", freezing=True,
                                                           automatic_dynamic_shapes=False)}
            return timed_variants(torch, record, variants, make, sizes, rounds, calls)
        example = make(2)
        batch = torch.export.Dim("batch", min=1, max=max(sizes))
        program = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example))
        if as_nav_orch:
            from runners.serving import variant_loader

            saved = Path(tempfile.mkdtemp()) / "program.pt2"
            torch.export.save(program, str(saved))
            variants = {name: variant_loader.compile_module(module, "reduce-overhead", freezing=True,
                                                            automatic_dynamic_shapes=False)
                        for name, module in (("A", model), ("B", variant_loader.load_exported_program(str(saved),
                                                                                                     "cuda")))}
        else:
            variants = {"A": torch.compile(model, mode="reduce-overhead"),
                        "B": torch.compile(program.module(), mode="reduce-overhead")}
        return timed_variants(torch, record, variants, make, sizes, rounds, calls)


def timed_variants(torch: Any, record: dict, variants: dict[str, Any], make: Any, sizes: list[int], rounds: int,
                   calls: int) -> dict:
    """A and B at each size: compiled (three calls), then `rounds` alternated rounds of `calls` calls."""
    with torch.inference_mode():
        for size in sizes:
            inputs = make(size)
            entry: dict = {}
            for label, run in variants.items():
                started = time.perf_counter()
                for _ in range(3):
                    run(*inputs)
                torch.cuda.synchronize()
                entry[f"{label}_compile_s"] = time.perf_counter() - started
            times: dict[str, list[float]] = {label: [] for label in variants}
            for _ in range(rounds):
                for label, run in variants.items():
                    times[label].append(timed_calls(torch, run, inputs, calls))
            ratios = [a / b for a, b in zip(times["A"], times["B"])]  # >1: B faster than A
            entry.update({"A_ms": statistics.median(times["A"]), "B_ms": statistics.median(times["B"]),
                          "B_speed_vs_A": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
                          "A_ms_rounds": times["A"], "B_ms_rounds": times["B"]})
            record["batches"][str(size)] = entry
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--as-nav-orch", action="store_true", help="compile both with weights frozen")
    parser.add_argument("--frozen", action="store_true", help="B: A's module compiled with weights frozen")
    parser.add_argument("--skip-first-call", action="store_true", help="no cold and warm start")
    parser.add_argument("--first-call", nargs=4, metavar=("MODEL", "SIZE", "CACHE", "SAVE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call:  # a fresh process of the cold/warm start, called by this script
        name, size, cache, save = args.first_call
        print(json.dumps(first_call(name, int(size), Path(cache), save == "1")))
        return 0
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    records: dict = {"command": " ".join(sys.argv), "models": []}
    for name in args.models.split(","):
        record = measure(name, sizes, args.rounds, args.calls, args.as_nav_orch, args.frozen)
        cache = Path(tempfile.mkdtemp()) / "cache.bin"
        for label, save in () if args.skip_first_call else (("cold_first_call_s", "1"), ("warm_first_call_s", "0")):
            # Each in a fresh process (and inductor's own on-disk cache set aside for it), as a server starts.
            with tempfile.TemporaryDirectory() as own_cache:
                run = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--first-call", name,
                                      str(max(sizes)), str(cache), save], capture_output=True, text=True,
                                     env={**__import__("os").environ, "TORCHINDUCTOR_CACHE_DIR": own_cache})
            record[label] = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else None
            if run.returncode != 0:
                record[f"{label}_error"] = run.stderr[-2000:]
        record["cache_artifacts_mb"] = cache.stat().st_size / 1e6 if cache.exists() else None
        records["models"].append(record)
        args.out.write_text(json.dumps(records, indent=2))
    print(f"{'model':10} {'batch':>5} {'A ms':>8} {'B ms':>8} {'B speed vs A':>22}")
    for record in records["models"]:
        for size, entry in record["batches"].items():
            ratio = entry["B_speed_vs_A"]
            print(f"{record['model']:10} {size:>5} {entry['A_ms']:8.3f} {entry['B_ms']:8.3f} "
                  f"{ratio['median']:8.3f} ({ratio['min']:.3f}-{ratio['max']:.3f})")
        if "cold_first_call_s" in record:
            print(f"{record['model']}: first call of A at batch {max(sizes)} in a fresh process: cold "
                  f"{record['cold_first_call_s']} s, warm (cache artifacts, {record['cache_artifacts_mb']} MB) "
                  f"{record['warm_first_call_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
