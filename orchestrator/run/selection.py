"""Choosing the best variant by the objective, under an optional p99 latency budget."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from orchestrator.config import Objective
from orchestrator.results import PairedRatio, Selection, VariantResult, confidence_text, figure, gain
from orchestrator.run import untrusted
from orchestrator.run.paired import Cost, decide
from runners.contract.formats import FORMATS
from runners.contract.protocol import ProfileEntry


def _within(entry: ProfileEntry, budget_ms: Optional[float]) -> bool:
    return budget_ms is None or entry.latency_ms.p99 <= budget_ms


def _score(variant: VariantResult, objective: Objective,
           budget_ms: Optional[float]) -> Optional[tuple[float, ProfileEntry]]:
    """Higher is better; None when no profiled point of the variant fits the budget."""
    if objective == "latency":
        smallest = min(variant.profile, key=lambda e: e.batch_size)
        return (-smallest.latency_ms.p50, smallest) if _within(smallest, budget_ms) else None
    fitting = [e for e in variant.profile if _within(e, budget_ms)]
    if not fitting:
        return None
    best = max(fitting, key=lambda e: e.throughput)
    return best.throughput, best


def ranked(variants: list[VariantResult], objective: Objective, budget_ms: Optional[float]) -> list[str]:
    """The verified, profiled variants, best first (those within the budget before the rest)."""
    candidates = [v for v in variants if v.status == "ok" and v.profile]

    def order(variant: VariantResult) -> tuple[bool, float]:
        fitting = _score(variant, objective, budget_ms)
        score = fitting or _score(variant, objective, None)
        return (fitting is not None, score[0] if score else float("-inf"))

    return [v.name for v in sorted(candidates, key=order, reverse=True)]


def select_best(
    variants: list[VariantResult], objective: Objective, budget_ms: Optional[float]
) -> tuple[Optional[str], Selection]:
    """Pick among verified, profiled variants; ties go to the earlier variant."""
    candidates = [v for v in variants if v.status == "ok" and v.profile]
    if not candidates:
        return None, Selection(objective=objective, latency_budget_ms=budget_ms,
                               reason="no variant was verified and profiled")
    scored = [(s, v) for v in candidates if (s := _score(v, objective, budget_ms)) is not None]
    note = ""
    if not scored:
        note = f"; nothing met the p99 budget of {budget_ms} ms, so the budget was ignored"
        scored = [(s, v) for v in candidates if (s := _score(v, objective, None)) is not None]
    (value, entry), best = max(scored, key=lambda pair: pair[0][0])
    if objective == "latency":
        reason = f"lowest p50 latency at batch {entry.batch_size}: {entry.latency_ms.p50:.3f} ms"
    else:
        reason = f"highest throughput: {entry.throughput:,.0f}/s at batch {entry.batch_size}"
    if budget_ms is not None and not note:
        reason += f" within the p99 budget of {budget_ms} ms"
    return best.name, Selection(objective=objective, latency_budget_ms=budget_ms,
                                batch_size=entry.batch_size, reason=reason + note)


# --- confident selection: the close candidates timed again, interleaved (orchestrator/run/paired.py) ---

CLOSE_MARGIN = 0.10  # the single-pass noise on an H100 is 5-7 %: within this of the best, a rival may be as good


def close_candidates(variants: list[VariantResult], best: str, selection: Selection,
                     margin: float = CLOSE_MARGIN) -> list[str]:
    """The best and the verified variants within `margin` of it at the deciding batch size: those a
    single profile pass cannot tell apart, to be timed again interleaved. The best first."""
    by_name = {v.name: v for v in variants if v.status == "ok" and v.profile}
    ours = figure(by_name[best].profile, selection.objective, selection.batch_size) if best in by_name else None
    if ours is None:
        return [best]
    close = [name for name, v in by_name.items() if name != best
             and (theirs := figure(v.profile, selection.objective, selection.batch_size)) is not None
             and gain(ours, theirs, selection.objective) <= 1 + margin]
    return [best, *close]


def artifact_cost(variant: VariantResult, root: Path) -> Cost:
    """A variant's artifact as deployment sees it: servable by Triton (its format's registry entry),
    and its bytes in the workspace (a folder's files summed; None where there is no artifact)."""
    servable = FORMATS[variant.format].triton is not None
    if variant.artifact is None:
        return Cost(servable)
    try:  # sized with lstat only: a link a runner left there is never followed
        return Cost(servable, untrusted.check_tree(root, root / variant.artifact))
    except untrusted.UntrustedOutput:  # missing, or not plain data: no size to weigh
        return Cost(servable)


def confident(best: str, selection: Selection, rounds: Mapping[str, Sequence[float]],
              costs: Mapping[str, Cost]) -> tuple[str, Selection]:
    """Refine a single-pass choice by the candidates' interleaved rounds (each one's time per call in
    every round, at the selection's batch size): the winner by paired ratios, with its margin; on a
    tie, the cheaper artifact. Fewer than two candidates: the choice stands."""
    if len(rounds) < 2:
        return best, selection
    decision = decide(rounds, costs)
    compared = [PairedRatio(variant=p.rival, ratio=p.ratio, low=p.interval.low, high=p.interval.high)
                for p in decision.compared]
    refined = selection.model_copy(update=dict(
        rounds=decision.compared[0].rounds, confidence=decision.compared[0].interval.coverage,
        margin=compared[0], compared=compared, tie=decision.tie, tie_broken_by=decision.broken_by))
    text = f"timed again interleaved at batch {selection.batch_size}: {confidence_text(refined)}"
    reason = (f"{selection.reason}; {text}" if decision.winner == best
              else f"{text} ({best} led the single profile pass: {selection.reason})")
    return decision.winner, refined.model_copy(update=dict(reason=reason))
