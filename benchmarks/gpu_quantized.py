"""Quantized compiled variants on a GPU: bf16 against torchao's int8 and fp8, BERT-base, BERT-large and
ViT-B/16, each in one nav-orch run (issue 15, "Measured").

    python benchmarks/gpu_quantized.py --python /path/to/python --workspace /tmp/nav-quantized
        [--models bert-base,bert-large,vit-b16] [--seq-len 384] [--out result.json]

The models are bundled factories with random weights (nothing is downloaded):
  bert-base   examples/bert_base.py:make_bert_base, input input_ids int64 (batch, --seq-len), output the
              last hidden state (batch, seq, 768)
  bert-large  the same with size=large (24 layers, hidden size 1024)
  vit-b16     examples/vit_b16.py:make_vit_b16 (torchvision vit_b_16()), input x float32
              (batch, 3, 224, 224), output the logits (batch, 1000)
`--python` is the runners' Python: it holds torch, torchao (carried as a wheel), transformers and
torchvision; the host process imports no framework.

Each model is optimized once with
    --formats torch-compile-cudagraphs --precisions bf16,int8,fp8 --batch-sizes 1,64
    --executor local --python PY --gpus 1 --memory-formats contiguous
(contiguous only: channels_last would touch ViT's patch embedding alone and double its run), its
samples 8 random inputs. Each precision's variant is verified (int8 and fp8 by nav-orch's accuracy
budget) and profiled by nav-orch itself; nothing is timed here. Printed per model: throughput at batch
1 and 64 for bf16, int8 and fp8, their ratios against bf16, and the accuracy figures of each output
(cosine similarity, top-1 agreement where the output looks like class scores, max absolute error)
from results.json `variants[].verification.outputs`. A variant that failed or was skipped shows why.

`--out` gets one JSON record for the run, rewritten after each model (a run cut short keeps the models
before it): date, command line, GPU, and for each model `models.<name>` with `best`, `wall_s`, and per
precision `precisions.<p>`: `variant`, `status`, `error`, `throughput` and `p50_ms` by batch size,
`ratio_vs_bf16` by batch size, `accuracy` by output; plus the run's `environment` and all its
variants. A model whose optimize failed has `error` instead, and the script exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from model_runs import ROOT, chosen_models, exit_if_any_failed, model_failed, new_record, run_models, timed_optimize

PRECISIONS = ("bf16", "int8", "fp8")
BATCHES = (1, 64)
VERIFY_BATCH = 8  # the samples: verification runs them, the profiles repeat them to each batch size


@dataclass(frozen=True)
class Model:
    factory: str  # file:factory, relative to the checkout
    input: str  # the factory's forward() parameter
    shape: tuple[int, ...]  # one sample's shape, 0 standing for --seq-len
    dtype: str
    model_args: tuple[str, ...]
    unit: str


MODELS = {
    "bert-base": Model("examples/bert_base.py:make_bert_base", "input_ids", (0,), "int64", (), "seq/s"),
    "bert-large": Model("examples/bert_base.py:make_bert_base", "input_ids", (0,), "int64", ("size=large",), "seq/s"),
    "vit-b16": Model("examples/vit_b16.py:make_vit_b16", "x", (3, 224, 224), "float32", (), "img/s"),
}


def optimize(args: argparse.Namespace, name: str) -> tuple[float, dict]:
    """One nav-orch run of the model over bf16, int8 and fp8; its results.json."""
    model = MODELS[name]
    shape = ",".join(str(d or args.seq_len) for d in (VERIFY_BATCH, *model.shape))
    command = [sys.executable, "-m", "orchestrator.cli", "optimize", f"{ROOT}/{model.factory}",
               "--input", f"{model.input}:{shape}:{model.dtype}",
               "--formats", "torch-compile-cudagraphs", "--precisions", ",".join(args.precisions),
               "--batch-sizes", ",".join(map(str, BATCHES)), "--memory-formats", args.memory_formats,
               "--executor", "local", "--python", args.python, "--gpus", args.gpus,
               "--timeout", str(args.timeout), "--workspace", str(args.workspace / name),
               "--progress", "plain", "--json", "--force"]
    for pair in model.model_args:
        command += ["--model-arg", pair]
    if args.images:
        command += ["--images", args.images]
    wall, run = timed_optimize(command)
    if not run.stdout.strip():
        raise RuntimeError(f"nav-orch optimize failed with exit code {run.returncode} and no results")
    # Exit code 1 (no variant verified) still leaves results worth reading: why each one failed.
    return wall, json.loads(run.stdout)


def variant_of(results: dict, precision: str) -> Optional[dict]:
    """The model's variant in `precision`: the profiled one with the highest throughput at the largest
    batch where several are (other memory formats), else the first there is."""
    ours = [v for v in results["variants"] if v["precision"] == precision]
    profiled = [v for v in ours if v["profile"]]
    if profiled:
        return max(profiled, key=lambda v: max(v["profile"], key=lambda e: e["batch_size"])["throughput"])
    return ours[0] if ours else None


def figures(variant: Optional[dict], baseline: Optional[dict]) -> dict[str, Any]:
    """A precision's entry: its throughput and p50 by batch size, its ratio against bf16, its accuracy."""
    if variant is None:
        return {"variant": None, "status": "absent", "error": "nav-orch planned no such variant"}
    by_batch = {e["batch_size"]: e for e in variant["profile"]}
    base = {e["batch_size"]: e for e in baseline["profile"]} if baseline else {}
    verification = variant.get("verification") or {"outputs": {}}
    return {
        "variant": variant["name"], "status": variant["status"], "error": variant["error"],
        "throughput": {str(b): by_batch[b]["throughput"] for b in BATCHES if b in by_batch},
        "p50_ms": {str(b): by_batch[b]["latency_ms"]["p50"] for b in BATCHES if b in by_batch},
        "ratio_vs_bf16": {str(b): by_batch[b]["throughput"] / base[b]["throughput"]
                          for b in BATCHES if b in by_batch and b in base},
        "accuracy": {output: {key: figure.get(key) for key in ("cosine", "top1", "max_abs_err", "passed")}
                     for output, figure in verification["outputs"].items()},
    }


