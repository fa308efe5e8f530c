"""nav-orch's inplace API on a whole pipeline against eager and hand-compiled runs, in one process.

    python benchmarks/gpu_pipelines.py --pipeline sd --workspace /tmp/nav-sd --out sd.json
    python benchmarks/gpu_pipelines.py --pipeline whisper --workspace /tmp/nav-whisper --out whisper.json
        [--size sd15|small|tiny] [--steps 20] [--tokens 64] [--formats a,b] [--precisions fp16,...]
        [--gpus all] [--executor local] [--images cpu] [--thorough] [--skip hand-fp32,...]

The pipelines are examples/pipelines/{sd_style,whisper_style}.py (random weights, nothing is
downloaded): sd is SD-1.5-sized (text encoder, 20 DDIM steps of the UNet at batch 2 through
classifier-free guidance, VAE decoder; one prompt, 512x512), whisper is Whisper-small-sized (the
encoder once, then the decoder per token, 64 tokens greedy with the KV cache, or with --no-cache
without it; batch 1). Everything runs in this one
Python process, which imports torch, as a user's would; the runners of nav-orch's optimize runs are
its subprocesses (`--executor local`, the default) or containers (`--executor docker`).

Stages, on the same single sample, each timed end to end the same way (`--warmup` calls, then the
median of `--runs` calls, each between two torch.cuda.synchronize):
  eager-fp32  the pipeline as built, float32
  eager-fp16  the pipeline built in float16
  nav-orch    a fresh float32 pipeline whose modules are wrapped with inplace.Module;
              inplace.optimize (its wall time: optimize_s), then inplace.load_optimized
  reload-cold a new process: a fresh pipeline, inplace.load_optimized from the workspace, then
              RELOAD_CALLS calls; to_first_fast_s is load_optimized's time plus the calls up to the
              first within FAST x the last one. An empty TORCHINDUCTOR_CACHE_DIR, and the
              workspace's compile-cache/ hidden
  reload-warm the same with the workspace's compile-cache/ (still an empty Inductor cache)
  reload-hot  the same with this process's Inductor cache (TORCHINDUCTOR_CACHE_DIR as given, or
              torch's default), which the nav-orch stage's load_optimized filled: what a second
              process on the same host finds
  hand-fp16   the issue's reference recipe in float16: torch.compile(mode="reduce-overhead") of each
              module (for sd the UNet in channels_last too); its first call's time is the compile
  hand-fp32   the same in float32 (whisper only by default: there fp16 is slower than fp32 eager)
  static-compile  whisper with the cache only: transformers' own recipe in float16, a static cache
              (cache_implementation="static") and the model's forward through
              torch.compile(mode="reduce-overhead", or `--static-mode`); its first call's time is the compile
  paired      nav-orch's pipeline (load_optimized from the workspace) and the rivals whose own stage ran
              and succeeded before it (hand-fp16, static-compile), all built and warmed in this process,
              then called in turn, `--pairs` rounds: per rival the median of the ratios nav-orch /
              rival with their smallest and largest, and whether the token ids equal nav-orch's (two
              timings of one graph differ by 5-7 % on the H100, so only alternated figures compare)
Each stage's figures and the differences of its outputs from eager fp32 (images: largest absolute
difference relative to their largest magnitude; token ids: the fraction that differ) go to `--out`
after every stage; a failed stage records its error and the others go on.

compile_s (hand-compiled) and optimize_s (nav-orch, whose torch.compile variants compile in its
runners) gain from Inductor's on-disk cache of earlier runs: for cold figures point
TORCHINDUCTOR_CACHE_DIR at an empty folder. Timings are only meaningful on a GPU.

Profiling is nav-orch's quick setting by default (QUICK_PROFILING): device time is scarce, and the
pipeline's own end-to-end timing here is what this benchmark reports; `--thorough` restores
nav-orch's defaults (runners/contract/protocol.py ProfileSettings).

`--device cpu` is for smoke tests of this script only, e.g. (about 2 minutes each on 2 cores):
    python benchmarks/gpu_pipelines.py --pipeline sd --size tiny --steps 3 --device cpu --gpus none \
        --formats exported-program,torchscript-trace --precisions fp32 --workspace /tmp/bench-sd \
        --out /tmp/bench-sd.json
    python benchmarks/gpu_pipelines.py --pipeline whisper --size tiny --tokens 8 --device cpu --gpus none \
        --formats exported-program,torchscript-trace --precisions fp32 --workspace /tmp/bench-wh \
        --out /tmp/bench-wh.json
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Fewer and shorter measurement windows than nav-orch's defaults (10 warm-up calls, 100 ms windows,
# 3 stable of at most 10): a module's variants are still ranked, in a fraction of the device time.
QUICK_PROFILING = {"warmup_calls": 3, "window_ms": 50, "min_window_calls": 5, "stable_windows": 2, "max_windows": 4}
DEFAULT_SIZE = {"sd": "sd15", "whisper": "small"}
DEFAULT_HAND = {"sd": "fp16", "whisper": "fp16,fp32"}
STAGES = ("eager-fp32", "eager-fp16", "nav-orch", "reload-cold", "reload-warm", "reload-hot", "hand-fp16",
          "hand-fp32", "static-compile", "paired")
LABELS = {"eager-fp32": "eager fp32", "eager-fp16": "eager fp16", "nav-orch": "nav-orch",
          "reload-cold": "reload, cold", "reload-warm": "reload, warm", "reload-hot": "reload, hot",
          "hand-fp16": "hand-compiled fp16", "hand-fp32": "hand-compiled fp32",
          "static-compile": "static cache+compile", "paired": "nav-orch (paired)"}
RELOAD_CALLS = 6  # pipeline calls a reload probe times after load_optimized
FAST = 1.5  # a call is fast within this factor of the probe's last call


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--pipeline", choices=("sd", "whisper"), required=True)
    parser.add_argument("--size", help="sd: sd15 or tiny (default sd15); whisper: small or tiny (default small)")
    parser.add_argument("--steps", type=int, default=20, help="sd: denoising steps (default 20)")
    parser.add_argument("--tokens", type=int, default=64, help="whisper: tokens generated (default 64)")
    parser.add_argument("--no-cache", action="store_true", help="whisper: generate without the KV cache (the "
                        "decoder then gets the whole sequence so far, as plain tensors; the 2026-11-25 and "
                        "issue 30 figures)")
    parser.add_argument("--workspace", type=Path, help="inplace.optimize's workspace (default /tmp/nav-PIPELINE)")
    parser.add_argument("--out", type=Path, help="the JSON written after every stage")
    parser.add_argument("--formats", help="nav-orch formats, comma-separated (default: every one for the device)")
    parser.add_argument("--precisions", help="nav-orch precisions, comma-separated (default: fp32, fp16, bf16 "
                        "on a GPU)")
    parser.add_argument("--gpus", help="nav-orch --gpus (default: all on cuda, none on cpu)")
    parser.add_argument("--executor", default="local", choices=("local", "docker"))
    parser.add_argument("--images", default="cpu", help="nav-orch --images (the local executor ignores it)")
    parser.add_argument("--repeats", type=int, default=5, help="inplace.optimize's timing repeats: its "
                        "pipeline check's alternated rounds (default 5)")
    parser.add_argument("--jobs", type=int, default=1, help="nav-orch jobs run at once")
    parser.add_argument("--tolerance", type=float, help="inplace.optimize's pipeline tolerance (default: nav-orch's "
                        "for the variants' lowest precision)")
    parser.add_argument("--mismatch-tolerance", type=float, help="inplace.optimize's fraction of token ids that "
                        "may differ (default: nav-orch's)")
    profiling = parser.add_mutually_exclusive_group()
    profiling.add_argument("--quick", action="store_true", help="quick nav-orch profiling (the default)")
    profiling.add_argument("--thorough", action="store_true", help="nav-orch's default profiling settings")
    parser.add_argument("--reuse", action="store_true", help="reuse jobs an earlier run left in the workspace "
                        "(default: redo them, so that optimize_s is a fresh optimize)")
    parser.add_argument("--warmup", type=int, default=2, help="calls before timing (default 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls; their median is reported (default 5)")
    parser.add_argument("--pairs", type=int, default=7, help="paired: alternated calls of each (default 7)")
    parser.add_argument("--static-mode", default="reduce-overhead", choices=("reduce-overhead", "default"),
                        help="static-compile: torch.compile's mode (default reduce-overhead, transformers' recipe)")
    parser.add_argument("--hand", help="hand-compiled precisions (default: sd fp16; whisper fp16,fp32)")
    parser.add_argument("--skip", default="", help=f"stages to skip, comma-separated: {', '.join(STAGES)}")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: smoke tests of this script only (use --size tiny --gpus none)")
    parser.add_argument("--quiet", action="store_true", help="no nav-orch progress lines on stderr")
    parser.add_argument("--reload-probe", type=Path, help=argparse.SUPPRESS)  # a reload stage's process: its JSON
    args = parser.parse_args()
    args.size = args.size or DEFAULT_SIZE[args.pipeline]
    args.workspace = args.workspace or Path(f"/tmp/nav-{args.pipeline}")
    args.gpus = args.gpus or ("all" if args.device == "cuda" else "none")
    args.hand = args.hand or DEFAULT_HAND[args.pipeline]
    skip = {item.strip() for item in args.skip.split(",") if item.strip()}
    unknown = skip - set(STAGES)
    if unknown:
        parser.error(f"--skip: unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    hand = [f"hand-{p.strip()}" for p in args.hand.split(",") if p.strip()]
    if not set(hand) <= set(STAGES):
        parser.error(f"--hand: choose from fp16, fp32, not {args.hand}")
    args.stages = [s for s in STAGES if s not in skip and (not s.startswith("hand-") or s in hand)
                   and (s != "static-compile" or (args.pipeline == "whisper" and not args.no_cache))]
    if args.warmup < 0 or args.runs < 1:
        parser.error("--warmup must be at least 0 and --runs at least 1")
    return args


class Bench:
    """The pipeline under test: how to build it, its sample, how to time and compare a run."""

    def __init__(self, args: argparse.Namespace):
        import torch

        self.torch, self.args = torch, args
        self.example = importlib.import_module(f"examples.pipelines.{args.pipeline}_style")
        if args.size not in self.example.SIZES:
            raise SystemExit(f"--size {args.size}: {args.pipeline} has {', '.join(self.example.SIZES)}")
        if args.pipeline == "sd":
            self.sample = self.example.samples(args.size, count=1)[0]
        else:
            self.sample = self.example.samples(args.size, count=1, batch=1)[0]
        self.on_gpu = args.device == "cuda"
        self.static_recipe = args.pipeline == "whisper" and not args.no_cache
        self.sync: Callable[[], None] = torch.cuda.synchronize if self.on_gpu else (lambda: None)

    def build(self, dtype: Any) -> Any:
        if self.args.pipeline == "sd":
            return self.example.build(self.args.size, self.args.device, dtype, steps=self.args.steps)
        return self.example.build(self.args.size, self.args.device, dtype, new_tokens=self.args.tokens,
                                  use_cache=not self.args.no_cache)

    def call(self, pipe: Any) -> tuple[Any, float]:
        self.sync()
        start = time.perf_counter()
        output = pipe(self.sample)
        self.sync()
        return output, time.perf_counter() - start

    def measure(self, pipe: Any, record: dict) -> Any:
        """Warm-up calls, then `--runs` timed calls; the figures into `record`, the last outputs back (CPU)."""
        if self.on_gpu:
            self.torch.cuda.reset_peak_memory_stats()
        output = None
        record["warmup_s"] = []
        for _ in range(self.args.warmup):
            output, seconds = self.call(pipe)
            record["warmup_s"].append(seconds)
        record["times_s"] = []
        for _ in range(self.args.runs):
            output, seconds = self.call(pipe)
            record["times_s"].append(seconds)
        record["latency_s"] = statistics.median(record["times_s"])
        record["first_call_s"] = (record["warmup_s"] or record["times_s"])[0]
        if self.on_gpu:
            record["peak_memory_gib"] = self.torch.cuda.max_memory_allocated() / 2**30
        output = output.detach().cpu()
        return output.float() if output.is_floating_point() else output

    def compare(self, output: Any, reference: Any) -> dict:
        """The outputs against eager fp32's: images by their largest difference relative to the
        reference's magnitude, token ids by the fraction that differ."""
        if output.is_floating_point():
            if output.shape != reference.shape:
                return {"relative_diff": math.inf, "note": f"shape {list(output.shape)}, eager fp32 "
                                                           f"{list(reference.shape)}"}
            largest = float((output - reference).abs().max())
            return {"max_abs_diff": largest, "relative_diff": largest / max(float(reference.abs().max()), 1e-30)}
        if output.shape != reference.shape:
            return {"token_mismatch": 1.0, "note": f"shape {list(output.shape)}, eager fp32 {list(reference.shape)}"}
        return {"token_mismatch": float((output != reference).float().mean())}

    def free(self) -> None:
        gc.collect()
        try:
            self.torch._dynamo.reset()  # compiled graphs and their CUDA graph pools
        except Exception:  # noqa: BLE001 - best effort
            pass
        gc.collect()
        if self.on_gpu:
            self.torch.cuda.empty_cache()


