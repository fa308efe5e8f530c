"""Confident selection: candidates timed interleaved (A B C A B C ...), compared by paired ratios.

A single profile pass cannot separate variants closer than its run-to-run noise (5-7 % on an H100),
so the choice among close candidates rests on rounds in which each candidate is timed once, in turn:
a drift of the machine (clocks, heat, a neighbour) hits every candidate of a round alike and cancels
in the round's ratio. The choice is by the median of the ratios, with a distribution-free interval
(order statistics of the ratios, no resampling: the same rounds always give the same answer).

Pure decisions, standard library only: the host decides, whatever measured the rounds.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import median
from typing import Literal, Optional

from runners.contract.protocol import ProfileSettings

CONFIDENCE = 0.95

# What set the chosen apart from the next cheapest on a tie ("order": nothing; the fastest, first among the
# tied, won).
TieBreak = Literal["servable", "smaller", "faster to load", "order"]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    coverage: float  # the interval's exact coverage of the median (at least the asked for, where rounds allow)

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Paired:
    """The chosen candidate against one rival: the median over rounds of rival time / chosen time
    (above 1: the chosen is faster), with its interval."""

    rival: str
    ratio: float
    interval: Interval
    rounds: int

    @property
    def tie(self) -> bool:
        return self.interval.holds(1.0)


@dataclass(frozen=True)
class Cost:
    """What a variant's artifact costs to deploy: a servable one (Triton) before one that is not,
    then the smaller, then the faster to load (None: not known, counted as the most)."""

    servable: bool
    size_bytes: Optional[int] = None
    load_s: Optional[float] = None

    def key(self) -> tuple[bool, float, float]:
        return (not self.servable, math.inf if self.size_bytes is None else self.size_bytes,
                math.inf if self.load_s is None else self.load_s)


@dataclass(frozen=True)
class Decision:
    winner: str
    fastest: str  # the lowest median time over the rounds
    compared: list[Paired]  # the winner against every other candidate, closest first
    tie: bool  # the fastest could not be told from another candidate: the cheaper artifact won
    broken_by: Optional[TieBreak] = None  # on a tie: "servable", "smaller", "faster to load" or "order"


def binomial_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The order-statistic interval for the median, [x(k), x(n+1-k)] with the largest k whose
    coverage, 1 - 2 P(Bin(n, 1/2) <= k-1), is still at least `confidence`. Too few values for that
    (fewer than 6 at 95 %): the whole range, with its lower coverage."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    k = 1
    while k < (n + 1) // 2 and 1 - 2 * binomial_cdf(k, n) >= confidence:
        k += 1
    return Interval(ordered[k - 1], ordered[n - k], 1 - 2 * binomial_cdf(k - 1, n))


def ratios(rival: Sequence[float], chosen: Sequence[float]) -> list[float]:
    """Per round: the rival's time over the chosen one's."""
    if len(rival) != len(chosen):
        raise ValueError(f"{len(rival)} rounds against {len(chosen)}: paired rounds come in pairs")
    return [r / c for r, c in zip(rival, chosen)]


def paired(rounds: Mapping[str, Sequence[float]], chosen: str, confidence: float = CONFIDENCE) -> list[Paired]:
    """`chosen` against every other candidate of `rounds` (each candidate's time in every round),
    closest first."""
    out = []
    for rival, times in rounds.items():
        if rival == chosen:
            continue
        each = ratios(times, rounds[chosen])
        out.append(Paired(rival, median(each), median_interval(each, confidence), len(each)))
    return sorted(out, key=lambda p: p.ratio)


def cheapest(names: Sequence[str], costs: Mapping[str, Cost]) -> tuple[str, TieBreak]:
    """The cheapest of `names` (earlier first among equals), and what set it apart from the next."""
    unknown = Cost(servable=False)
    order = sorted(names, key=lambda name: costs.get(name, unknown).key())  # stable: equals keep their order
    if len(order) == 1:
        return order[0], "order"
    first, second = (costs.get(name, unknown).key() for name in order[:2])
    reasons: tuple[TieBreak, ...] = ("servable", "smaller", "faster to load")
    return order[0], next((why for why, a, b in zip(reasons, first, second) if a != b), "order")


def decide(rounds: Mapping[str, Sequence[float]], costs: Mapping[str, Cost],
           confidence: float = CONFIDENCE) -> Decision:
    """The fastest by median time wins where every rival's interval lies above 1; the candidates it
    cannot be told from (their interval holds 1) tie with it, and the cheapest artifact of those wins."""
    if not rounds:
        raise ValueError("no candidates")
    fastest = min(rounds, key=lambda name: median(rounds[name]))  # dicts keep order: earlier first on equals
    tied = [fastest, *(p.rival for p in paired(rounds, fastest, confidence) if p.tie)]
    if len(tied) == 1:
        return Decision(fastest, fastest, paired(rounds, fastest, confidence), tie=False)
    winner, broken_by = cheapest(tied, costs)
    return Decision(winner, fastest, paired(rounds, winner, confidence), tie=True, broken_by=broken_by)


def within_point_budget(settings: ProfileSettings, slowest_call_ms: float) -> Optional[ProfileSettings]:
    """The comparison's settings, so that each candidate takes no longer to time than one profile point
    may (`max_point_s`; its warm-up a quarter of that) where its calls take `slowest_call_ms` or less:
    fewer calls a round and fewer warm-up calls, never fewer rounds (the interval needs them). None
    where even one call a round would not fit: the single pass decides."""
    budget_ms = settings.max_point_s * 1000
    if slowest_call_ms <= 0:
        return settings
    if settings.rounds * slowest_call_ms > budget_ms:
        return None
    return replace(settings,
                   round_calls=max(1, min(settings.round_calls, int(budget_ms // (settings.rounds * slowest_call_ms)))),
                   warmup_calls=max(1, min(settings.warmup_calls, int(budget_ms / 4 // slowest_call_ms))))
