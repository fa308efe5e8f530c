"""Planning a run: which variants to build, and the graph of steps that builds, checks and
profiles them. Pure decisions from the config and the registry (runners/contract/formats.py): no I/O.

On CPUs, export and verify of a variant share a runner session, variants build in parallel, and
one exclusive step profiles them all, so nothing competes with what it measures. On GPUs, exports
run on the CPU cores in parallel (a trace, Torch-TensorRT's program and a compiled format are
exported in their check session: `Format.exported_in_check`); on the GPUs one session per runner and GPU verifies and
profiles the variants that need no long compile (one CUDA start for many), and each compiled
variant gets a session of its own
(`compiled_skip_reason` says which precisions it is built in). GPU sessions share their GPU and
take turns to profile (orchestrator/run/turns.py), so one variant's compile does not hold up the
others.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal, Optional

from orchestrator.config import ModelRef, OptimizeConfig
from runners.contract.formats import FORMATS, FormatName, default_formats, default_memory_formats, default_precisions
from runners.contract.protocol import NO_CHANNELS_LAST, QUANTIZED, Framework, MemoryFormat, Precision, Quantization

REFERENCE = "reference"
COMPARE = "compare"  # the job and session of confident selection


@dataclass(frozen=True)
class Variant:
    """A variant of the run: one format in one precision (a quantized one: by one method) and layout."""

    name: str
    format: FormatName
    precision: Precision
    memory_format: MemoryFormat = "contiguous"
    quantization: Quantization = ""


def variant_name(fmt: FormatName, precision: Precision, memory_format: MemoryFormat,
                 quantization: Quantization = "") -> str:
    """`onnx-fp16`; a quantized one says how (`onnx-int8-static`), a channels_last one says so:
    `torch-compile-cudagraphs-fp16-channels-last`."""
    return (f"{fmt}-{precision}" + (f"-{quantization}" if quantization else "")
            + ("" if memory_format == "contiguous" else "-channels-last"))


# `nav-orch profile file.py:function`: the callable as the one variant, profiled only.
FUNCTION_VARIANT = Variant("python-function", "python", "fp32")

StepAction = Literal["build", "profile", "export", "check", "check-compiled", "profile-function"]


@dataclass(frozen=True)
class Step:
    """One node of the run's graph: what to do, for which variants, after which steps, where.

    build: export and verify one variant on the CPUs; profile: profile the variants that passed,
    alone on the machine; export: export one variant on the CPUs; check: verify and profile the
    variants on a GPU; check-compiled: the same for one compiled variant, unless `rivals` (the
    variants that need no compile, for an fp32 one) settled on another precision; profile-function: time the
    function of `nav-orch profile`."""

    name: str
    action: StepAction
    variants: tuple[Variant, ...]
    needs: tuple[str, ...] = ()
    gpu: bool = False
    exclusive: bool = False
    rivals: tuple[Variant, ...] = ()


def plan_variants(config: OptimizeConfig, on_gpu: bool) -> list[Variant]:
    """Every format in every precision (from the model's framework) and memory format it supports, a
    quantized precision once per way the format quantizes to it (asked-for formats are kept even where
    the device can't run them: `skip_reason` says why they are skipped)."""
    if config.model.form == "function":
        return [FUNCTION_VARIANT]
    formats = config.formats or default_formats(config.model.framework, on_gpu)
    precisions = config.precisions or default_precisions(on_gpu)
    layouts = config.memory_formats or default_memory_formats(on_gpu)
    framework = config.model.framework
    return [Variant(variant_name(fmt, precision, layout, method), fmt, precision, layout, method)
            for fmt in formats for precision in precisions for method in methods(fmt, precision, framework)
            # A format that chooses its own layout (ONNX, TensorRT) is built once, as it is.
            for layout in [m for m in layouts if m in FORMATS[fmt].memory_formats] or ["contiguous"]]


def methods(fmt: FormatName, precision: Precision, framework: Framework) -> list[Quantization]:
    """How `fmt` exported from `framework` reaches `precision`: [""] for a float precision it exports
    in, the quantizers' methods for int8 and fp8, none where it has no way."""
    entry = FORMATS[fmt]
    if precision in QUANTIZED:
        return [q.method for q in entry.quantizers if q.precision == precision]
    return [""] if precision in entry.precisions_from(framework) else []


def skip_reason(variant: Variant, versions: Mapping[str, str], where: str, has_gpus: bool) -> Optional[str]:
    """Why the run cannot build a variant, decided before any work is spent on it: a toolchain the
    runners' environment (`where`, which reported `versions`) lacks, or a GPU the run does not have."""
    entry = FORMATS[variant.format]
    if entry.toolchain is not None and entry.toolchain.module not in versions:
        return f"{entry.toolchain.title} is not installed in {where}"
    if entry.gpu_only and not has_gpus:
        return "needs a GPU (this run has none: --gpus)"
    if has_gpus and entry.gpu_runtime is not None and entry.gpu_runtime.module not in versions:
        return f"runs on GPUs only with {entry.gpu_runtime.title}, which {where} lacks"
    missing = [package for package in entry.runner_needs if package not in versions]
    if missing:
        return (f"its runner ({entry.runner}) needs {', '.join(missing)}, which {where} does not have (TensorRT "
                "plans of TensorFlow and JAX models would be built in the PyTorch image from their ONNX export: "
                "not built yet; TF-TRT is their TensorRT path)")
    quantizer = entry.quantizer(variant.precision, variant.quantization)
    if quantizer is not None and quantizer.toolchain is not None and quantizer.toolchain.module not in versions:
        return f"{variant.precision} needs {quantizer.toolchain.title}, which is not installed in {where}"
    if quantizer is not None and quantizer.gpu_only and not has_gpus:
        return f"{variant.precision} {variant.format} needs a GPU (this run has none: --gpus)"
    return None


def layout_skip_reason(variant: Variant, memory_formats: Optional[Collection[MemoryFormat]]) -> Optional[str]:
    """Why a variant's layout is not built: it changes nothing in this model, as its reference job
    reported (`memory_formats`; None where the runner does not say, which then skips it at its export).
    Said before any export, so a model without 4-D convolution weights (a transformer) spends no CPU
    on channels_last exports that would all be skipped."""
    if memory_formats is None or variant.memory_format in memory_formats:
        return None
    return NO_CHANNELS_LAST


def source_skip_reason(variant: Variant, model: ModelRef) -> Optional[str]:
    """Why a variant cannot be made from this source: a traced graph (an ExportedProgram) stays in the
    precision it was traced in, as casting it would leave the dtypes its code chose when it was traced
    (a timestep embedding's float32) clashing with the cast weights. A format that lowers precision
    itself (TensorRT) takes the graph as it is."""
    entry = FORMATS[variant.format]
    if model.form != "exported_program" or entry.export_precision is not None:
        return None
    quantizer = entry.quantizer(variant.precision, variant.quantization)
    wanted = quantizer.quantizes if quantizer is not None else variant.precision
    if wanted == model.precision:
        return None
    return (f"the source is an ExportedProgram in {model.precision}: its graph cannot be cast to {wanted} "
            f"(export it in {wanted}; inplace modules are captured per precision)")


def search_cut_reason(variant: Variant, searched: Collection[FormatName], on_gpu: bool,
                      formats_given: bool) -> Optional[str]:
    """Why a variant of the default search is not built: on GPUs, a format that ran slower than a
    format searched beside it in every model measured (`Format.outrun_on_gpus_by`). An ExportedProgram
    run uncompiled, on H100s (2026-12-07, six runs of ResNet-50 and BERT-base, one pass each; raw records
    docs/data/h100-*-{unfrozen,export-when-chosen}*-2026-12-07*): against the TorchScript trace of the
    same precision and layout, 0.35-0.79x at batch 1 and 0.81-0.97x at batch 64 in all 27 pairs, never
    faster; the compiled variants ran 2.0-2.2x its best at batch 64. Left out, ResNet-50's
    `optimize --force` took 0.91 and 0.63 of the time with it (two alternated pairs on one H100,
    docs/performance.md "fewer variants on the CPUs"). Formats the user asked for are all built, as
    under --exhaustive."""
    if not on_gpu or formats_given:
        return None
    rivals = [name for name in FORMATS[variant.format].outrun_on_gpus_by if name in searched]
    if not rivals:
        return None
    return (f"not built: on GPUs {' and '.join(rivals)} ran faster in every model measured "
            f"(--formats {variant.format} or --exhaustive builds it)")


def compiled_skip_reason(variant: Variant, winner: Optional[Precision], capability: Optional[str],
                         precisions_given: bool) -> Optional[str]:
    """Why a compiled variant (torch.compile) is not built; None: build it. Compiled ranking does
    not follow eager ranking (BERT-base on an H100: bf16 compiled beat fp16 compiled at batch 64),
    so it is built in every half precision the GPU runs fast, and in fp32 only where fp32 won among
    the other formats (`winner`). Precisions the user asked for are all built, as under --exhaustive."""
    if variant.precision == "fp8" and capability and tuple(map(int, capability.split(".")[:2])) < (8, 9):
        return (f"fp8 needs a GPU of compute capability 8.9 or later (FP8 tensor cores); this one is {capability}")
    if precisions_given:
        return None
    if variant.precision == "bf16" and capability and int(capability.split(".")[0]) < 8:
        return (f"not built: bf16 is slow on this GPU (compute capability {capability}; 8.0 and later run it "
                "fast); --precisions bf16 builds it")
    if variant.precision == "fp32" and winner is not None and winner != "fp32":
        return (f"not built: {winner} was the fastest precision of the other formats, and a compiled variant is "
                "built in fp32 only where fp32 wins (--exhaustive or --precisions fp32 builds it)")
    return None


def plan_steps(variants: list[Variant], on_gpu: bool, gpus: int = 1) -> list[Step]:
    """The graph of steps after the reference job, which every step builds on. With several `gpus`,
    each runner's variants that need no compile are checked in as many sessions, one per GPU."""
    if variants == [FUNCTION_VARIANT]:
        return [Step("profile", "profile-function", (FUNCTION_VARIANT,), gpu=on_gpu, exclusive=True)]
    if not on_gpu:
        builds = [Step(f"build-{v.name}", "build", (v,)) for v in variants]
        return [*builds, Step("profile", "profile", tuple(variants), needs=tuple(b.name for b in builds),
                              exclusive=True)]
    exports = [Step(f"export-{v.name}", "export", (v,)) for v in variants if not FORMATS[v.format].exported_in_check]
    # Variants that need no compile are checked in sessions per runner (one CUDA start for many), so
    # a slow export of one runtime (ONNX) does not hold up the others.
    cheap: dict[str, list[Variant]] = {}
    for v in variants:
        if not FORMATS[v.format].compiled:
            cheap.setdefault(FORMATS[v.format].runner, []).append(v)
    checks: dict[str, list[Step]] = {}
    for runner, vs in cheap.items():
        parts = max(1, min(gpus, len(vs)))
        chunks = [vs[i::parts] for i in range(parts)]  # dealt out, so each holds a mix of formats
        checks[runner] = [Step(f"check-{runner}" + (f"-{i + 1}" if parts > 1 else ""), "check", tuple(chunk),
                               needs=tuple(f"export-{v.name}" for v in chunk
                                           if not FORMATS[v.format].exported_in_check), gpu=True)
                          for i, chunk in enumerate(chunks)]
    compiled = []
    for v in variants:
        if FORMATS[v.format].compiled:
            runner = FORMATS[v.format].runner
            # Only fp32 waits for the other formats' winner (compiled_skip_reason); a half precision
            # starts compiling (and exporting, in its session) at once, on a GPU the exports leave idle.
            rivals = tuple(cheap.get(runner, [])) if v.precision == "fp32" else ()
            needs = tuple(c.name for c in checks.get(runner, []) if rivals)
            compiled.append(Step(f"check-{v.name}", "check-compiled", (v,), needs=needs, gpu=True, rivals=rivals))
    return [*exports, *(step for steps in checks.values() for step in steps), *compiled]
