"""Choosing the best variant by the objective, under an optional p99 latency budget."""
from __future__ import annotations

from typing import Optional

from orchestrator.config import Objective
from orchestrator.results import Selection, VariantResult
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
