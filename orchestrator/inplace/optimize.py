"""`inplace.optimize` and `inplace.load_optimized`: a pipeline's modules recorded, captured,
optimized through the normal run (orchestrator.api.optimize, one run per module), checked in
place, and swapped back; the pipeline timed and checked end to end (WORKSPACE/pipeline.json).

WORKSPACE/
    pipeline.json                         what came of it (orchestrator/results.py PipelineResults)
    modules/NAME/PRECISION/capture.json   how the module was captured in that precision (CapturedModule)
    modules/NAME/PRECISION/model.pt2      the capture (model.ts where only a TorchScript trace worked)
    modules/NAME/PRECISION/samples.npz    the typical recorded call, which the run verifies and times
    modules/NAME/PRECISION/run/           the capture's optimize run: results.json, variants/, jobs/, ...
    compile-cache/                        the compile cache of the modules compiled here (compile_cache.py)

A module is captured once per precision searched: an exported graph keeps the dtypes its code chose
while it was traced, so a half-precision variant must come from the module cast before capture.
"""
from __future__ import annotations

import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from orchestrator import __version__, api
from orchestrator.config import DeclaredAxes, ExecutorName, ModelRef, OptimizeConfig, TritonSettings
from orchestrator.containers.gpus import resolve_gpus
from orchestrator.containers.images import resolve_release
from orchestrator.errors import BadInput, NavOrchError
from orchestrator.inplace.candidate import (
    DIRECT_MODE,
    CalledDirectly,
    InProcessOptions,
    best_torch_variant,
    compile_candidate,
    floating_dtypes,
    in_process_options,
    is_convolutional,
    time_calls,
)
from orchestrator.inplace.capture import CaptureError, capture, reproduce
from orchestrator.inplace.compile_cache import CACHE_FOLDER, compiling_into, load_cache, save_stamp
from orchestrator.inplace.module import InPlaceCheck, RecordedCall, SwappedIn, is_inplace_module
from orchestrator.inplace.narrowing import runner_search
from orchestrator.inplace.shapes import CallLog
from orchestrator.inplace.swap import Leaves, SwappedVariant, load_variant, shape_misfit
from orchestrator.progress import PlainReporter, Reporter, stderr_console
from orchestrator.results import (
    CapturedModule,
    InProcessCandidate,
    ModuleResult,
    PipelineResults,
    PipelineTiming,
    RunResults,
    VariantResult,
)
from orchestrator.run.paired import median_interval, ratios
from orchestrator.run.selection import ranked
from orchestrator.run.workspace import Workspace
from runners.contract.arrays import save_npz
from runners.contract.formats import FORMATS, default_precisions
from runners.contract.protocol import DEFAULT_TOLERANCES, Precision, one_line, write_text_atomic
from runners.contract.structure import flatten
from runners.serving.variant_loader import as_array, torch_dtype

PIPELINE_FILE = "pipeline.json"
CAPTURE_FILE = "capture.json"
# The pipeline's final outputs after every module ran its variant: (the largest difference relative
# to the outputs' magnitude, the fraction of integer elements that may differ). Errors add up
# through a loop (20 denoising steps), and in half precision a near tie between two tokens' logits
# can flip one generated token, and every token after it.
PIPELINE_TOLERANCES = {"fp32": (1e-3, 0.0), "fp16": (5e-2, 0.25), "bf16": (1e-1, 0.25)}


class PipelineMismatch(NavOrchError):
    """The optimized pipeline's outputs lie outside the tolerance of the eager pipeline's."""