def eager(bench: Bench, dtype: Any, record: dict) -> Any:
    pipe = bench.build(dtype)
    try:
        return bench.measure(pipe, record)
    finally:
        del pipe


def wrapped_pipeline(bench: Bench) -> tuple[Any, dict[str, Any]]:
    """A fresh float32 pipeline whose modules are wrapped with inplace.Module, and those by name."""
    from orchestrator import inplace

    pipe = bench.build(bench.torch.float32)
    wrapped = {}
    for name, (parent, attribute) in bench.example.modules(pipe).items():
        setattr(parent, attribute, inplace.Module(getattr(parent, attribute), name=name))
        wrapped[name] = getattr(parent, attribute)
    return pipe, wrapped


def nav_orch(bench: Bench, record: dict) -> Any:
    from orchestrator import inplace
    from orchestrator.progress import PlainReporter, QuietReporter, stderr_console

    args = bench.args
    pipe, wrapped = wrapped_pipeline(bench)
    options: dict[str, Any] = {}
    if args.formats:
        options["formats"] = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.precisions:
        options["precisions"] = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not args.thorough:
        options["profiling"] = QUICK_PROFILING
    if args.tolerance is not None:
        options["tolerance"] = args.tolerance
    if args.mismatch_tolerance is not None:
        options["mismatch_tolerance"] = args.mismatch_tolerance
    record["options"] = {**options, "images": args.images, "gpus": args.gpus, "executor": args.executor,
                         "repeats": args.repeats, "jobs": args.jobs, "force": not args.reuse}
    reporter = QuietReporter() if args.quiet else PlainReporter(stderr_console())
    (args.workspace / "pipeline.json").unlink(missing_ok=True)  # an earlier run's: neither reported nor loaded
    start = time.perf_counter()
    try:
        inplace.optimize(pipe, [bench.sample], workspace=args.workspace, modules=list(wrapped.values()),
                         images=args.images, gpus=args.gpus, executor=args.executor, repeats=args.repeats,
                         jobs=args.jobs, reporter=reporter, force=not args.reuse, **options)
    except inplace.PipelineMismatch as error:  # pipeline.json is written first: its variants still load
        record["optimize_error"] = f"PipelineMismatch: {error}"
        print(f"NOTE: inplace.optimize raised PipelineMismatch (outputs outside nav-orch's tolerance); measuring "
              f"the variants load_optimized swaps in anyway.\n      {error}", flush=True)
    finally:
        record["optimize_s"] = time.perf_counter() - start
        record["pipeline_json"] = pipeline_json(args.workspace)
    record["variants"] = inplace.load_optimized(pipe, workspace=args.workspace, modules=list(wrapped.values()))
    try:
        output = bench.measure(pipe, record)
        record["eager_calls"] = {name: getattr(module.nav_variant, "eager_calls", None)
                                 for name, module in wrapped.items()}  # calls the variant did not take
        return output
    finally:
        del pipe, wrapped


