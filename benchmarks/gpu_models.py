"""nav-orch on a GPU against hand-tuned baselines, ResNet-50 and BERT-base, side by side in one run.

    python benchmarks/gpu_models.py --workspace /tmp/nav-gpu-models [--models resnet50,bert-base]
        [--executor local] [--python python3] [--gpus 1 --compare-gpus all] [--out result.json]

The models are bundled factories with random weights (nothing is downloaded):
  resnet50   examples/resnet50.py:make_resnet50 (torchvision), input x float32 (batch, 3, 224, 224)
  bert-base  examples/bert_base.py:make_bert_base (transformers BertModel(BertConfig()), returning the
             last hidden state), input input_ids int64 (batch, 128)
torchvision and transformers are needed only in `--python`, the runners' Python: the host process
imports no framework.

For each model, in its own folder of `--workspace`:
1. Times the whole `nav-orch optimize` over nav-orch's default search on the GPU (every PyTorch
   format, precision and memory format the host offers, less the cuts it says why it made; with
   `--executor local`, the default, the runners are subprocesses of `--python`).
2. Then, in one process of `--python`, measures nav-orch's chosen variant (its inputs in the
   variant's precision and memory format, as the runner profiles it) and the hand-tuned baseline
   with the same timing loop as the runners (runners/harness/measure.py time_calls: calls synchronized,
   stable windows), at batch 64 and batch 1. The baselines are the best recipes known:
     resnet50   torch.compile(model.half().cuda().to(memory_format=torch.channels_last),
                mode="reduce-overhead"), its inputs fp16 channels_last
     bert-base  torch.compile(model.to(torch.bfloat16).cuda(), mode="reduce-overhead"), the ids int64
   Both compile one static graph per batch size, as nav-orch's own torch.compile variants do
   (runners/toolchains/torch_runner.py load_variant).
3. Prints a table per model: throughput at batch 64, the ratio, latency at batch 1, the wall time,
   and, when the run's Triton stage served the choice (with the local executor: a tritonserver of the
   host, `--tritonserver`, `--triton-python`), its best served throughput at batch 64 over the fastest
   verified variant's in-runner throughput there (`models.<name>.served`).

`--out` gets one JSON record for the run (rewritten after each model, so a failure keeps the models
before it): date, command line, GPU, and for each model `models.<name>` with `best`, `wall_s`,
`ratio_bs64` (nav-orch's throughput over the baseline's at batch 64, one pass each), `paired_bs64`
(both then timed alternated, 20 rounds of 10 calls each, as nav-orch's confident selection does: the
median of the baseline's time over nav-orch's per round, above 1 where nav-orch is faster, with its
order-statistic interval, orchestrator/run/paired.py), `p50_bs1_ms` ({"nav-orch": ms, "baseline":
ms}), the raw figures, nav-orch's variants, its selection and its timeline. A model whose optimize
or measurement failed has `error` instead, and the script exits with status 1.

`--compare-gpus all` (with `--gpus 1`) runs each model's optimize a second time on that many GPUs
(issue "Several GPUs, measured") and records `models.<name>.compare`: both runs' `phases` (wall time,
the reference job, the conversion phase after it, the GPUs used, and how many GPU jobs the runners
reported on the GPU they were placed on), the conversion phase's speed-up, and `profile_spread`: each
variant's throughput there over the first run's, with the GPU it ran on. `--no-baseline` skips the
side-by-side measurement.

`--device cpu` is for smoke tests of this script only: tiny models (`--size tiny`: ResNet-50 on
64x64 images, a 2-layer BERT with hidden size 32), nav-orch restricted to `--formats
torchscript-trace --batch-sizes 1,2 --gpus none --images cpu`, and timings at batch 2 and 1 on the
CPU (keys then `ratio_bs2`, `p50_bs1_ms`); a few minutes on 2 cores, e.g.
    python benchmarks/gpu_models.py --device cpu --python .venv-inplace/bin/python \\
        --workspace /tmp/bench-models --out /tmp/bench-models.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from model_runs import (
    ROOT,
    chosen_models,
    exit_if_any_failed,
    model_failed,
    new_record,
    run_models,
    save,
    timed_optimize,
)

sys.path.insert(0, str(ROOT))
from orchestrator.run.paired import paired  # noqa: E402 - the repository's root on the path first

BERT_VOCAB = 30522


@dataclass(frozen=True)
class Model:
    factory: str  # file:factory, relative to the checkout
    input: str  # the factory's forward() parameter
    shapes: dict[str, tuple[int, ...]]  # one sample's shape (no batch axis) by --size
    model_args: dict[str, list[str]]  # nav-orch --model-arg by --size
    vocab: Optional[int]  # int64 ids below it; None: a float32 image
    library: str  # the package the factory builds it with (its version goes into the record)
    unit: str
    baseline: str  # the recipe, as printed
    baseline_precision: str  # runners/serving/variant_loader.py PRECISION_DTYPES
    baseline_memory_format: str


MODELS = {
    "resnet50": Model(
        factory="examples/resnet50.py:make_resnet50", input="x",
        shapes={"full": (3, 224, 224), "tiny": (3, 64, 64)}, model_args={"full": [], "tiny": []}, vocab=None,
        library="torchvision", unit="img/s",
        baseline='torch.compile(model.half().cuda().to(memory_format=torch.channels_last), mode="reduce-overhead")',
        baseline_precision="fp16", baseline_memory_format="channels_last"),
    "bert-base": Model(
        factory="examples/bert_base.py:make_bert_base", input="input_ids",
        shapes={"full": (128,), "tiny": (128,)}, model_args={"full": [], "tiny": ["size=tiny"]}, vocab=BERT_VOCAB,
        library="transformers", unit="seq/s",
        baseline='torch.compile(model.to(torch.bfloat16).cuda(), mode="reduce-overhead")',
        baseline_precision="bf16", baseline_memory_format="contiguous"),
}


def batches(args: argparse.Namespace) -> tuple[int, int]:
    """The batch sizes measured: a large one for throughput, then batch 1 for latency."""
    return (64, 1) if args.device == "cuda" else (2, 1)


def optimize(args: argparse.Namespace, name: str, gpus: str, folder: str) -> tuple[float, dict]:
    model = MODELS[name]
    verify_batch = 8 if args.device == "cuda" else 2
    shape = ",".join(str(d) for d in (verify_batch, *model.shapes[args.size]))
    dtype = "int64" if model.vocab else "float32"
    command = [sys.executable, "-m", "orchestrator.cli", "optimize", f"{ROOT}/{model.factory}",
               "--input", f"{model.input}:{shape}:{dtype}", "--gpus", gpus, "--images", args.images,
               "--executor", args.executor, "--workspace", str(args.workspace / folder),
               "--batch-sizes", "1,8,64" if args.device == "cuda" else "1,2", "--progress", "plain", "--json",
               "--force"]
    for pair in model.model_args[args.size]:
        command += ["--model-arg", pair]
    if args.formats:
        command += ["--formats", args.formats]
    if args.memory_formats:
        command += ["--memory-formats", args.memory_formats]
    if args.executor == "local":  # nav-orch refuses --python with Docker (containers bring their own)
        command += ["--python", args.python]
    if args.no_triton:
        command += ["--no-triton"]
    if args.tritonserver:
        command += ["--tritonserver", args.tritonserver]
    if args.triton_python:
        command += ["--triton-python", args.triton_python]
    wall, run = timed_optimize(command)
    if run.returncode != 0:
        raise RuntimeError(f"nav-orch optimize failed with exit code {run.returncode}")
    results = json.loads(run.stdout)
    if not results["best"]:
        raise RuntimeError("nav-orch optimize chose no variant: none verified")
    return wall, results


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Runs inside `--python` (it imports torch): the chosen variant, then the baseline, of one model."""
    import torch

    sys.path.insert(0, str(ROOT))
    from runners.contract.formats import FORMATS
    from runners.contract.protocol import ProfileSettings, read_job
    from runners.harness.measure import time_calls, time_interleaved
    from runners.serving.variant_loader import torch_dtype
    from runners.toolchains import torch_runner

    model = MODELS[args.models]
    job = read_job(args.workspace / args.models / "jobs" / f"profile-{args.measure}" / "job.json")
    runner = FORMATS[job.format_name()].runner
    if runner != "torch":
        raise SystemExit(f"{args.measure} is a {job.format} variant of nav-orch's {runner} runner: "
                         "this benchmark loads the torch runner's variants only")
    device = "cuda" if args.device == "cuda" else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    generator = torch.Generator().manual_seed(0)
    samples = {}
    for batch in batches(args):
        shape = (batch, *model.shapes[args.size])
        array = (torch.randint(0, model.vocab, shape, generator=generator, dtype=torch.int64) if model.vocab
                 else torch.randn(shape, generator=generator))
        samples[batch] = {model.input: array.numpy()}

    def chosen() -> tuple[Any, Any]:
        # The variant as nav-orch's runner loads and profiles it: inputs in the job's device,
        # precision and memory format (torch_runner.profile).
        return torch_runner.load_variant(job), lambda arrays: torch_runner.job_tensors(arrays, job)

    def baseline() -> tuple[Any, Any]:
        # One static graph per batch size, as the runner compiles nav-orch's variants (measured faster
        # than dynamo's automatic dynamic shapes); the same factory and arguments as nav-orch's run.
        torch._dynamo.config.automatic_dynamic_shapes = False
        source = torch_runner.load_source(job).to(device, torch_dtype(model.baseline_precision))
        if model.baseline_memory_format == "channels_last":
            source = source.to(memory_format=torch.channels_last)
        return (torch.compile(source, mode="reduce-overhead"),
                lambda arrays: torch_runner.to_tensors(arrays, device, model.baseline_precision,
                                                       model.baseline_memory_format))

    def call(built: tuple[Any, Any], batch: int) -> Callable[[], None]:
        runnable, tensors_of = built
        tensors = tensors_of(samples[batch])

        def run() -> None:
            runnable(*tensors)
            sync()

        return run

    figures: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        built = {"nav-orch": chosen(), "baseline": baseline()}  # both fit at once: ResNet-50, BERT-base
        for name, each in built.items():
            for batch in samples:
                entry = time_calls(call(each, batch), ProfileSettings(), batch)
                figures[f"{name}_bs{batch}"] = {"throughput": entry.throughput, "p50_ms": entry.latency_ms.p50,
                                                 "stable": entry.stable}
        # Then alternated, as nav-orch's confident selection times its close candidates: one pass
        # each cannot separate graphs closer than the 5-7 % two timings of one graph differ by.
        big = max(samples)
        rounds = time_interleaved({name: call(each, big) for name, each in built.items()}, ProfileSettings())
    versions = {"torch": torch.__version__, model.library: importlib.import_module(model.library).__version__}
    return {"figures": figures, "rounds": rounds, "versions": versions}


