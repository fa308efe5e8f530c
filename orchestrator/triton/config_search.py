"""The decisions of the Triton configuration search (issue "Triton configuration search"), kept apart
from the server and the client that carry them out, as runners/toolchains/tensorrt_build.py keeps
TensorRT's decisions apart from its SDK calls: the space of serving configurations, the objective,
the concurrency sweep that finds a configuration's best point, Model Analyzer's quick search (a hill
climb from the default configuration over its neighbours) and the full one (every configuration),
and the Pareto front the report draws. Nothing here starts a server: `measure` is passed in.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Optional

from orchestrator.config import Objective

SearchMode = Literal["quick", "full", "off"]
# A sweep stops raising the concurrency once throughput grew by less than this: more requests in
# flight then only queue (Model Analyzer's default stopping rule is alike).
SWEEP_MIN_GAIN = 0.05


@dataclass(frozen=True, order=True)
class ServingConfig:
    """What the search sets in a model's config.pbtxt."""

    instances: int = 1  # instance_group count (per GPU, or CPU instances)
    max_queue_delay_us: int = 0  # dynamic_batching.max_queue_delay_microseconds
    max_batch_size: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()  # dynamic_batching.preferred_batch_size

    @property
    def name(self) -> str:
        preferred = "-p" + ",".join(map(str, self.preferred_batch_sizes)) if self.preferred_batch_sizes else ""
        return f"i{self.instances}-d{self.max_queue_delay_us}-b{self.max_batch_size}{preferred}"


@dataclass(frozen=True)
class Space:
    """The values each setting may take. `batch_sizes` are the profiled ones: the largest is the
    `max_batch_size` of every configuration, never searched, because a smaller one would refuse
    requests of a batch the user declared; the batcher is tuned by its preferred size instead."""

    batch_sizes: tuple[int, ...]
    instances: tuple[int, ...] = (1, 2, 4)
    queue_delays_us: tuple[int, ...] = (0, 100, 500, 2000)

    @property
    def max_batch_size(self) -> int:
        return max(self.batch_sizes)

    def default(self) -> ServingConfig:
        """What nav-orch serves without a search: one instance, the batcher's defaults, the largest batch."""
        return ServingConfig(1, 0, self.max_batch_size)

    def preferred_choices(self) -> list[tuple[int, ...]]:
        """None, or one profiled batch size above 1; an unbatched model (0) has no batcher to prefer sizes."""
        if self.max_batch_size <= 0:
            return [()]
        return [()] + [(size,) for size in sorted(set(self.batch_sizes)) if size > 1]

    def neighbours(self, config: ServingConfig) -> list[ServingConfig]:
        """The configurations one step away on one setting (the next value up or down), and every
        other preferred batch size."""
        found = []
        for values, current, build in (
            (self.instances, config.instances, lambda v: replace(config, instances=v)),
            (self.queue_delays_us, config.max_queue_delay_us, lambda v: replace(config, max_queue_delay_us=v)),
        ):
            ordered = sorted(set(values))
            index = ordered.index(current) if current in ordered else 0
            found += [build(ordered[i]) for i in (index - 1, index + 1) if 0 <= i < len(ordered)]
        found += [replace(config, preferred_batch_sizes=preferred) for preferred in self.preferred_choices()
                  if preferred != config.preferred_batch_sizes]
        return found

    def every(self) -> list[ServingConfig]:
        """The whole grid, for the full search."""
        return [ServingConfig(i, d, self.max_batch_size, p) for i, d, p in itertools.product(
                    sorted(set(self.instances)), sorted(set(self.queue_delays_us)), self.preferred_choices())]


@dataclass
class Trial:
    """A configuration as measured at its best concurrency; `error` where it did not load or answer."""

    config: ServingConfig
    concurrency: Optional[int] = None
    throughput: float = 0.0
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    server_queue_ms: Optional[float] = None
    server_compute_ms: Optional[float] = None
    error: Optional[str] = None


def score(trial: Trial, objective: Objective, budget_ms: Optional[float]) -> Optional[float]:
    """Higher is better; None for a failed trial or one over the p99 budget. The latency objective
    is optimize's own: the lowest p50."""
    if trial.error is not None or trial.p99_ms is None or trial.p50_ms is None:
        return None
    if budget_ms is not None and trial.p99_ms > budget_ms:
        return None
    return trial.throughput if objective == "throughput" else -trial.p50_ms