def reload_probe(bench: Bench) -> None:
    """In a process of its own: a fresh pipeline, load_optimized, and the first calls, timed."""
    from orchestrator import inplace

    torch = bench.torch
    started = time.perf_counter()
    pipe, wrapped = wrapped_pipeline(bench)
    built = time.perf_counter()
    record: dict[str, Any] = {"build_s": built - started}
    record["variants"] = inplace.load_optimized(pipe, workspace=bench.args.workspace, modules=list(wrapped.values()))
    record["load_s"] = time.perf_counter() - built
    with torch.inference_mode():
        record["calls_s"] = [bench.call(pipe)[1] for _ in range(RELOAD_CALLS)]
    last = record["calls_s"][-1]
    first_fast = next(i for i, seconds in enumerate(record["calls_s"]) if seconds <= FAST * last)
    record["to_first_fast_s"] = record["load_s"] + sum(record["calls_s"][:first_fast + 1])
    record["latency_s"] = last
    record["dynamo_compile_times"] = torch._dynamo.utils.compile_times(repr="str")
    bench.args.reload_probe.write_text(json.dumps(record))


def reload(bench: Bench, kind: str, record: dict) -> None:
    """The reload probe in a new Python process: cold hides the workspace's compile cache for the
    while, cold and warm give it an empty Inductor cache, hot this process's."""
    import shutil
    import subprocess
    import tempfile

    args = bench.args
    cache = args.workspace / "compile-cache"
    hidden = args.workspace / "compile-cache.hidden"
    record["compile_cache"] = cache.is_dir()
    if kind == "cold" and cache.is_dir():
        cache.rename(hidden)
    inductor = Path(tempfile.mkdtemp(prefix="reload-inductor-"))
    out = inductor / "probe.json"
    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--reload-probe", str(out)]
    try:
        environment = dict(os.environ) if kind == "hot" else {**os.environ,
                                                              "TORCHINDUCTOR_CACHE_DIR": str(inductor / "cache")}
        run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
        if run.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the reload probe exited {run.returncode}: {run.stderr[-1500:]}")
        record.update(json.loads(out.read_text()))
        record["warnings"] = [line for line in run.stderr.splitlines() if "Warning" in line][:5]
    finally:
        if hidden.is_dir():
            hidden.rename(cache)
        shutil.rmtree(inductor, ignore_errors=True)