def gpu_line(gpu: dict) -> str:
    if not gpu:
        return "GPU: none (a CPU smoke test: the figures mean nothing)"
    return (f"GPU: {gpu.get('name', '?')} (driver {gpu.get('driver', '?')}, SM clock {gpu.get('sm_clock_mhz')} MHz "
            f"of {gpu.get('max_sm_clock_mhz')})")


def report(name: str, entry: dict, results: dict, big: int) -> None:
    model = MODELS[name]
    figures = entry["figures"]
    nav_big, base_big = figures[f"nav-orch_bs{big}"], figures[f"baseline_bs{big}"]
    nav1, base1 = figures["nav-orch_bs1"], figures["baseline_bs1"]
    rows = [
        (f"throughput bs{big} ({model.unit})", f"{nav_big['throughput']:,.0f}", f"{base_big['throughput']:,.0f}",
         f"{entry[f'ratio_bs{big}']:.3f}"),
        ("p50 latency bs1 (ms)", f"{nav1['p50_ms']:.3f}", f"{base1['p50_ms']:.3f}",
         f"{nav1['p50_ms'] / base1['p50_ms']:.3f}"),
        ("wall time of optimize (s)", f"{entry['wall_s']:.1f}", "-", ""),
    ]
    pair = entry.get(f"paired_bs{big}")
    if pair:
        rows[1:1] = [(f"paired bs{big}, {pair['rounds']} rounds", "-", "-", f"{pair['ratio']:.3f}")]
    served = entry.get("served")
    if served and served.get("throughput"):
        rows[1:1] = [(f"served bs{big}, c{served['concurrency']} ({model.unit})", f"{served['throughput']:,.0f}", "-",
                      f"{served['of_in_runner']:.3f}")]
    print(f"\n== {name}: {model.factory}")
    print(f"nav-orch's choice: {entry['best']}")
    print(f"baseline:          {model.baseline}")
    print(f"{'':30}{'nav-orch':>12}{'baseline':>12}{'ratio':>8}")
    for label, ours, theirs, ratio in rows:
        print(f"{label:30}{ours:>12}{theirs:>12}{ratio:>8}")
    if pair:
        print(f"paired: the baseline's time over nav-orch's per alternated round, median {pair['ratio']:.3f}, "
              f"{pair['coverage'] * 100:.0f} % interval {pair['low']:.3f}-{pair['high']:.3f}")
    if served:
        print(f"served: {served['variant']} by {served['server']} ({served['client']}), ready in "
              f"{served['ready_s'] or 0:.1f} s; ratio: served over the fastest variant's in-runner figure"
              + (f"; stage error: {served['error']}" if served.get("error") else ""))
    print("variants:")
    for variant in results["variants"]:
        top = max(variant["profile"], key=lambda e: e["batch_size"]) if variant["profile"] else None
        figure = f"{top['throughput']:,.0f} {model.unit} at bs{top['batch_size']}" if top else variant["error"] or ""
        print(f"  {variant['name']:44} {variant['status']:8} {figure}")


