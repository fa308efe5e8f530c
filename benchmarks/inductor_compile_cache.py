"""Seconds torch.compile (mode="reduce-overhead", unfrozen, static shapes: what nav-orch's
torch-compile-cudagraphs variant does) spends on ResNet-50 per batch shape, on a GPU.

    python3 benchmarks/inductor_compile_cache.py 8,1,64 [--dtype fp16] [--channels-last]
        # one process: prints {"sizes": {batch: seconds}, "wall_s": s}

Each figure is the first three calls at that shape (compile, CUDA-graph warm-up and recording).
Run it with TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR set, cold and again with the caches
another process filled, to see what warming Inductor's caches would save (docs/performance.md).

    python3 benchmarks/inductor_compile_cache.py 1,8,64 --compare --variants fp16,bf16,fp16-cl,bf16-cl \\
        [--rounds 2] [--out compare.json]

compares two arrangements of the same compiles, as many variants compiling at once as a run's
compiled sessions do (issue "Time to result", item 3): "serial", one process per variant compiling
its shapes one after another (what nav-orch's compiled session does), and "parallel", one process
per variant and shape, all at once. Each arrangement starts on empty caches of its own; the
rounds alternate which goes first. It prints each round's wall time (from the first process's
start to the last one's end) and parallel over serial per round, with their median.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DTYPES = ("fp16", "bf16", "fp32")


def compile_shapes(sizes: list[int], dtype_name: str, channels_last: bool) -> dict:
    import torch
    import torchvision

    torch._dynamo.config.automatic_dynamic_shapes = False
    started = time.perf_counter()
    dtype = {"fp16": torch.half, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = torchvision.models.resnet50().eval().to("cuda", dtype).to(memory_format=layout)
    compiled = torch.compile(model, mode="reduce-overhead", backend="inductor")
    seconds = {}
    with torch.inference_mode():
        for batch in sizes:
            x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype).to(memory_format=layout)
            start = time.perf_counter()
            for _ in range(3):
                compiled(x)
            torch.cuda.synchronize()
            seconds[batch] = round(time.perf_counter() - start, 2)
    return {"sizes": seconds, "wall_s": round(time.perf_counter() - started, 2)}


def variant_arguments(variant: str) -> list[str]:
    dtype, _, layout = variant.partition("-")
    if dtype not in DTYPES or layout not in ("", "cl"):
        raise SystemExit(f"--variants: {variant!r} is not DTYPE or DTYPE-cl, DTYPE one of {', '.join(DTYPES)}")
    return ["--dtype", dtype, *(["--channels-last"] if layout else [])]


def arrangement(name: str, variants: list[str], sizes: list[int]) -> list[list[str]]:
    """The processes' command lines: per variant all shapes ("serial"), or one per shape ("parallel")."""
    groups = [sizes] if name == "serial" else [[size] for size in sizes]
    return [[sys.executable, __file__, ",".join(map(str, group)), *variant_arguments(variant)]
            for variant in variants for group in groups]


def caches_in(folder: str) -> dict[str, str]:
    """This process's environment with Inductor's and Triton's caches in `folder`."""
    return {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, "inductor"),
            "TRITON_CACHE_DIR": os.path.join(folder, "triton")}


def run_arrangement(commands: list[list[str]]) -> dict:
    """All the commands at once, each on the same fresh caches: the wall time and each one's figures."""
    with tempfile.TemporaryDirectory(prefix="inductor-compare-") as cache:
        environment = caches_in(cache)
        started = time.perf_counter()
        processes = [subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True)
                     for command in commands]
        outputs = [process.communicate()[0] for process in processes]
        wall = time.perf_counter() - started
    failed = [command for command, process in zip(commands, processes) if process.returncode != 0]
    if failed:
        raise SystemExit(f"compile processes failed: {failed}")
    return {"wall_s": round(wall, 2), "processes": [json.loads(out.strip().splitlines()[-1]) for out in outputs]}


def compare(sizes: list[int], variants: list[str], rounds: int) -> dict:
    records = []
    for index in range(rounds):
        order = ("serial", "parallel") if index % 2 == 0 else ("parallel", "serial")
        record = {name: run_arrangement(arrangement(name, variants, sizes)) for name in order}
        record["parallel_over_serial"] = round(record["parallel"]["wall_s"] / record["serial"]["wall_s"], 3)
        records.append(record)
        print(f"round {index + 1} ({order[0]} first): serial {record['serial']['wall_s']:.1f} s, "
              f"parallel {record['parallel']['wall_s']:.1f} s, parallel/serial {record['parallel_over_serial']:.3f}",
              flush=True)
    ratios = [record["parallel_over_serial"] for record in records]
    print(f"parallel/serial: median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}, "
          f"{rounds} rounds; {len(variants)} variants x {len(sizes)} shapes)")
    return {"sizes": sizes, "variants": variants, "rounds": records,
            "median_parallel_over_serial": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", help="batch sizes, comma-separated, compiled in this order")
    parser.add_argument("--dtype", choices=DTYPES, default="fp16")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compare", action="store_true", help="serial against parallel processes (see above)")
    parser.add_argument("--variants", default="fp16,bf16,fp16-cl,bf16-cl")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out")
    arguments = parser.parse_args()
    sizes = [int(size) for size in arguments.sizes.split(",")]
    if arguments.compare:
        record = compare(sizes, arguments.variants.split(","), arguments.rounds)
    else:
        record = compile_shapes(sizes, arguments.dtype, arguments.channels_last)
    print(json.dumps(record))
    if arguments.out:
        with open(arguments.out, "w") as out:
            json.dump(record, out, indent=1)


if __name__ == "__main__":
    main()
