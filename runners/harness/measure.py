"""Framework-neutral measurement: output comparison and the timing loop (numpy only)."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Optional

import numpy as np

from runners.contract.protocol import (
    AccuracyBudget,
    IOSpec,
    Job,
    JobResult,
    LatencyStats,
    OutputError,
    ProfileEntry,
    ProfileGap,
    ProfileSettings,
    Rival,
    Tolerance,
    Verification,
)


def compare_output(actual: np.ndarray, reference: np.ndarray, tolerance: Tolerance,
                   budget: Optional[AccuracyBudget] = None) -> OutputError:
    """Compare one output with numpy.allclose's rule, |a - r| <= atol + rtol * |r|, or, for a
    quantized variant, by its accuracy budget (`budget_figures`).

    The reported relative error divides by |r| + atol, so elements at or near zero
    are judged by absolute error instead of blowing up.
    """
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"shape {list(a.shape)} differs from the reference's {list(r.shape)}")
    if a.size == 0:
        return OutputError(0.0, 0.0, tolerance.atol, tolerance.rtol, True)
    finite = bool(np.isfinite(a).all())
    diff = np.abs(a - r)
    max_abs = float(diff.max()) if finite else float("inf")
    max_rel = float((diff / (np.abs(r) + tolerance.atol)).max()) if finite else float("inf")
    passed = finite and bool((diff <= tolerance.atol + tolerance.rtol * np.abs(r)).all())
    if budget is None:
        return OutputError(max_abs, max_rel, tolerance.atol, tolerance.rtol, passed)
    cosine, top1 = budget_figures(a, r)
    passed = (finite and cosine >= budget.min_cosine
              and (budget.min_top1 is None or top1 is None or top1 >= budget.min_top1)
              and (budget.max_abs is None or max_abs <= budget.max_abs))
    return OutputError(max_abs, max_rel, tolerance.atol, tolerance.rtol, passed, cosine, top1, budget)


def budget_figures(actual: np.ndarray, reference: np.ndarray) -> tuple[float, Optional[float]]:
    """The cosine similarity of the whole output with the reference, and, for an output that looks
    like class scores (2-D: a row per sample, 2 or more classes), the share of rows whose top-1 class
    agrees (None for other outputs: a (batch, tokens, features) output's features are no classes)."""
    a, r = actual.ravel(), reference.ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(r))
    cosine = float(a @ r / norms) if norms > 0 else float(np.array_equal(a, r))
    if actual.ndim != 2 or actual.shape[1] < 2 or actual.size == 0:
        return cosine, None
    return cosine, float((actual.argmax(axis=1) == reference.argmax(axis=1)).mean())


def verify_outputs(
    actual: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    tolerances: Mapping[str, Tolerance],
    budgets: Optional[Mapping[str, AccuracyBudget]] = None,
) -> Verification:
    """Each output against the reference: by its tolerance, or where `budgets` names it (a quantized
    variant's job), by its accuracy budget."""
    if list(actual) != list(reference):
        raise ValueError(f"outputs {list(actual)} differ from the reference's {list(reference)}")
    budgets = budgets or {}
    outputs = {name: compare_output(actual[name], reference[name], tolerances[name], budgets.get(name))
               for name in reference}
    return Verification(passed=all(o.passed for o in outputs.values()), outputs=outputs)


def verification_result(job: Job, verification: Verification) -> JobResult:
    """A verify job's result: `failed` with the outputs that missed their tolerance."""
    if verification.passed:
        ran = verification.batch_sizes or job.batch_sizes  # none named: the samples as they are, no gap
        left_out = [size for size in job.batch_sizes if size not in ran]
        return JobResult(job.id, job.kind, "ok", verification=verification,
                         gaps=[ProfileGap(size, OUT_OF_MEMORY_GAP) for size in left_out])
    failed = [name for name, o in verification.outputs.items() if not o.passed]
    if any(verification.outputs[name].budget for name in failed):
        return JobResult(job.id, job.kind, "failed", verification=verification,
                         error="outside the accuracy budget: " + "; ".join(
                             budget_miss(name, verification.outputs[name]) for name in failed))
    return JobResult(job.id, job.kind, "failed", error=f"outside tolerance: {', '.join(failed)}",
                     verification=verification)