def pipeline_json(workspace: Path) -> Optional[dict]:
    path = workspace / "pipeline.json"
    return json.loads(path.read_text()) if path.is_file() else None


LOOPED = {"unet", "decoder"}  # called once per step or token


def hand_pipeline(bench: Bench, dtype: Any) -> tuple[Any, list[str]]:
    """A pipeline in `dtype` with its modules compiled by the hand recipe, and what was compiled how."""
    torch = bench.torch
    pipe = bench.build(dtype)
    compiled = []
    for name, (parent, attribute) in bench.example.modules(pipe).items():
        module = getattr(parent, attribute)
        if name == "unet":
            module = module.to(memory_format=torch.channels_last)
        mode = "reduce-overhead" if name in LOOPED else "default"
        setattr(parent, attribute, torch.compile(module, mode=mode))
        compiled.append(f"{name} ({mode})")
    return pipe, compiled


def hand_compiled(bench: Bench, dtype: Any, record: dict) -> Any:
    """The issue's reference recipe, by hand: the module called in the loop (the UNet, in channels_last,
    or the decoder) through torch.compile(mode="reduce-overhead"), the others through plain
    torch.compile. CUDA graphs on the others would need their outputs cloned by hand: the text
    encoder's first output is overwritten by its second call while the pipeline still holds it."""
    pipe, record["compiled"] = hand_pipeline(bench, dtype)
    try:
        output = bench.measure(pipe, record)
        record["compile_s"] = record["first_call_s"]  # compiles every module (and records CUDA graphs)
        return output
    finally:
        del pipe