def number(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(name: str, entry: dict, precisions: tuple[str, ...]) -> None:
    model = MODELS[name]
    print(f"\n== {name}: {model.factory} {' '.join(model.model_args)}".rstrip())
    print(f"nav-orch's choice: {entry['best']}   wall time of optimize: {entry['wall_s']:.0f} s")
    print(f"{'precision':10}{'bs1 ' + model.unit:>14}{'bs64 ' + model.unit:>16}{'x bf16 bs1':>12}{'x bf16 bs64':>13}"
          f"  {'cosine':>9}{'top-1':>7}{'max abs err':>13}")
    for precision in precisions:
        row = entry["precisions"][precision]
        if not row.get("throughput") and not row.get("accuracy"):  # skipped, or failed before verifying
            print(f"{precision:10}{row['status']}: {row['error'] or 'not profiled'}")
            continue
        throughput, ratio = row["throughput"], row["ratio_vs_bf16"]  # empty where verification failed
        print(f"{precision:10}{number(throughput.get('1'), ',.0f'):>14}{number(throughput.get('64'), ',.0f'):>16}"
              f"{number(ratio.get('1'), '.3f'):>12}{number(ratio.get('64'), '.3f'):>13}", end="")
        outputs = list(row["accuracy"].items()) or [("-", {})]
        for i, (output, figure) in enumerate(outputs):
            prefix = "" if i == 0 else " " * 65
            print(f"{prefix}  {number(figure.get('cosine'), '.5f'):>9}{number(figure.get('top1'), '.3f'):>7}"
                  f"{number(figure.get('max_abs_err'), '.3g'):>13}  {output}")
        if row["status"] != "ok":
            print(f"{'':10}{row['status']}: {row['error']}")


def run_model(args: argparse.Namespace, name: str, record: dict) -> None:
    """Optimize one model; its entry goes into `record["models"]`."""
    try:
        wall, results = optimize(args, name)
    except (RuntimeError, json.JSONDecodeError) as error:
        model_failed(record, name, MODELS[name].factory, error)
        return
    gpus = results["environment"]["gpus"]
    record["gpu"] = record["gpu"] or (gpus[0] if gpus else {})
    baseline = variant_of(results, "bf16")
    entry = {"factory": MODELS[name].factory, "model_args": list(MODELS[name].model_args), "best": results["best"],
             "wall_s": wall, "state": results["state"],
             "precisions": {p: figures(variant_of(results, p), baseline) for p in args.precisions},
             "environment": results["environment"], "variants": results["variants"]}
    record["models"][name] = entry
    report(name, entry, args.precisions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nav-quantized"),
                        help="one folder per model inside it")
    parser.add_argument("--python", required=True, help="the runners' Python: torch, torchao, transformers, "
                                                        "torchvision")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="of bf16,int8,fp8 (bf16, the baseline, is always built)")
    parser.add_argument("--seq-len", type=int, default=384, help="the BERT models' sequence length")
    parser.add_argument("--gpus", default="1", help="nav-orch --gpus")
    parser.add_argument("--memory-formats", default="contiguous", help="nav-orch --memory-formats")
    parser.add_argument("--images", help="nav-orch --images (default: nav-orch's)")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="nav-orch --timeout: seconds per job (BERT-large compiles three static graphs)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    asked = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if any(p not in PRECISIONS for p in asked):
        parser.error(f"--precisions {args.precisions!r}: expected some of {', '.join(PRECISIONS)}")
    args.precisions = tuple(dict.fromkeys(["bf16", *asked]))
    names = chosen_models(parser, args.models, MODELS)
    record = new_record(seq_len=args.seq_len, precisions=list(args.precisions), batch_sizes=list(BATCHES), gpu={})
    run_models(names, lambda name: run_model(args, name, record), record, args.out)
    if record["gpu"]:
        gpu = record["gpu"]
        print(f"\nGPU: {gpu.get('name', '?')} (compute capability {gpu.get('compute_capability', '?')}, "
              f"driver {gpu.get('driver', '?')})")
    exit_if_any_failed(record)


if __name__ == "__main__":
    main()