def budget_miss(name: str, error: OutputError) -> str:
    """`logits: cosine 0.9812 < 0.99, top-1 0.875 < 0.9`: the figures that missed, with the budget."""
    budget = error.budget
    if budget is None:
        return name
    misses = []
    if error.cosine is not None and error.cosine < budget.min_cosine:
        misses.append(f"cosine {error.cosine:.7f} < {budget.min_cosine}")
    if budget.min_top1 is not None and error.top1 is not None and error.top1 < budget.min_top1:
        misses.append(f"top-1 {error.top1:.3f} < {budget.min_top1}")
    if budget.max_abs is not None and error.max_abs_err > budget.max_abs:
        misses.append(f"max abs {error.max_abs_err:.3g} > {budget.max_abs}")
    return f"{name}: {', '.join(misses) or 'not finite'}"


def take_rows(array: np.ndarray, rows: np.ndarray, axis: int) -> np.ndarray:
    """The given rows of `array` along `axis`, contiguous (as a model takes its inputs)."""
    return np.ascontiguousarray(np.take(array, rows, axis=axis))


def batch_of(samples: Mapping[str, np.ndarray], batch_size: int, batch_axis: int = 0) -> dict[str, np.ndarray]:
    """Repeat the samples along the batch axis until there are `batch_size` of them."""
    return {name: take_rows(array, np.arange(batch_size) % array.shape[batch_axis], batch_axis)
            for name, array in samples.items()}


def inputs_at(samples: Mapping[str, np.ndarray], io: Optional[IOSpec], batch_size: int) -> dict[str, np.ndarray]:
    """The model's inputs for one call at `batch_size` (an export's example, a profiled call): the
    samples repeated along the batch axis to `batch_size`, or, for a model without a batch axis
    (`io.batch_axis` None), the samples at their own shapes, whatever the size. No io: axis 0."""
    if io is None:
        return batch_of(samples, batch_size)
    if io.batch_axis is None:
        return dict(samples)
    return batch_of(samples, batch_size, io.batch_axis)