def paired(bench: Bench, record: dict, stages: dict[str, dict]) -> None:
    """nav-orch's pipeline against each rival whose own stage succeeded (the hand recipe in fp16;
    transformers' static-cache recipe), all warmed, then called in turn: nav-orch, rival, ... . A
    rival that failed or did not run is left out: Whisper's hand recipe fails with the cache."""
    from orchestrator import inplace

    nav, wrapped = wrapped_pipeline(bench)
    record["variants"] = inplace.load_optimized(nav, workspace=bench.args.workspace, modules=list(wrapped.values()))
    pipes = {"nav": nav}
    if "latency_s" in stages.get("hand-fp16", {}):
        pipes["hand"] = hand_pipeline(bench, bench.torch.float16)[0]
    if "latency_s" in stages.get("static-compile", {}):
        pipes["static"] = static_pipeline(bench)
    if len(pipes) == 1:
        raise RuntimeError("no rival to pair nav-orch with: hand-fp16 and static-compile failed or did not run")
    try:
        outputs = {}
        for name, pipe in pipes.items():
            for _ in range(max(bench.args.warmup, 1) + 1):  # compiles, then records CUDA graphs
                outputs[name] = bench.call(pipe)[0]
        times: dict[str, list[float]] = {name: [] for name in pipes}
        for _ in range(bench.args.pairs):
            for name, pipe in pipes.items():
                times[name].append(bench.call(pipe)[1])
        record.update({f"{name}_s": each for name, each in times.items()}, latency_s=statistics.median(times["nav"]))
        for rival in pipes.keys() - {"nav"}:
            ratios = [a / b for a, b in zip(times["nav"], times[rival])]
            prefix = "ratio" if rival == "hand" else f"ratio_{rival}"
            record.update({f"{prefix}_median": statistics.median(ratios), f"{prefix}_min": min(ratios),
                           f"{prefix}_max": max(ratios)})
            if not outputs[rival].is_floating_point():  # token ids: nav-orch's against the rival's
                record[f"{rival}_tokens_equal"] = bool(outputs["nav"].cpu().equal(outputs[rival].cpu()))
    finally:
        del nav, pipes, wrapped


