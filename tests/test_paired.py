"""Confident selection's rule (orchestrator/run/paired.py): the median of paired ratios, its
order-statistic interval, a tie where the interval holds 1, and the cheaper artifact on a tie."""
from __future__ import annotations

import pytest

from orchestrator.run.paired import Cost, cheapest, decide, median_interval, paired, within_point_budget
from runners.contract.protocol import ProfileSettings


def test_the_interval_is_the_order_statistics_the_binomial_allows():
    # n = 10: x(2)..x(9), coverage 1 - 2 * 11/1024; n = 20: x(6)..x(15) (the textbook table's).
    ten = median_interval([float(v) for v in range(10, 0, -1)])  # order of the rounds does not matter
    assert (ten.low, ten.high) == (2.0, 9.0) and ten.coverage == pytest.approx(1 - 22 / 1024)
    twenty = median_interval([float(v) for v in range(1, 21)])
    assert (twenty.low, twenty.high) == (6.0, 15.0) and twenty.coverage >= 0.95


def test_too_few_rounds_give_the_whole_range_with_its_lower_coverage():
    five = median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (five.low, five.high) == (1.0, 5.0) and five.coverage == pytest.approx(1 - 2 / 32)


def test_the_same_rounds_give_the_same_interval():
    values = [1.02, 0.99, 1.05, 1.01, 1.03, 1.04, 0.98, 1.02, 1.06, 1.01]
    assert median_interval(values) == median_interval(list(values))  # deterministic: no resampling


def test_a_clear_winner_carries_its_margin_and_an_interval_above_1():
    rounds = {"a": [1.00, 1.01, 0.99, 1.00, 1.02, 1.00, 0.99, 1.01, 1.00, 1.00],
              "b": [1.04, 1.05, 1.03, 1.04, 1.07, 1.03, 1.04, 1.06, 1.04, 1.05]}
    decision = decide(rounds, {})
    assert decision.winner == decision.fastest == "a" and not decision.tie and decision.broken_by is None
    (margin,) = decision.compared
    assert margin.rival == "b" and margin.rounds == 10
    assert 1.0 < margin.interval.low <= margin.ratio <= margin.interval.high
    assert margin.ratio == pytest.approx(1.04, abs=0.01)


def test_pairing_sees_through_a_drift_that_unpaired_figures_cannot():
    # The machine slows 30 % over the rounds; a is 2 % faster within every round. Unpaired, the
    # candidates' ranges overlap all but entirely; paired, every ratio is 1.02.
    drift = [1.0 + 0.03 * i for i in range(10)]
    rounds = {"b": [d * 1.02 for d in drift], "a": drift}
    decision = decide(rounds, {})
    assert decision.winner == "a" and not decision.tie
    assert decision.compared[0].interval.low == pytest.approx(1.02)


def test_a_rival_within_the_noise_ties_and_the_cheaper_artifact_wins():
    # b is faster by median time, by a hair; its ratios to a straddle 1.
    rounds = {"a": [1.00, 1.03, 0.98, 1.02, 1.00, 0.97, 1.04, 1.01, 0.99, 1.02],
              "b": [1.01, 0.99, 1.00, 0.98, 1.03, 0.99, 1.00, 0.97, 1.02, 0.98]}
    costs = {"a": Cost(servable=True, size_bytes=1000), "b": Cost(servable=True, size_bytes=5000)}
    decision = decide(rounds, costs)
    assert decision.fastest == "b" and decision.tie
    assert decision.winner == "a" and decision.broken_by == "smaller"
    (against_b,) = decision.compared  # the winner's view: b's time over a's
    assert against_b.rival == "b" and against_b.tie


def test_only_the_rivals_within_the_noise_share_the_tie():
    rounds = {"a": [1.00, 1.03, 0.98, 1.02, 1.00, 0.97, 1.04, 1.01, 0.99, 1.02],
              "b": [1.01, 0.99, 1.00, 0.98, 1.03, 0.99, 1.00, 0.97, 1.02, 0.98],
              "c": [1.30] * 10}  # clearly slower, and cheapest: not in the tie
    costs = {"a": Cost(True, 1000), "b": Cost(True, 5000), "c": Cost(True, 10)}
    decision = decide(rounds, costs)
    assert decision.winner == "a" and [p.rival for p in decision.compared] == ["b", "c"]


def test_a_servable_artifact_before_a_smaller_one_then_the_faster_to_load():
    assert cheapest(["x", "y"], {"x": Cost(False, 10), "y": Cost(True, 10_000)}) == ("y", "servable")
    assert cheapest(["x", "y"], {"x": Cost(True, 10, 2.0), "y": Cost(True, 10, 0.5)}) == ("y", "faster to load")
    assert cheapest(["x", "y"], {"x": Cost(True, 10), "y": Cost(True, 10)}) == ("x", "order")
    # An unknown size counts as the most: a known one is cheaper.
    assert cheapest(["x", "y"], {"x": Cost(True), "y": Cost(True, 10**9)}) == ("y", "smaller")


def test_rounds_that_do_not_pair_are_refused():
    with pytest.raises(ValueError, match="pairs"):
        paired({"a": [1.0, 1.0], "b": [1.0]}, "a")


def test_a_tie_between_artifacts_that_cost_alike_goes_to_the_fastest():
    rounds = {"a": [1.00, 1.03, 0.98, 1.02, 1.00, 0.97, 1.04, 1.01, 0.99, 1.02],
              "b": [1.01, 0.99, 1.00, 0.98, 1.03, 0.99, 1.00, 0.97, 1.02, 0.98]}
    decision = decide(rounds, {"a": Cost(True, 10), "b": Cost(True, 10)})
    assert decision.tie and decision.winner == decision.fastest == "b" and decision.broken_by == "order"


def test_a_comparison_of_fast_calls_keeps_its_settings():
    settings = ProfileSettings()  # 20 rounds of 10 calls, 10 warm-up calls, 20 s a point
    assert within_point_budget(settings, 0.05) == settings
    assert within_point_budget(settings, 0.0) == settings


def test_slow_calls_get_fewer_calls_a_round_never_fewer_rounds():
    settings = ProfileSettings()
    fitted = within_point_budget(settings, 400.0)  # 20 s / (20 rounds x 400 ms): 2 calls a round
    assert fitted is not None and (fitted.rounds, fitted.round_calls, fitted.warmup_calls) == (20, 2, 10)
    fitted = within_point_budget(settings, 900.0)  # one call a round; a quarter of 20 s: 5 warm-up calls
    assert fitted is not None and (fitted.rounds, fitted.round_calls, fitted.warmup_calls) == (20, 1, 5)
    assert within_point_budget(settings, 1001.0) is None  # 20 rounds of one call: over 20 s