def served_figure(results: dict, big: int) -> Optional[dict[str, Any]]:
    """The Triton stage's best served throughput at batch `big` (over its concurrencies) beside the
    fastest verified variant's in-runner throughput there; None when the stage did not run."""
    triton = results.get("triton")
    if not triton:
        return None
    runs = [r for r in triton["runs"] if r["batch_size"] == big]
    top = max(runs, key=lambda r: r["throughput"]) if runs else None
    in_runner = max((e["throughput"] for v in results["variants"] if v["status"] == "ok" for e in v["profile"]
                     if e["batch_size"] == big), default=None)
    return {"variant": top["variant"] if top else None, "server": triton["image"], "client": triton.get("client"),
            "ready_s": triton["ready_s"], "error": triton["error"],
            "concurrency": top["concurrency"] if top else None, "throughput": top["throughput"] if top else None,
            "p99_ms": top["latency_ms"]["p99"] if top else None,
            "server_compute_ms": top["server_compute_ms"] if top else None, "in_runner": in_runner,
            "of_in_runner": top["throughput"] / in_runner if top and in_runner else None, "runs": triton["runs"]}


def phases(results: dict, wall: float) -> dict[str, Any]:
    """Where a run's time went, from its timeline (results.json): the reference job, then the
    conversion phase (every export, conversion, verification and profile after it), what the
    timeline does not hold (`outside_jobs_s`: the host's start before the timeline's zero and its
    end after the last job, the runner processes' exits included), and which GPUs the jobs ran on,
    with the runners' evidence that each ran on the GPU it was placed on."""
    timeline = results["timeline"]
    reference_end = max((t["end_s"] for t in timeline if t["kind"] == "reference"), default=0.0)
    last_end = max((t["end_s"] for t in timeline), default=0.0)
    on_placed = [t["on_placed_gpu"] for t in timeline if t["placement"] != "CPU"]
    return {"wall_s": wall, "reference_s": reference_end, "conversion_s": last_end - reference_end,
            "outside_jobs_s": wall - last_end,
            "gpus_used": sorted({t["placement"] for t in timeline if t["placement"] != "CPU"}),
            "gpu_jobs": len(on_placed), "gpu_jobs_on_placed_gpu": on_placed.count(True),
            "gpu_jobs_elsewhere": on_placed.count(False)}