def static_pipeline(bench: Bench) -> Any:
    """transformers' recipe for a compiled generate(): a static cache and the model's forward
    compiled with CUDA graphs (`--static-mode`), in float16."""
    torch = bench.torch
    pipe = bench.build(torch.float16)
    pipe.cache_implementation = "static"
    pipe.model.forward = torch.compile(pipe.model.forward, mode=bench.args.static_mode)
    return pipe


def static_compile(bench: Bench, record: dict) -> Any:
    pipe = static_pipeline(bench)
    try:
        output = bench.measure(pipe, record)
        record["compile_s"] = record["first_call_s"]
        return output
    finally:
        del pipe


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def targets(args: argparse.Namespace, stages: dict[str, dict]) -> list[dict]:
    """The issues' targets: on latency, sd nav-orch <= 0.25x eager fp16, whisper nav-orch <= 0.5x
    eager fp32, and nav-orch <= the best hand-compiled run; inplace.optimize's wall time (whisper
    <= 90 s, sd <= 180 s) and a warm reload to the first fast call (<= 10 s), in seconds."""
    nav = stages.get("nav-orch", {})
    base, factor = ("eager-fp16", 0.25) if args.pipeline == "sd" else ("eager-fp32", 0.5)
    hands = {key: stages[key]["latency_s"] for key in stages if key.startswith("hand-") and "latency_s" in stages[key]}
    best_hand = min(hands, key=lambda key: hands[key]) if hands else None
    checks = [(f"nav-orch <= {factor}x {LABELS[base]}", ratio(nav.get("latency_s"), stages.get(base, {}).get(
                   "latency_s")), factor),
              (f"nav-orch <= best hand-compiled ({LABELS[best_hand] if best_hand else 'none'})",
               ratio(nav.get("latency_s"), hands.get(best_hand) if best_hand else None), 1.0),
              ("nav-orch / hand fp16, paired median", stages.get("paired", {}).get("ratio_median"), 1.0),
              ("nav-orch <= static cache+compile", ratio(nav.get("latency_s"), stages.get("static-compile", {}).get(
                  "latency_s")), 1.0),
              ("nav-orch / static cache+compile, paired median", stages.get("paired", {}).get(
                  "ratio_static_median"), 1.0),
              ("inplace.optimize seconds", nav.get("optimize_s"), 180.0 if args.pipeline == "sd" else 90.0),
              ("warm reload to first fast call, seconds", stages.get("reload-warm", {}).get("to_first_fast_s"), 10.0)]
    return [{"target": label, "ratio": value, "limit": limit, "met": None if value is None else value <= limit}
            for label, value, limit in checks]


