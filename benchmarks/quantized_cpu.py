"""ONNX Runtime INT8 on the CPU: fp32 against int8 dynamic and int8 static, per model, in one run each.

    python benchmarks/quantized_cpu.py --workspace /tmp/nav-quantized-cpu [--models mlp,encoder]
        [--executor docker] [--python python3] [--out result.json]

The models are bundled factories with random, seeded weights (nothing is downloaded):
  mlp      examples/mlp.py:make_mlp with in_features=256, hidden=1024 (256 -> 1024 -> 10, matmul-heavy),
           input `input` float32 (batch, 256), output class scores (batch, 10)
  encoder  examples/small_encoder.py:make_small_encoder (torch.nn.TransformerEncoder: 3 layers, d_model
           256, 4 heads, feed-forward 1024), input `x` float32 (batch, 64, 256), output the hidden states

For each model, one `nav-orch optimize MODEL --formats onnx --precisions fp32,int8 --images cpu
--gpus none --batch-sizes 1,64 --no-triton` (Docker and the CPU images by default; `--executor
local` runs the runners as subprocesses of `--python`, which then needs torch, onnx, onnxscript and
onnxruntime), which builds onnx-fp32, onnx-int8-dynamic and onnx-int8-static
(runners/toolchains/onnx_quantize.py), verifies
each (the int8 ones by the default accuracy budget) and profiles them as every variant is profiled.
Then a table per model: each variant's throughput at batch 1 and 64 and its ratio to onnx-fp32's,
and its accuracy against the source model on the samples (verification: cosine similarity, top-1
agreement where the output is class scores, max abs error), or why it failed.

`--out` gets one JSON record for the run (rewritten after each model, so a failure keeps the models
before it): date, command line, the host CPU (model name, whether it has AVX-512 VNNI), and for each
model `models.<name>` with `best`, `wall_s`, the runners' `versions`, and per variant `throughput`
({"1": per s, "64": per s}), `ratio` (the same over onnx-fp32's), `unstable_batches` (where the
timing never settled: runners/harness/measure.py time_calls), `accuracy` (per output: cosine, top1,
max_abs_err, passed), `status` and `error`. A model whose optimize failed has `error` instead,
and the script exits with status 1. Throughputs are one stream on a machine whose other work is
not controlled: rerun on a quiet machine before quoting them.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from model_runs import ROOT, chosen_models, exit_if_any_failed, model_failed, new_record, run_models, timed_optimize

BATCHES = (1, 64)
VARIANTS = ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static")
BASELINE = "onnx-fp32"


@dataclass(frozen=True)
class Model:
    factory: str  # file:factory, relative to the checkout
    input: str  # nav-orch --input: NAME:SHAPE:DTYPE, the verification samples (8 of them)
    model_args: tuple[str, ...]  # nav-orch --model-arg
    unit: str


MODELS = {
    "mlp": Model("examples/mlp.py:make_mlp", "input:8,256:float32", ("in_features=256", "hidden=1024"), "samples/s"),
    "encoder": Model("examples/small_encoder.py:make_small_encoder", "x:8,64,256:float32", (), "sequences/s"),
}


def host_cpu(cpuinfo: str) -> dict[str, Any]:
    """The CPU's model name and whether it has AVX-512 VNNI (ONNX Runtime's int8 kernels use it)."""
    name, flags = "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown":
            name = value.strip()
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model_name": name, "avx512_vnni": "avx512_vnni" in flags, "avx512f": "avx512f" in flags}


def optimize(args: argparse.Namespace, name: str) -> tuple[float, dict]:
    model = MODELS[name]
    command = [sys.executable, "-m", "orchestrator.cli", "optimize", f"{ROOT}/{model.factory}",
               "--input", model.input, "--formats", "onnx", "--precisions", "fp32,int8", "--images", "cpu",
               "--gpus", "none", "--batch-sizes", ",".join(map(str, BATCHES)), "--executor", args.executor,
               "--workspace", str(args.workspace / name), "--progress", "plain", "--json", "--force",
               "--no-triton"]  # served throughput is not what this compares
    for pair in model.model_args:
        command += ["--model-arg", pair]
    if args.executor == "local":  # nav-orch refuses --python with Docker (containers bring their own)
        command += ["--python", args.python]
    wall, run = timed_optimize(command)
    if run.returncode not in (0, 1):  # 1: no variant passed, which the table shows
        raise RuntimeError(f"nav-orch optimize failed with exit code {run.returncode}")
    return wall, json.loads(run.stdout)


def variant_figures(variant: dict, baseline: Optional[dict]) -> dict[str, Any]:
    """A variant's throughput per batch size, its ratio to the baseline's, and its accuracy figures."""
    throughput = {str(e["batch_size"]): e["throughput"] for e in variant.get("profile") or []}
    unstable = [e["batch_size"] for e in variant.get("profile") or [] if not e["stable"]]
    base = {str(e["batch_size"]): e["throughput"] for e in (baseline or {}).get("profile") or []}
    ratio = {size: value / base[size] for size, value in throughput.items() if base.get(size)}
    outputs = ((variant.get("verification") or {}).get("outputs")) or {}
    accuracy = {name: {"cosine": o.get("cosine"), "top1": o.get("top1"), "max_abs_err": o["max_abs_err"],
                       "passed": o["passed"]} for name, o in outputs.items()}
    return {"status": variant["status"], "error": variant["error"], "throughput": throughput, "ratio": ratio,
            "unstable_batches": unstable, "accuracy": accuracy}


def cell(value: Optional[float], form: str) -> str:
    return "-" if value is None else format(value, form)


def report(name: str, entry: dict) -> None:
    model = MODELS[name]
    print(f"\n== {name}: {' '.join([model.factory, *model.model_args])} ({model.unit}); best: {entry['best']}")
    print(f"{'variant':20}{'bs1':>10}{'bs64':>10}{'x bs1':>8}{'x bs64':>8}{'cosine':>10}{'top-1':>7}{'max abs':>10}"
          "  status")
    for variant, figures in entry["variants"].items():
        t, r = figures["throughput"], figures["ratio"]
        # The worst output decides a variant: its lowest cosine and top-1, its largest error.
        accuracy = list(figures["accuracy"].values())
        cosines = [a["cosine"] for a in accuracy if a["cosine"] is not None]
        top1s = [a["top1"] for a in accuracy if a["top1"] is not None]
        errors = [a["max_abs_err"] for a in accuracy]
        status = figures["status"] + (f" ({figures['error']})" if figures["error"] else "")
        if figures["unstable_batches"]:
            status += f"; not stable at batch {', '.join(map(str, figures['unstable_batches']))}"
        print(f"{variant:20}{cell(t.get('1'), ',.0f'):>10}{cell(t.get('64'), ',.0f'):>10}"
              f"{cell(r.get('1'), '.2f'):>8}{cell(r.get('64'), '.2f'):>8}"
              f"{cell(min(cosines, default=None), '.5f'):>10}{cell(min(top1s, default=None), '.3f'):>7}"
              f"{cell(max(errors, default=None), '.3g'):>10}  {status}")


def run_model(args: argparse.Namespace, name: str, record: dict) -> None:
    try:
        wall, results = optimize(args, name)
    except (RuntimeError, json.JSONDecodeError) as error:
        model_failed(record, name, MODELS[name].factory, error)
        return
    by_name = {v["name"]: v for v in results["variants"]}
    baseline = by_name.get(BASELINE)
    images = results["environment"]["images"]
    entry = {"factory": MODELS[name].factory, "model_args": list(MODELS[name].model_args), "best": results["best"],
             "wall_s": wall, "versions": images[0]["versions"] if images else {},
             "variants": {n: variant_figures(by_name[n], baseline) for n in VARIANTS if n in by_name}}
    record["models"][name] = entry
    report(name, entry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/nav-quantized-cpu"))
    parser.add_argument("--executor", choices=("docker", "local"), default="docker")
    parser.add_argument("--python", default="python3", help="the runners' Python (local executor)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    names = chosen_models(parser, args.models, MODELS)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    record = new_record(cpu=host_cpu(cpuinfo))
    print(f"CPU: {record['cpu']['model_name']} (AVX-512 VNNI: {'yes' if record['cpu']['avx512_vnni'] else 'no'})")

    run_models(names, lambda name: run_model(args, name, record), record, args.out)
    exit_if_any_failed(record)


if __name__ == "__main__":
    main()