def sweep(measure_at: Callable[[int], Trial], concurrencies: Sequence[int]) -> list[Trial]:
    """Measure at rising concurrencies until throughput stops growing by SWEEP_MIN_GAIN, or a point
    fails; returns every point measured."""
    points: list[Trial] = []
    for concurrency in sorted(concurrencies):
        point = measure_at(concurrency)
        points.append(point)
        if point.error is not None:
            break
        earlier = [p.throughput for p in points[:-1] if p.error is None]
        if earlier and point.throughput < max(earlier) * (1 + SWEEP_MIN_GAIN):
            break
    return points


def best_point(points: Sequence[Trial], objective: Objective, budget_ms: Optional[float]) -> Trial:
    """A configuration's point that the search compares: the best scored, else the first failure."""
    scored = [(s, p) for p in points if (s := score(p, objective, budget_ms)) is not None]
    if scored:
        return max(scored, key=lambda pair: pair[0])[1]
    measured = [p for p in points if p.error is None]
    return min(measured, key=lambda p: p.p99_ms or float("inf")) if measured else points[0]


@dataclass
class SearchOutcome:
    trials: list[Trial]  # in the order they were measured
    default: Trial
    chosen: Trial
    gain: Optional[float]  # the chosen's throughput over the default's
    note: Optional[str] = None  # why the choice is not what the objective asked (an impossible budget)
    stopped: Optional[str] = None  # "budget" where the time ran out before the search ended


def search(mode: SearchMode, measure: Callable[[ServingConfig], Trial], space: Space,
           out_of_time: Callable[[], bool], objective: Objective, budget_ms: Optional[float]) -> SearchOutcome:
    """Quick: a hill climb from the default configuration, to the best neighbour while it improves
    the objective. Full: every configuration. Either stops when `out_of_time()`, keeping what it
    measured. The default is always measured first."""
    start = space.default()
    trials: dict[ServingConfig, Trial] = {start: measure(start)}
    stopped = None

    def value(trial: Trial) -> Optional[float]:
        return score(trial, objective, budget_ms)

    if mode == "full":
        for config in space.every():
            if config in trials:
                continue
            if out_of_time():
                stopped = "budget"
                break
            trials[config] = measure(config)
    elif mode == "quick":
        current = start
        while True:
            fresh = [n for n in space.neighbours(current) if n not in trials]
            for config in fresh:
                if out_of_time():
                    stopped = "budget"
                    break
                trials[config] = measure(config)
            if stopped:
                break
            here = value(trials[current])
            better = [(v, c) for c in space.neighbours(current)
                      if (v := value(trials[c])) is not None and (here is None or v > here)]
            if not better:
                break
            current = max(better, key=lambda pair: pair[0])[1]
    default = trials[start]
    scored = [(v, t) for t in trials.values() if (v := value(t)) is not None]
    note = None
    if scored:
        chosen = max(scored, key=lambda pair: pair[0])[1]
    else:
        measured = [t for t in trials.values() if t.error is None and t.p99_ms is not None]
        chosen = min(measured, key=lambda t: t.p99_ms or float("inf")) if measured else default
        if budget_ms is not None and measured:
            note = (f"no configuration met the p99 budget of {budget_ms:g} ms; the best p99 seen was "
                    f"{chosen.p99_ms:.3f} ms ({chosen.config.name})")
        elif not measured:
            note = "no configuration could be measured"
    gain = chosen.throughput / default.throughput if default.error is None and default.throughput > 0 else None
    return SearchOutcome(list(trials.values()), default, chosen, gain, note, stopped)


def pareto_front(trials: Sequence[Trial]) -> list[Trial]:
    """The measured trials no other beats on both throughput (higher) and p99 (lower), by throughput."""
    measured = [t for t in trials if t.error is None and t.p99_ms is not None]
    front = [t for t in measured if not any(
        o.throughput >= t.throughput and (o.p99_ms or 0) <= (t.p99_ms or 0)
        and (o.throughput > t.throughput or (o.p99_ms or 0) < (t.p99_ms or 0)) for o in measured)]
    return sorted(front, key=lambda t: t.throughput)