def clean(value: Any) -> Any:
    """JSON without NaN or infinities (strict parsers refuse them): those as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def save(path: Optional[Path], report: dict) -> None:
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(clean(report), indent=2, default=str) + "\n")
    os.replace(temporary, path)


def figure(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(args: argparse.Namespace, report: dict) -> None:
    stages = report["stages"]
    fp32 = stages.get("eager-fp32", {}).get("latency_s")
    fp16 = stages.get("eager-fp16", {}).get("latency_s")
    what = "rel. image diff" if args.pipeline == "sd" else "token mismatch"
    print(f"\n{args.pipeline} ({args.size}) on {report['device_name']}, torch {report['torch']}: latency of one "
          f"pipeline call, median of {args.runs} after {args.warmup} warm-up")
    print(f"{'':20}{'latency s':>11}{'x eager fp32':>14}{'x eager fp16':>14}{'compile/opt/load s':>20}"
          f"{what + ' vs fp32':>24}")
    for key in args.stages:
        entry = stages.get(key, {})
        if "latency_s" not in entry:
            error = " ".join(str(entry.get("error", "not run")).split())
            print(f"{LABELS[key]:20}  failed: {error[:300]}")
            continue
        latency = entry["latency_s"]
        setup = entry.get("optimize_s", entry.get("compile_s", entry.get("to_first_fast_s")))
        diff = entry.get("output_diff") or {}
        shown = diff.get("relative_diff", diff.get("token_mismatch"))
        print(f"{LABELS[key]:20}{latency:>11.4f}{figure(ratio(latency, fp32), '.3f'):>14}"
              f"{figure(ratio(latency, fp16), '.3f'):>14}{figure(setup, '.1f'):>20}"
              f"{figure(shown, '.3e' if args.pipeline == 'sd' else '.1%'):>24}")
    nav = stages.get("nav-orch", {})
    if nav.get("variants"):
        print("nav-orch's modules:")
        modules = ((nav.get("pipeline_json") or {}).get("modules")) or {}
        for name, variant in nav["variants"].items():
            result = modules.get(name, {})
            if result.get("status") == "optimized":
                detail = f"in-place diff {figure(result.get('in_place_diff'), '.2e')}"
                fallbacks = (nav.get("eager_calls") or {}).get(name)
                if fallbacks:
                    detail += f"; {fallbacks} call(s) ran eager"
            else:
                detail = f"eager: {result.get('reason')}"
            in_process = result.get("in_process") or {}
            if in_process.get("time_s"):
                runner_s = figure(in_process.get("best_runner_s"), ".4f")
                detail += (f"; {in_process['name']} {in_process['status']}, {in_process['time_s']:.4f} s on the "
                           f"recorded calls vs {in_process.get('best_runner')} {runner_s} s")
            print(f"  {name:14} {variant:40} {detail}")
    summary = nav.get("pipeline_summary")
    if summary:
        print(f"pipeline.json: state {summary['state']}, speedup {figure(summary['speedup'], '.2f')}x, relative "
              f"output diff {figure(summary['relative_output_diff'], '.2e')}, mismatched "
              f"{figure(summary['mismatched'], '.1%')}, passed {summary['passed']}")
    if nav.get("optimize_error"):
        print(f"NOTE: {nav['optimize_error']}")
    print("targets:")
    for check in report["targets"]:
        met = {True: "met", False: "NOT met", None: "not evaluated"}[check["met"]]
        print(f"  {check['target']:52} {figure(check['ratio'], '.3f'):>8} (limit {check['limit']:g})  {met}")


def summary_of(document: Optional[dict]) -> Optional[dict]:
    """pipeline.json's figures: the pipeline's, and each module's choice."""
    if document is None:
        return None
    keys = ("state", "error", "speedup", "timing", "relative_output_diff", "max_output_diff", "mismatched",
            "tolerance", "mismatch_tolerance", "passed", "optimize_s")
    return {**{key: document.get(key) for key in keys},
            "modules": {name: {key: module.get(key) for key in ("status", "best", "precision", "reason",
                                                                 "recorded_diff", "in_place_diff", "cuts",
                                                                 "in_process")}
                        for name, module in document.get("modules", {}).items()}}