def find_modules(pipe: Any, given: Optional[Sequence[Any]] = None) -> dict[str, Any]:
    """The `inplace.Module`s in `given`, else those reachable from `pipe`: its submodules (a torch
    module), its attributes' (an object), its object (a bound method) or its closure (a function)."""
    found: dict[str, Any] = {}

    def add(module: Any) -> None:
        other = found.setdefault(module.nav_name, module)
        if other is not module:
            raise BadInput(f"two inplace.Modules are named {module.nav_name!r}: give each its own name")

    def visit(value: Any, depth: int) -> None:
        if is_inplace_module(value):
            add(value)
        if hasattr(value, "modules") and callable(value.modules) and hasattr(value, "named_parameters"):
            for child in value.modules():
                if is_inplace_module(child):
                    add(child)
            return
        if depth == 0:
            return
        if hasattr(value, "__self__"):
            visit(value.__self__, depth - 1)
        for cell in getattr(value, "__closure__", None) or ():
            visit(cell.cell_contents, depth - 1)
        if hasattr(value, "__dict__") and not isinstance(value, type):
            for item in vars(value).values():
                visit(item, depth - 1)

    for item in given if given is not None else [pipe]:
        visit(item, 3)
    return found


def device_of(module: Any) -> Any:
    """The device of an inplace.Module's weights."""
    return weights_device(module.wrapped)


def weights_device(module: Any) -> Any:
    import torch

    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return torch.device("cpu")


def run_pipeline(pipe: Callable[[Any], Any], samples: Sequence[Any]) -> tuple[list[Any], float]:
    """Every sample through the pipeline, its outputs and the seconds it took (GPU work included)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    with torch.inference_mode():
        sync()
        start = time.perf_counter()
        outputs = [pipe(sample) for sample in samples]
        sync()
    return outputs, time.perf_counter() - start


def timed(pipe: Callable[[Any], Any], samples: Sequence[Any], repeats: int) -> tuple[list[Any], float]:
    """The outputs of the last run and the median time of `repeats` runs."""
    times = []
    outputs: list[Any] = []
    for _ in range(repeats):
        outputs, seconds = run_pipeline(pipe, samples)
        times.append(seconds)
    return outputs, statistics.median(times)


RunPipeline = Callable[[Callable[[Any], Any], Sequence[Any]], tuple[list[Any], float]]


def alternated(run: RunPipeline, pipe: Callable[[Any], Any], samples: Sequence[Any], swapped: dict[str, Any],
               rounds: int) -> tuple[list[Any], list[float], list[float]]:
    """`rounds` runs of the pipeline (each by `run`, run_pipeline) with the `swapped` modules'
    variants and as many eager (those modules swapped out), alternated, each round in the other
    order from the last: a drift of the host over minutes of optimizing hits both alike. The last
    optimized run's outputs, then the optimized and the eager seconds, per round."""
    variants = {name: module.nav_variant for name, module in swapped.items()}
    outputs: list[Any] = []
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for round_index in range(max(rounds, 1)):
            for optimized in (True, False) if round_index % 2 == 0 else (False, True):
                for name, module in swapped.items():
                    module.swap(variants[name] if optimized else None)
                produced, seconds = run(pipe, samples)
                times[optimized].append(seconds)
                outputs = produced if optimized else outputs
    finally:
        for name, module in swapped.items():
            module.swap(variants[name])
    return outputs, times[True], times[False]


def as_arrays(outputs: Sequence[Any]) -> dict[str, np.ndarray]:
    import torch

    leaves, _ = flatten(list(outputs), lambda value: isinstance(value, torch.Tensor), "sample")
    return {name: as_array(tensor) for name, tensor in leaves.items()}