def top_throughputs(results: dict) -> dict[str, float]:
    """Each verified variant's throughput at its largest profiled batch."""
    return {v["name"]: max(v["profile"], key=lambda e: e["batch_size"])["throughput"]
            for v in results["variants"] if v["profile"]}


def compare_gpus(args: argparse.Namespace, name: str, entry: dict, results: dict) -> None:
    """The same optimize again on `--compare-gpus` (issue "Several GPUs, measured"): both runs' phases,
    the conversion phase's speed-up, and how each variant's profile on its GPU there compares with
    the first run's (the same GPU model should agree within a few percent)."""
    try:
        wall, other = optimize(args, name, args.compare_gpus, f"{name}-gpus-{args.compare_gpus}")
    except RuntimeError as error:
        entry["compare_error"] = str(error)
        print(f"\n== {name} on --gpus {args.compare_gpus}: {error}", file=sys.stderr)
        return
    first, second = entry["phases"], phases(other, wall)
    placed = {t["job"].removeprefix("profile-"): t["placement"] for t in other["timeline"] if t["kind"] == "profile"}
    mine, theirs = top_throughputs(results), top_throughputs(other)
    spread = {variant: {"ratio": theirs[variant] / mine[variant], "placement": placed.get(variant)}
              for variant in mine if variant in theirs}
    ratios = [s["ratio"] for s in spread.values()]
    entry["compare"] = {"gpus": args.compare_gpus, "phases": second, "best": other["best"],
                        "conversion_speedup": first["conversion_s"] / second["conversion_s"],
                        "profile_spread": spread,
                        "profile_ratio_range": [min(ratios), max(ratios)] if ratios else None}
    print(f"\n== {name}: --gpus {args.gpus} against --gpus {args.compare_gpus}")
    print(f"{'':34}{'--gpus ' + args.gpus:>14}{'--gpus ' + args.compare_gpus:>14}")
    for label, key in (("wall time of optimize (s)", "wall_s"), ("reference (s)", "reference_s"),
                       ("conversion phase (s)", "conversion_s")):
        print(f"{label:34}{first[key]:>14.1f}{second[key]:>14.1f}")
    print(f"{'GPUs used':34}{len(first['gpus_used']):>14}{len(second['gpus_used']):>14}")
    print(f"{'GPU jobs on their placed GPU':34}{first['gpu_jobs_on_placed_gpu']:>8}/{first['gpu_jobs']:<5}"
          f"{second['gpu_jobs_on_placed_gpu']:>8}/{second['gpu_jobs']:<5}")
    print(f"conversion phase speed-up: {entry['compare']['conversion_speedup']:.2f}x")
    for variant, figure in spread.items():
        print(f"  {variant:44} {figure['ratio']:.3f} on {figure['placement']}")