def main() -> None:
    args = parse_args()
    bench = Bench(args)
    torch = bench.torch
    if args.reload_probe:
        reload_probe(bench)
        return
    if bench.on_gpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; --device cpu runs a smoke test")
    import diffusers
    import transformers

    from orchestrator import __version__

    report: dict[str, Any] = {
        "pipeline": args.pipeline, "size": args.size, "args": {k: str(v) if isinstance(v, Path) else v
                                                               for k, v in vars(args).items()},
        "torch": torch.__version__, "transformers": transformers.__version__, "diffusers": diffusers.__version__,
        "nav_orch": __version__, "python": platform.python_version(), "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if bench.on_gpu else (platform.processor() or "cpu"),
        "profiling": "nav-orch defaults" if args.thorough else QUICK_PROFILING,
        "sample_shape": list(bench.sample.shape), "stages": {}, "targets": [],
    }
    save(args.out, report)
    reference = None
    for key in args.stages:
        record: dict[str, Any] = {}
        report["stages"][key] = record
        print(f"== {LABELS[key]}", flush=True)
        started = time.perf_counter()
        try:
            if key == "nav-orch":
                output = nav_orch(bench, record)
                record["pipeline_summary"] = summary_of(record.get("pipeline_json"))
            elif key == "paired":
                paired(bench, record, report["stages"])
                for rival, prefix in (("hand", "ratio"), ("static", "ratio_static")):
                    if f"{prefix}_median" in record:
                        low, high = record[prefix + "_min"], record[prefix + "_max"]
                        print(f"   nav-orch / {rival} {record[prefix + '_median']:.3f} (min {low:.3f}, "
                              f"max {high:.3f}, {args.pairs} rounds; tokens equal: "
                              f"{record.get(rival + '_tokens_equal', '-')})", flush=True)
                continue
            elif key.startswith("reload-"):
                reload(bench, key.removeprefix("reload-"), record)
                print(f"   to first fast call {record['to_first_fast_s']:.1f} s", flush=True)
                continue
            elif key == "static-compile":
                output = static_compile(bench, record)
            elif key.startswith("eager-"):
                output = eager(bench, torch.float32 if key == "eager-fp32" else torch.float16, record)
            else:
                output = hand_compiled(bench, torch.float32 if key == "hand-fp32" else torch.float16, record)
            if key == "eager-fp32":
                reference = output
            elif reference is not None:
                record["output_diff"] = bench.compare(output, reference)
            print(f"   {record['latency_s']:.4f} s", flush=True)
        except Exception as error:  # noqa: BLE001 - the other stages go on
            record["error"] = f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc()
            print(f"   FAILED: {record['error']}", flush=True)
            traceback.print_exc()
        finally:
            record["stage_s"] = time.perf_counter() - started
            bench.free()
            report["targets"] = targets(args, report["stages"])
            save(args.out, report)
    print_table(args, report)
    if args.out:
        print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