def differences(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """Largest absolute and relative difference of the floating-point leaves, and the fraction of
    integer elements that differ (a leaf of another shape counts as all different)."""
    if list(actual) != list(expected):
        raise PipelineMismatch(f"the optimized pipeline returned outputs {list(actual)[:4]}, eager ones "
                               f"{list(expected)[:4]}")
    largest, scale, differing, integers = 0.0, 1e-30, 0, 0
    for name, want in expected.items():
        got = actual[name]
        if want.dtype.kind in "fc":
            scale = max(scale, float(np.abs(want).max(initial=0.0)))
            largest = max(largest, float(np.abs(got - want).max(initial=0.0)) if got.shape == want.shape
                          else float("inf"))
        else:
            integers += want.size
            differing += int((got != want).sum()) if got.shape == want.shape else want.size
    return largest, largest / scale, differing / max(integers, 1)


def optimize(pipe: Callable[[Any], Any], samples: Iterable[Any], workspace: Union[str, Path] = "nav-pipeline", *,
             modules: Optional[Sequence[Any]] = None, images: str = "auto", gpus: str = "auto",
             executor: str = "docker", repeats: int = 5, tolerance: Optional[float] = None,
             mismatch_tolerance: Optional[float] = None, reporter: Optional[Reporter] = None,
             force: bool = False, keep_if_slower: bool = False, **options: Any) -> PipelineResults:
    """Optimize every `inplace.Module` of `pipe` (called once per sample) and check the pipeline.

    `options` are optimize's (formats, precisions, jobs, profiling, objective, ...: see
    OptimizeConfig). Each module runs its chosen variant only after `load_optimized`; this function
    leaves them eager. `repeats`: timed runs of each candidate and of the pipeline, whose last check
    alternates eager and optimized runs in `repeats` rounds. Where the pipeline ran no faster with the
    chosen variants than eager (by the rounds' median), the modules go back to eager
    (`keep_if_slower=True` keeps them: a noisy host). Raises
    PipelineMismatch, naming the modules responsible, when the optimized
    pipeline's outputs lie outside the tolerance (by default per the variants' lowest precision).
    """
    started = time.perf_counter()
    # Minutes of work in the user's own process: progress on stderr unless a reporter is given
    # (QuietReporter() for none).
    reporter = reporter or PlainReporter(stderr_console())
    samples = list(samples)
    if not samples:
        raise BadInput("inplace.optimize: no samples; give the inputs to call the pipeline with")
    found = find_modules(pipe, modules)
    if not found:
        raise BadInput("inplace.optimize: no inplace.Module in the pipeline; wrap its modules "
                       "(pipe.unet = inplace.Module(pipe.unet, name='unet')) or pass modules=[...]")
    release = resolve_release(images, gpus)
    template = OptimizeConfig(model=ModelRef(path=Path("module.pt2"), form="exported_program"), workspace=Path("."),
                              images=release, gpus=resolve_gpus(gpus, release), executor=ExecutorName(executor),
                              triton=TritonSettings(enabled=False), batch_sizes=[1], **options)  # checks options first
    root = Path(workspace).resolve()
    (root / "modules").mkdir(parents=True, exist_ok=True)
    results = PipelineResults(nav_orch=__version__, samples=len(samples))

    def save() -> None:
        write_text_atomic(root / PIPELINE_FILE, results.model_dump_json(indent=2))

    for module in found.values():
        module.swap(None)
        module.record()
    try:
        reporter.note(f"pipeline: recording {', '.join(found)} over {len(samples)} sample(s)")
        recorded, _ = run_pipeline(pipe, samples)
    finally:
        logs = {name: module.stop_recording() for name, module in found.items()}
    eager, eager_s = timed(pipe, samples, repeats)
    eager_arrays = as_arrays(eager)
    _, relative, mismatched = differences(as_arrays(recorded), eager_arrays)
    if relative > PIPELINE_TOLERANCES["fp32"][0] or mismatched > 0:
        raise BadInput("inplace.optimize: the pipeline gave other outputs on a second run over the same samples: "
                       "seed its random generators (torch.Generator) so that a run can be compared")
    results.timing = PipelineTiming(eager_s=eager_s, repeats=repeats)
    try:
        swapped = {}
        with compiling_into(root):  # every compile in this process from here on: a later process's warm start
            for name, module in found.items():
                results.modules[name], variant = optimize_module(name, module, logs[name], root, template, reporter,
                                                                 force, repeats)
                save()
                if variant is not None:  # already loaded (and compiled) to check it: swapped in as it is
                    module.swap(variant)
                    swapped[name] = module
            check_pipeline(pipe, samples, swapped, eager_arrays, results, repeats, tolerance, mismatch_tolerance)
            while not keep_if_slower and drop_if_slower(swapped, results):  # checked and timed again without them
                check_pipeline(pipe, samples, swapped, eager_arrays, results, repeats, tolerance, mismatch_tolerance)
        keep_compile_cache(root, compiled_here(found, results))
        results.state = "complete" if results.passed else "failed"
    except BaseException as error:
        results.state = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        results.error = results.error or one_line(error)
        raise
    finally:
        for module in found.values():
            module.swap(None)
            module.nav_check = None
        results.optimize_s = time.perf_counter() - started
        save()
    if not results.passed:
        raise PipelineMismatch(results.error or "the optimized pipeline is outside tolerance")
    return results


def optimize_module(name: str, module: Any, log: CallLog, root: Path, template: OptimizeConfig,
                    reporter: Reporter, force: bool, repeats: int = 3
                    ) -> tuple[ModuleResult, Optional[SwappedIn]]:
    """Capture one module once per precision, optimize each capture through the normal run, choose
    the best variant that reproduces every recorded call here, in the user's process, and keep it
    or the module compiled here (candidate.py), whichever is faster on the recorded calls (the
    winner is returned loaded)."""
    calls = log.calls()
    outcome = ModuleResult(status="eager", calls_seen=sum(log.seen.values()), calls_kept=len(calls))
    device = device_of(module)
    on_gpu = device.type == "cuda"
    precisions = template.precisions or default_precisions(on_gpu=on_gpu)
    search = runner_search(template.formats, on_gpu, template.exhaustive)
    outcome.cuts = dict(search.cuts)
    # The options of the module compiled here where no runner variant lends its own.
    convolutional = is_convolutional(module.wrapped)
    unaided = in_process_options(None, on_gpu, precisions, search.compile_modes, convolutional)
    if not search.formats:  # no runner run: one capture, whose call signature the module compiled here takes
        precisions = [unaided.precision]
    runs: dict[str, tuple[VariantResult, Path, CapturedModule]] = {}
    captures: dict[str, tuple[Path, CapturedModule]] = {}
    for precision in precisions:
        folder = root / "modules" / name / precision
        folder.mkdir(parents=True, exist_ok=True)
        reporter.note(f"pipeline: capturing {name} in {precision} ({outcome.calls_seen} call(s) seen, "
                      f"{len(calls)} kept)")
        try:
            captured, typical = capture(in_precision(module.wrapped, precision), log, folder, device, precision)
        except CaptureError as error:
            outcome.captures[precision] = f"failed: {error}"
            continue
        outcome.captures[precision] = captured.form
        captures[precision] = (folder, captured)
        write_text_atomic(folder / CAPTURE_FILE, captured.model_dump_json(indent=2))
        save_npz(folder / "samples.npz", {leaf: typical.inputs[leaf] for leaf in captured.inputs})
        if not search.formats:  # every format asked for is compiled here
            continue
        config = template.model_copy(update={
            "model": ModelRef(path=folder / captured.file, form=captured.form, precision=precision,
                              cpu_file=captured.cpu_file),
            "samples": folder / "samples.npz", "workspace": folder / "run", "precisions": [precision],
            "formats": search.formats,
            # No confident selection in the run: here its variants are only ranked, and the first
            # to reproduce the recorded calls is timed against the module compiled here, which decides.
            "profiling": replace(template.profiling, rounds=0),
            "dynamic_axes": DeclaredAxes(inputs=[captured.input_ranges[leaf] for leaf in captured.inputs],
                                         outputs=[captured.output_ranges.get(leaf, []) for leaf in captured.outputs])})
        outcome.workspaces[precision] = str((folder / "run").relative_to(root))
        try:
            run = api.optimize(config, reporter, force)
        except BadInput as error:  # other errors (Docker or an image missing) would fail every module alike
            outcome.rejected[f"({precision})"] = f"its optimize run failed: {error}"
            continue
        runs.update({variant.name: (variant, folder, captured) for variant in run.variants})
    if not captures:
        why = "; ".join(f"{p}: {why}" for p, why in outcome.captures.items())
        if not calls:
            outcome.reason = "not captured: " + why
            return outcome, None
        reporter.note(f"pipeline: {name} cannot be captured for the runners; compiling it here ({unaided.name})")
        return called_directly(name, module, outcome, replace(unaided, compile_mode=DIRECT_MODE), why)
    outcome.candidates = ranked([variant for variant, _, _ in runs.values()], template.objective,
                                template.latency_budget_ms)
    chosen: Optional[SwappedVariant] = None
    for candidate in outcome.candidates:
        variant, folder, captured = runs[candidate]
        try:
            runner = load_candidate(variant, folder, captured, device)
        except Exception as error:  # noqa: BLE001 - CannotLoad, or a broken artifact: the next candidate may do
            outcome.rejected[candidate] = f"cannot run here: {one_line(error)}"
            continue
        # The recorded calls within the capture's shapes (calls it did not reproduce are not).
        fitting = [(signature, call) for signature, call in log.kept if fits(captured, call)]
        _, missed, worst = reproduce(runner, fitting, captured.inputs, device, variant.precision)
        if missed:
            outcome.rejected[candidate] = f"outside tolerance on a recorded call in place: {missed[0][1]}"
            continue
        outcome.status, outcome.best, outcome.precision, outcome.recorded_diff = (
            "optimized", candidate, variant.precision, worst)
        outcome.workspace = outcome.workspaces[variant.precision]
        chosen = SwappedVariant(name, candidate, runner, captured)
        break
    options = in_process_options(best_torch_variant([runs[name][0] for name in outcome.candidates]), on_gpu,
                                 precisions, search.compile_modes, convolutional)
    # The module compiled here takes the call signature of a capture; that of its precision, where there is one.
    folder, captured = captures.get(options.precision) or next(iter(captures.values()))
    reporter.note(f"pipeline: compiling {name} here ({options.name}, mode {options.compile_mode}), verifying and "
                  "timing it on the recorded calls")
    tried = try_in_process(module, options, captured, log, device, repeats,
                           chosen if outcome.best else None, runs[outcome.best][0].precision if outcome.best else None)
    outcome.in_process = tried.result.model_copy(update={"capture": str(folder.relative_to(root))})
    chosen = settle(outcome, tried, chosen, captured, name)
    if chosen is None:
        outcome.reason = ("no verified variant" if not outcome.candidates
                          else "no verified variant reproduced the recorded calls here")
        return outcome, None
    reporter.note(f"pipeline: {name} runs {outcome.best}")
    return outcome, chosen


def called_directly(name: str, module: Any, outcome: ModuleResult, options: InProcessOptions, why: str
                    ) -> tuple[ModuleResult, Optional[CalledDirectly]]:
    """The candidate of a module no capture holds: the module compiled here, called with each call's
    own arguments, and verified only with the whole pipeline (check_pipeline)."""
    outcome.cuts["runners"] = (f"its calls cannot be captured for the runners ({why}): only the module compiled "
                               "here is tried, verified with the whole pipeline")
    result = InProcessCandidate(name=options.name, precision=options.precision, compile_mode=options.compile_mode,
                                memory_format=options.memory_format, capture="", status="won")
    outcome.in_process = result
    try:
        variant = CalledDirectly(name, module.wrapped, options)
    except Exception as error:  # noqa: BLE001 - torch.compile raises many types; the module stays eager
        result.status, result.reason = "rejected", f"cannot run here: {one_line(error)}"
        outcome.reason = f"not captured ({why}), and {result.reason}"
        return outcome, None
    outcome.status, outcome.best, outcome.precision, outcome.candidates = (
        "optimized", options.name, options.precision, [options.name])
    return outcome, variant


@dataclass
class Tried:
    """The module compiled here, verified and timed against the best runner variant: its record, and
    its function of a call's leaves where it was verified."""

    result: InProcessCandidate
    run: Optional[Leaves] = None


def try_in_process(module: Any, options: InProcessOptions, captured: CapturedModule, log: CallLog, device: Any,
                   repeats: int, runner: Optional[SwappedVariant], runner_precision: Optional[Precision]) -> Tried:
    """Compile the module here with `options`, verify it on the recorded calls within the capture's
    shapes with the precision's tolerance (as the runners' variants are), and time it and `runner`
    (the best runner variant, if any) on those calls."""
    result = InProcessCandidate(name=options.name, precision=options.precision, compile_mode=options.compile_mode,
                                memory_format=options.memory_format, capture="", status="rejected")
    fitting = [(signature, call) for signature, call in log.kept if fits(captured, call)]
    try:
        run = compile_candidate(module.wrapped, options, captured)
        _, missed, worst = reproduce(run, fitting, captured.inputs, device, options.precision)
        if missed:
            result.reason = f"outside tolerance on a recorded call in place: {missed[0][1]}"
            return Tried(result)
        result.recorded_diff = worst
        # Timed with the runner on the calls within both captures' shapes: those each of them runs.
        shared = [(signature, call) for signature, call in fitting if runner is None or fits(runner.capture, call)]
        result.time_s = time_calls(run, shared, captured.inputs, device, options.precision, repeats)
    except Exception as error:  # noqa: BLE001 - torch.compile raises many types; the module stays with the runners'
        result.reason = f"cannot run here: {one_line(error)}"
        return Tried(result)
    if runner is not None and runner_precision is not None:
        result.best_runner = runner.name
        result.best_runner_s = time_calls(runner.run, shared, captured.inputs, device, runner_precision, repeats)
        result.vs_best_runner = result.best_runner_s / result.time_s if result.time_s > 0 else None
    result.status = "won" if result.best_runner_s is None or result.time_s < result.best_runner_s else "lost"
    return Tried(result, run)


def settle(outcome: ModuleResult, tried: Tried, chosen: Optional[SwappedVariant], captured: CapturedModule,
           name: str) -> Optional[SwappedVariant]:
    """Record the module compiled here among the candidates (first where it won) and return what the
    module runs: it, where it won, else the best runner variant."""
    result = tried.result
    if tried.run is None:
        outcome.rejected[result.name] = result.reason or "rejected"
        return chosen
    if result.status == "lost":
        outcome.candidates.insert(outcome.candidates.index(outcome.best) + 1 if outcome.best else 0, result.name)
        return chosen
    outcome.candidates.insert(0, result.name)
    outcome.status, outcome.best, outcome.precision, outcome.recorded_diff = (
        "optimized", result.name, result.precision, result.recorded_diff)
    outcome.workspace = outcome.workspaces.get(result.precision, outcome.workspace)
    return SwappedVariant(name, result.name, tried.run, captured)


def in_precision(module: Any, precision: Precision) -> Any:
    """The module computing in `precision`: itself where it already does, else a cast copy (its own
    code then picks the dtypes a traced graph would otherwise fix)."""
    import copy

    dtype = torch_dtype(precision)
    if all(found == dtype for found in floating_dtypes(module)):
        return module
    return copy.deepcopy(module).to(dtype)


def fits(captured: CapturedModule, call: RecordedCall) -> bool:
    """Whether a recorded call lies within the capture's shapes (calls it did not reproduce do not)."""
    return shape_misfit(captured, {leaf: call.inputs[leaf].shape for leaf in captured.inputs}) is None


def load_candidate(variant: VariantResult, folder: Path, captured: CapturedModule, device: Any) -> Leaves:
    """A verified variant of the capture in `folder`, loaded here: its artifact where the capture's
    run keeps it (the host's layout, not the runner's word)."""
    variants = Workspace(folder / "run").variants
    return load_variant(variant, variants / variant.name / FORMATS[variant.format].artifact, variants,
                        folder / captured.file, device)


def swap_in(module: Any, result: ModuleResult, root: Path) -> bool:
    """Swap the best variant that loads here into `module`; False (eager) if none does."""
    found: dict[str, tuple[VariantResult, Path, CapturedModule]] = {}
    for run in result.workspaces.values():
        folder = (root / run).parent
        captured = CapturedModule.model_validate_json((folder / CAPTURE_FILE).read_text())
        results = RunResults.model_validate_json((root / run / "results.json").read_text())
        found.update({variant.name: (variant, folder, captured) for variant in results.variants})
    order = [result.best] if result.best else []
    order += [name for name in result.candidates if name not in order and name not in result.rejected]
    failures = []
    in_process = result.in_process
    for name in order:
        try:
            if in_process is not None and name == in_process.name:
                options = InProcessOptions(in_process.precision, in_process.compile_mode, in_process.memory_format)
                if not in_process.capture:  # a module no capture holds: called with each call's own arguments
                    module.swap(CalledDirectly(module.nav_name, module.wrapped, options))
                    return True
                captured = CapturedModule.model_validate_json((root / in_process.capture / CAPTURE_FILE).read_text())
                runner = compile_candidate(module.wrapped, options, captured)
            elif name in found:
                variant, folder, captured = found[name]
                runner = load_candidate(variant, folder, captured, device_of(module))
            else:
                continue
        except Exception as error:  # noqa: BLE001 - CannotLoad, or a broken artifact: the next one may load
            failures.append(f"{name} ({one_line(error)})")
            continue
        if failures:
            warnings.warn(f"inplace module {module.nav_name!r}: {'; '.join(failures)} cannot load here; running "
                          f"{name}, the best variant that can", RuntimeWarning, stacklevel=3)
        module.swap(SwappedVariant(module.nav_name, name, runner, captured))
        return True
    if failures:
        warnings.warn(f"inplace module {module.nav_name!r}: no variant loads here ({'; '.join(failures)}); it runs "
                      "eager", RuntimeWarning, stacklevel=3)
    return False


def compiled_here(found: dict[str, Any], results: PipelineResults) -> dict[str, tuple[Any, str]]:
    """The modules that run the module compiled here: each name's wrapped module and candidate name."""
    winners = {}
    for name, module in found.items():
        result = results.modules.get(name)
        if result is not None and result.in_process is not None and result.best == result.in_process.name:
            winners[name] = (module.wrapped, result.in_process.name)
    return winners


def keep_compile_cache(root: Path, winners: dict[str, tuple[Any, str]]) -> None:
    """Stamp the compile cache the modules compiled here left in the workspace (compiling_into), for
    a later process; where none won, the cache goes."""
    if winners:
        save_stamp(root, winners, weights_device(next(iter(winners.values()))[0]))
    else:
        shutil.rmtree(root / CACHE_FOLDER, ignore_errors=True)


def drop_if_slower(swapped: dict[str, Any], results: PipelineResults) -> bool:
    """A pipeline is never left slower than eager. Where it ran no faster with its variants, the
    modules called directly (timed only with the whole pipeline) go back to eager first; where
    none was, every module does. Each says why; True where any went (the pipeline is then checked
    again without them)."""
    timing, speedup = results.timing, results.speedup
    if not swapped or timing is None or timing.optimized_s is None or speedup is None or speedup > 1.0:
        return False
    direct = [name for name, module in swapped.items() if isinstance(module.nav_variant, CalledDirectly)]
    spread = (f", {timing.speedup_low:.3g}-{timing.speedup_high:.3g}" if timing.speedup_low is not None
              and timing.speedup_high is not None else "")
    figures = (f"({timing.optimized_s:.4g} s against {timing.eager_s:.4g} s, speedup {speedup:.3g}{spread} "
               f"over {timing.repeats} alternated rounds)")
    why = (f"compiled here, the pipeline ran no faster than eager {figures}" if direct else
           f"the pipeline ran no faster than eager with its modules' variants {figures}: it stays eager")
    for name in direct or list(swapped):
        outcome = results.modules[name]
        if outcome.in_process is not None and outcome.in_process.status == "won":
            outcome.in_process.status = "lost"
        outcome.status, outcome.best, outcome.precision, outcome.reason = "eager", None, None, why
        if name in direct:
            outcome.candidates = []
        swapped.pop(name).swap(None)
    return True


def check_pipeline(pipe: Callable[[Any], Any], samples: Sequence[Any], swapped: dict[str, Any],
                   eager: dict[str, np.ndarray], results: PipelineResults, repeats: int,
                   tolerance: Optional[float], mismatch_tolerance: Optional[float]) -> None:
    """Time the swapped pipeline, compare its outputs with eager, and name the modules responsible
    for a difference outside tolerance (each module's variant compared with it in place)."""
    # A module called directly (no capture) is not checked in place: a second, eager call would
    # update the state it is passed (a generation cache) twice.
    checked = {name: module for name, module in swapped.items() if isinstance(module.nav_variant, SwappedVariant)}
    for module in checked.values():
        module.nav_check = InPlaceCheck()
    run_pipeline(pipe, samples)  # warm-up: compiles, and checks in place
    for name, module in checked.items():
        results.modules[name].in_place_diff = module.nav_check.worst
        module.nav_check = None
    # A second warm-up: CUDA graphs are recorded on a shape's second call, not its first. With one,
    # Whisper-small's 64 decoder lengths on an H100 timed 0.70 s against 0.25 s once recorded.
    run_pipeline(pipe, samples)
    timing = results.timing
    assert timing is not None
    if swapped:  # eager again beside the variants: its figure from before the modules were optimized is stale
        outputs, optimized, eager_times = alternated(run_pipeline, pipe, samples, swapped, repeats)
        speedups = ratios(eager_times, optimized)
        interval = median_interval(speedups)
        timing.eager_s, timing.optimized_s = statistics.median(eager_times), statistics.median(optimized)
        timing.speedup_low, timing.speedup_high = interval.low, interval.high
        results.speedup = statistics.median(speedups)
    else:
        outputs, timing.optimized_s = timed(pipe, samples, repeats)
        timing.speedup_low = timing.speedup_high = None
        results.speedup = timing.eager_s / timing.optimized_s if timing.optimized_s > 0 else None
    largest, relative, mismatched = differences(as_arrays(outputs), eager)
    precisions = [results.modules[name].precision or "fp32" for name in swapped] or ["fp32"]
    lowest = max(precisions, key=lambda p: PIPELINE_TOLERANCES[p][0])
    default_tolerance, default_mismatch = PIPELINE_TOLERANCES[lowest]
    results.tolerance = default_tolerance if tolerance is None else tolerance
    results.mismatch_tolerance = default_mismatch if mismatch_tolerance is None else mismatch_tolerance
    results.max_output_diff, results.relative_output_diff, results.mismatched = largest, relative, mismatched
    results.passed = relative <= results.tolerance and mismatched <= results.mismatch_tolerance
    if results.passed:
        return
    outside = [name for name in swapped
               if (results.modules[name].in_place_diff or 0.0) > DEFAULT_TOLERANCES[results.modules[name].precision
                                                                                  or "fp32"][1]]
    blamed = outside or sorted(swapped, key=lambda name: -(results.modules[name].in_place_diff or 0.0))[:1]
    shown = ", ".join(f"{name} ({results.modules[name].best}: {results.modules[name].in_place_diff:.2e} in place)"
                      for name in blamed)
    results.error = (f"the optimized pipeline's outputs differ from eager by {relative:.2e} of their magnitude "
                     f"(tolerance {results.tolerance:g}) and {mismatched:.1%} of integer elements (tolerance "
                     f"{results.mismatch_tolerance:.0%}); responsible: {shown}. Narrow the search "
                     "(precisions=['fp32']) or pass a wider tolerance")


def load_optimized(pipe: Any, workspace: Union[str, Path] = "nav-pipeline", *,
                   modules: Optional[Sequence[Any]] = None) -> dict[str, str]:
    """Swap each `inplace.Module` of `pipe` (or `modules`) to its chosen variant from `workspace`
    (an earlier `inplace.optimize`, in this process or another); returns what each module runs."""
    root = Path(workspace).resolve()
    path = root / PIPELINE_FILE
    if not path.is_file():
        raise BadInput(f"inplace.load_optimized: {path} does not exist; run inplace.optimize with this workspace first")
    results = PipelineResults.model_validate_json(path.read_text())
    running = {}
    found = find_modules(pipe, modules)
    winners = compiled_here(found, results)
    if winners:  # before anything compiles: torch.compile is lazy, the first call compiles
        load_cache(root, winners, weights_device(next(iter(winners.values()))[0]))
    for name, module in found.items():
        module.swap(None)
        result = results.modules.get(name)
        if result is None:
            warnings.warn(f"inplace module {name!r} was not optimized in {root}; it runs eager", stacklevel=2)
        elif result.status == "optimized" and swap_in(module, result, root):
            running[name] = module.nav_variant.name
        running.setdefault(name, "eager")
    return running
