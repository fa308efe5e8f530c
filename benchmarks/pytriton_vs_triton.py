"""One variant served by PyTriton, measured with perf_analyzer next to its Triton-served and in-runner figures.

    nav-orch optimize examples/two_heads.py:make_two_heads --input image:4,32:float32 --input mask:4,8:float32 \
        --images cpu --gpus none --workspace /tmp/ws --formats onnx --batch-sizes 1,4 --triton-concurrency 1,2
    python benchmarks/pytriton_vs_triton.py /tmp/ws [--variant NAME] [--concurrency 1,2] [--out pytriton.json]

The Triton and in-runner figures are those the optimize run recorded in results.json (its Triton stage
must have served the variant: the best, or every variant with --triton-all). PyTriton serves the same
model folder (Triton's Python-backend model: the same artifact and loader) through
`nav-orch serve --server pytriton`'s server class, and perf_analyzer measures it with the Triton
stage's own code (orchestrator/triton/perf_analyzer.py: the same CSV reading and windows), at the
batch sizes and concurrencies the Triton stage measured. Prints a table; `--out` gets the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.config import TritonSettings  # noqa: E402
from orchestrator.containers import engine  # noqa: E402
from orchestrator.run.runner_output import reference_io, reference_samples  # noqa: E402
from orchestrator.run.workspace import Workspace  # noqa: E402
from orchestrator.triton.perf_analyzer import PerfAnalyzer, write_input_data  # noqa: E402
from orchestrator.triton.pytriton import PyTritonServer  # noqa: E402
from orchestrator.triton.serve import pick_variant, write_variant  # noqa: E402
from orchestrator.triton.stage import release_of, triton_images  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--variant", help="default: the best")
    parser.add_argument("--concurrency", help="default: those the Triton stage measured")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    workspace = Workspace(args.workspace)
    results = workspace.read_results()
    variant = pick_variant(results, args.variant)
    triton_runs = [run for run in (results.triton.runs if results.triton else []) if run.variant == variant.name]
    if not triton_runs:
        raise SystemExit(f"{variant.name}: the optimize run's Triton stage did not serve it (rerun with --triton-all)")
    concurrency = ([int(c) for c in args.concurrency.split(",")] if args.concurrency
                   else sorted({run.concurrency for run in triton_runs}))
    batch_sizes = sorted({run.batch_size for run in triton_runs})
    io = reference_io(workspace)
    image, _ = triton_images(release_of(results))
    client = engine.connect()
    run_id = uuid.uuid4().hex[:12]
    folder = write_variant(workspace.triton / "pytriton", variant, workspace, io, {"python"}, [], print)
    settings = TritonSettings(concurrency=concurrency)
    perf_folder = workspace.triton / "pytriton-perf"
    perf = PerfAnalyzer(partial(engine.run_to_exit, client), image, run_id, perf_folder, settings)
    names = [spec.name for spec in io.inputs]
    input_data = write_input_data(reference_samples(workspace), names, True, perf.folder / f"{variant.name}-input.json")
    measured = []
    try:
        with PyTritonServer(client, image, folder, run_id, workspace.triton / "pytriton-bench.log", "none",
                            "127.0.0.1") as server:
            for batch_size in batch_sizes:
                for streams in concurrency:
                    point, _ = perf.measure(variant.name, batch_size, streams, server.grpc_url, input_data)
                    measured.append({"batch_size": batch_size, "concurrency": streams, "throughput": point.throughput,
                                     "p50_ms": point.latency_ms.p50, "p99_ms": point.latency_ms.p99,
                                     "stable": point.stable})
    finally:
        engine.remove_labelled(client, run_id)
    rows = []
    print(f"{variant.name} ({image}); throughput in samples/s, latency p50 in ms")
    print(f"{'batch':>5} {'conc':>4} | {'in-runner':>18} | {'Triton':>18} | {'PyTriton':>18}")
    for point in measured:
        runner = next((e for e in variant.profile if e.batch_size == point["batch_size"]), None)
        triton = next((r for r in triton_runs if r.batch_size == point["batch_size"]
                       and r.concurrency == point["concurrency"]), None)
        row = {**point, "runner_throughput": runner.throughput if runner else None,
               "runner_p50_ms": runner.latency_ms.p50 if runner else None,
               "triton_throughput": triton.throughput if triton else None,
               "triton_p50_ms": triton.latency_ms.p50 if triton else None}
        rows.append(row)
        print(f"{point['batch_size']:>5} {point['concurrency']:>4} | {cell(row, 'runner')} | {cell(row, 'triton')} | "
              f"{point['throughput']:>9,.0f} {point['p50_ms']:>8.3f}")
    if args.out:
        args.out.write_text(json.dumps({"variant": variant.name, "image": image, "rows": rows}, indent=1))
    return 0


def cell(row: dict, prefix: str) -> str:
    if row[f"{prefix}_throughput"] is None:
        return f"{'-':>18}"
    return f"{row[f'{prefix}_throughput']:>9,.0f} {row[f'{prefix}_p50_ms']:>8.3f}"


if __name__ == "__main__":
    sys.exit(main())