def run_model(args: argparse.Namespace, name: str, record: dict, checkpoint: Callable[[], None]) -> None:
    """Optimize and measure one model; its entry goes into `record["models"]`, saved after each part
    (a run cut short by a time limit keeps what it measured)."""
    big, _ = batches(args)
    try:
        wall, results = optimize(args, name, args.gpus, name)
    except RuntimeError as error:
        model_failed(record, name, MODELS[name].factory, error)
        return
    gpus = results["environment"]["gpus"]
    record["gpu"] = record["gpu"] or (gpus[0] if gpus else {})
    entry: dict[str, Any] = {"factory": MODELS[name].factory, "baseline": MODELS[name].baseline,
                             "best": results["best"], "wall_s": wall, "phases": phases(results, wall),
                             "variants": results["variants"], "jobs": results["jobs"],
                             # Where the time went and why the choice: the record alone carries them
                             # (a device call returns few files).
                             "selection": results.get("selection"), "timeline": results["timeline"]}
    entry["served"] = served_figure(results, big)
    record["models"][name] = entry
    checkpoint()
    if not args.no_baseline:
        measure_side_by_side(args, name, entry, results, record["gpu"])
        checkpoint()
    if args.compare_gpus:
        compare_gpus(args, name, entry, results)


def measure_side_by_side(args: argparse.Namespace, name: str, entry: dict, results: dict, gpu: dict) -> None:
    """nav-orch's choice against the hand-tuned baseline, in one process of `--python`."""
    big, _ = batches(args)
    measured = subprocess.run([args.python, __file__, "--workspace", str(args.workspace), "--models", name,
                               "--device", args.device, "--size", args.size, "--measure", results["best"]],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if measured.returncode != 0:
        entry["error"] = f"the measurement failed with exit code {measured.returncode}"
        print(f"\n== {name}: {entry['error']}", file=sys.stderr)
        return
    output = json.loads(measured.stdout.strip().splitlines()[-1])
    figures = output["figures"]
    nav_orch, hand_tuned = figures[f"nav-orch_bs{big}"], figures[f"baseline_bs{big}"]
    entry[f"ratio_bs{big}"] = nav_orch["throughput"] / hand_tuned["throughput"]
    (against,) = paired(output["rounds"], "nav-orch")  # the baseline's time over nav-orch's, per round
    entry[f"paired_bs{big}"] = {"ratio": against.ratio, "low": against.interval.low, "high": against.interval.high,
                                "coverage": against.interval.coverage, "rounds": against.rounds}
    entry["p50_bs1_ms"] = {"nav-orch": figures["nav-orch_bs1"]["p50_ms"],
                           "baseline": figures["baseline_bs1"]["p50_ms"]}
    entry["figures"] = figures
    entry["versions"] = output["versions"]
    print(gpu_line(gpu))
    report(name, entry, results, big)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nav-gpu-models"),
                        help="one folder per model inside it")
    parser.add_argument("--executor", default="local")
    parser.add_argument("--python", default="python3", help="the Python holding torch (local executor)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: smoke tests of this script only")
    parser.add_argument("--size", choices=("full", "tiny"), help="default: full on cuda, tiny on cpu")
    parser.add_argument("--gpus", help="nav-orch --gpus (default: all on cuda, none on cpu)")
    parser.add_argument("--images", help="nav-orch --images (default: 25.10 on cuda, cpu on cpu)")
    parser.add_argument("--formats", help="nav-orch --formats (default: all on cuda, torchscript-trace on cpu)")
    parser.add_argument("--memory-formats", help="nav-orch --memory-formats (default: nav-orch's)")
    parser.add_argument("--compare-gpus", metavar="GPUS",
                        help="optimize each model again with this --gpus (e.g. all against --gpus 1), and compare")
    parser.add_argument("--no-triton", action="store_true", help="nav-orch --no-triton: the search alone")
    parser.add_argument("--no-baseline", action="store_true", help="optimize only: no side-by-side measurement")
    parser.add_argument("--tritonserver", help="nav-orch --tritonserver: the local Triton stage's server (default: "
                        "nvidia-pytriton's in --python; without one the stage is skipped)")
    parser.add_argument("--triton-python", help="nav-orch --triton-python: the served model's Python (numpy<2)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--measure", metavar="VARIANT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    args.size = args.size or ("full" if on_gpu else "tiny")
    args.gpus = args.gpus or ("all" if on_gpu else "none")
    args.images = args.images or ("25.10" if on_gpu else "cpu")
    args.formats = args.formats or (None if on_gpu else "torchscript-trace")
    if args.measure:
        print(json.dumps(measure(args)))
        return
    names = chosen_models(parser, args.models, MODELS)
    record = new_record(device=args.device, size=args.size, batch_sizes=list(batches(args)), gpu={})
    run_models(names, lambda name: run_model(args, name, record, lambda: save(record, args.out)), record, args.out)
    exit_if_any_failed(record)


if __name__ == "__main__":
    main()