def call_rows(rows: int, batch_size: int) -> list[np.ndarray]:
    """The sample rows of each call that checks a variant at `batch_size`: ceil(rows / batch_size)
    calls of `batch_size` rows, taken cyclically, so that every sample is checked at that size (a
    call larger than the samples repeats them)."""
    calls = -(-rows // batch_size)
    return [np.arange(start, start + batch_size) % rows for start in range(0, calls * batch_size, batch_size)]


def sample_rows(samples: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                batch_axis: Optional[int]) -> Optional[int]:
    """How many rows the samples hold on the batch axis, where every input and reference output holds
    that many; only then does each output row answer one sample row, to be checked at other batch
    sizes. None: no batch axis, or tensors that disagree on it (an output without the axis)."""
    if batch_axis is None:
        return None
    sizes = {a.shape[batch_axis] if a.ndim > batch_axis else 0 for a in [*samples.values(), *reference.values()]}
    rows = sizes.pop() if len(sizes) == 1 else 0
    return rows or None


def verify_at_batch_sizes(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                          samples: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                          job: Job) -> Verification:
    """A verify job's verification, where `run` calls the variant on inputs and returns its outputs as
    numpy arrays (copied off the device at once: a CUDA graph overwrites its outputs on the next call).

    A compiled variant runs one graph per batch size, so where its job names the batch sizes it is
    profiled at, every sample row is checked at each of them (`call_rows`), in one verification whose
    figures are the worst over all. Otherwise, or without rows to take (`sample_rows`), the samples
    run as they are."""
    axis = job.io.batch_axis if job.io is not None else None
    rows = sample_rows(samples, reference, axis)
    if not job.batch_sizes or rows is None or axis is None:
        return verify_outputs(run(dict(samples)), reference, job.tolerances, job.budgets)
    calls: list[np.ndarray] = []
    outputs: list[dict[str, np.ndarray]] = []
    verified: list[int] = []
    for size in job.batch_sizes:
        taken_at_size = call_rows(rows, size)
        try:
            at_size = [run({name: take_rows(array, taken, axis) for name, array in samples.items()})
                       for taken in taken_at_size]
        except Exception as error:
            if not (verified and out_of_memory(error)):
                raise
            break  # larger batches need more: they are left out, as this one (verification_result)
        calls += taken_at_size
        outputs += at_size
        verified.append(size)
    actual = {name: np.concatenate([output[name] for output in outputs], axis=axis) for name in outputs[0]}
    every = np.concatenate(calls)
    expected = {name: take_rows(array, every, axis) for name, array in reference.items()}
    return replace(verify_outputs(actual, expected, job.tolerances, job.budgets), batch_sizes=verified)


# What frameworks say when a device (or the host) has no memory left for a call: torch's
# OutOfMemoryError, TensorFlow's ResourceExhaustedError ("OOM when allocating"), XLA's RESOURCE_EXHAUSTED,
# ONNX Runtime's "Failed to allocate memory", TensorRT's and CUDA's "out of memory", Python's MemoryError.
OUT_OF_MEMORY_SIGNS = ("out of memory", "outofmemory", "resourceexhausted", "resource_exhausted",
                       "oom when allocating", "failed to allocate memory", "memoryerror")
OUT_OF_MEMORY_GAP = "out of memory at this batch size or a smaller one"


def out_of_memory(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return any(sign in text for sign in OUT_OF_MEMORY_SIGNS)


def beaten_by(point: ProfileEntry, rivals: list[Rival], margin: float) -> Optional[str]:
    """The first rival whose profile at `point`'s batch size has at least (1 + margin) times its
    throughput and a p99 no higher than its p50: then `point` can win by no objective (throughput,
    latency, or throughput within a p99 budget, which the rival meets wherever `point` does)."""
    for rival in rivals:
        for entry in rival.profile:
            if (entry.batch_size == point.batch_size and entry.beaten_by is None
                    and entry.throughput >= (1 + margin) * point.throughput
                    and entry.latency_ms.p99 <= point.latency_ms.p50):
                return rival.variant
    return None


def time_calls(run: Callable[[], object], settings: ProfileSettings, batch_size: int,
               rivals: Optional[list[Rival]] = None) -> ProfileEntry:
    """Time `run` (one synchronous inference, device work included) until stable.

    Calls are timed one by one in windows of at least `window_ms` and `min_window_calls`
    calls. After `stable_windows` windows the measurement is stable when the medians of
    the last `stable_windows` windows lie within `stability` of their mean; at most
    `max_windows` windows are run. Statistics come from the calls of those last windows.
    A point that takes longer than `max_point_s` stops early, unstable: warm-up after a
    quarter of it, the windows (each of at least one call) once it is spent. A point that
    one of `rivals` beats after the first window (`beaten_by`) stops there.
    """
    start_ns = time.perf_counter_ns()
    budget_ns = settings.max_point_s * 1e9
    for _ in range(settings.warmup_calls):
        run()
        if time.perf_counter_ns() - start_ns > budget_ns / 4:
            break
    windows: list[np.ndarray] = []
    stable = False
    window_ns = settings.window_ms * 1e6
    while len(windows) < settings.max_windows:
        samples: list[int] = []
        window_start = time.perf_counter_ns()
        while len(samples) < settings.min_window_calls or time.perf_counter_ns() - window_start < window_ns:
            if samples and time.perf_counter_ns() - start_ns > budget_ns:
                break
            t0 = time.perf_counter_ns()
            run()
            samples.append(time.perf_counter_ns() - t0)
        windows.append(np.asarray(samples, dtype=np.float64) / 1e6)
        if len(windows) == 1 and rivals and settings.prune_margin is not None:
            first = statistics(windows, len(windows), batch_size, stable=False)
            rival = beaten_by(first, rivals, settings.prune_margin)
            if rival is not None:
                return replace(first, beaten_by=rival)
        if len(windows) >= settings.stable_windows:
            medians = np.array([np.median(w) for w in windows[-settings.stable_windows:]])
            if np.all(np.abs(medians - medians.mean()) <= settings.stability * medians.mean()):
                stable = True
                break
        if time.perf_counter_ns() - start_ns > budget_ns:
            break
    return statistics(windows[-settings.stable_windows:], len(windows), batch_size, stable)


def time_interleaved(calls: Mapping[str, Callable[[], object]], settings: ProfileSettings,
                     clock: Callable[[], int] = time.perf_counter_ns) -> dict[str, list[float]]:
    """Time the candidates interleaved, A B C A B C ...: per candidate, its median call (ms) in each
    of `settings.rounds` rounds of `settings.round_calls` calls. Every candidate is warmed up first
    (`warmup_calls`), so that no round holds a compile or a first allocation. `clock` gives
    nanoseconds (a test's clock: no sleeping)."""
    for run in calls.values():
        for _ in range(settings.warmup_calls):
            run()
    rounds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(settings.rounds):
        for name, run in calls.items():
            times = []
            for _ in range(settings.round_calls):
                start = clock()
                run()
                times.append((clock() - start) / 1e6)
            rounds[name].append(float(np.median(times)))
    return rounds


# Calls of each candidate before a comparison's turn: a compiled one compiles at its first call, and
# with CUDA graphs (torch's cudagraph trees) runs that one as a warm-up, records at the second and
# replays from the third.
CALLS_BEFORE_TURN = 3


def compare_result(job: Job, calls: Mapping[str, Callable[[], object]], timing: Timing) -> JobResult:
    """A compare job's result: its candidates (`calls`, each the one synchronous call to time at the
    job's batch size, loaded before this call) run a few times, so that what compiles compiles before
    the turn, which then holds only the timing; then timed interleaved once the job has its turn."""
    for run in calls.values():
        for _ in range(CALLS_BEFORE_TURN):
            run()
    timing.wait_for_turn(job)
    return JobResult(job.id, job.kind, "ok", rounds=time_interleaved(calls, job.profiling))


def statistics(last: list[np.ndarray], windows: int, batch_size: int, stable: bool) -> ProfileEntry:
    """A point's figures from the calls of its `last` windows (milliseconds each), of `windows` run."""
    latencies = np.concatenate(last)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(latencies, [50, 90, 95, 99]))
    mean = float(latencies.mean())
    return ProfileEntry(
        batch_size=batch_size,
        latency_ms=LatencyStats(p50=p50, p90=p90, p95=p95, p99=p99, mean=mean),
        throughput=batch_size * 1000.0 / mean,
        windows=windows,
        stable=stable,
    )


class Timing:
    """What the timed jobs of one runner process share: the turn they wait for on a GPU that other
    sessions share (`take_turn`, None where there is none: it returns the rivals the host knows of
    then), and the profiles this process measured, which its later profiles are measured against too."""

    def __init__(self, take_turn: Optional[Callable[[Job], list[Rival]]] = None):
        self.take_turn = take_turn
        self.profiled: list[Rival] = []
        self.waited_s = 0.0  # for turns, all told: not the jobs' own time

    def wait_for_turn(self, job: Job) -> list[Rival]:
        """Wait for `job`'s turn where there is one; the rivals the host gave with it."""
        asked = time.perf_counter()
        from_host = self.take_turn(job) if self.take_turn is not None else []
        self.waited_s += time.perf_counter() - asked
        return from_host

    def start(self, job: Job) -> list[Rival]:
        """Wait for the profile's turn; the rivals of `job`'s variant (never itself)."""
        from_host = self.wait_for_turn(job)
        return [rival for rival in [*self.profiled, *from_host] if rival.variant != job.variant]

    def add(self, job: Job, profile: list[ProfileEntry]) -> None:
        self.profiled.append(Rival(job.variant, [entry for entry in profile if entry.beaten_by is None]))


def profile_source(job: Job, call_at: Callable[[int], Callable[[], object]]) -> list[ProfileEntry]:
    """The source model run as is, timed at the reference job's batch sizes (none given: not timed):
    what the report measures the best variant against. It never fails the reference: a source that
    cannot run at a batch size (an ONNX graph with a fixed batch) is reported by the host."""
    try:
        return profile_result(job, call_at, Timing()).profile  # alone: no turn, no rivals
    except Exception as error:  # noqa: BLE001 - the reference's outputs matter, its timing is extra
        print(f"[nav-orch runner] the source model was not timed: {type(error).__name__}: {error}", flush=True)
        return []


def profile_result(job: Job, call_at: Callable[[int], Callable[[], object]], timing: Timing) -> JobResult:
    """A profile job's result: the variant timed at each of the job's batch sizes, where
    `call_at(batch_size)` prepares that batch and returns the one synchronous call to time. The
    timing starts once `timing` gives the turn, so that loading the variant (before this call)
    overlaps other sessions' work."""
    rivals = timing.start(job)
    entries: list[ProfileEntry] = []
    gaps: list[ProfileGap] = []
    for size in job.batch_sizes:
        try:
            entries.append(time_calls(call_at(size), job.profiling, size, rivals))
        except Exception as error:
            # A batch size the device has no memory for costs its point and the larger ones', not the
            # variant: it stays eligible at those it ran. One that runs no batch at all fails.
            if not (entries and out_of_memory(error)):
                raise
            gaps = [ProfileGap(left, OUT_OF_MEMORY_GAP) for left in job.batch_sizes if left >= size]
            print(f"[nav-orch runner] batch size {size} ran out of memory: not timed at {size} or above "
                  f"({type(error).__name__})", flush=True)
            break
    timing.add(job, entries)
    return JobResult(job.id, job.kind, "ok", profile=entries, gaps=gaps)
