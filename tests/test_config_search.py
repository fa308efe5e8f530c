"""The Triton configuration search's decisions (orchestrator/triton/config_search.py), with a
measuring function that stands in for a server: the bookkeeping (every configuration tried is
measured once and kept), the hill climb, the objective under a p99 budget, the time budget, failures
and the Pareto front."""
from __future__ import annotations

from typing import Optional

import pytest

from orchestrator.triton.config_search import (
    ServingConfig,
    Space,
    Trial,
    best_point,
    pareto_front,
    score,
    search,
    sweep,
)

SPACE = Space(batch_sizes=(1, 8, 64))


class Served:
    """A model whose throughput grows with instances up to 2, with the queue delay up to 500 us and
    with the preferred batch size; p99 grows with the delay. Records what it was asked to measure."""

    def __init__(self, fail: Optional[set[int]] = None):
        self.asked: list[ServingConfig] = []
        self.fail = fail or set()

    def __call__(self, config: ServingConfig) -> Trial:
        self.asked.append(config)
        if config.instances in self.fail:
            return Trial(config, error="out of GPU memory")
        throughput = 1000 * min(config.instances, 2) * {0: 1.0, 100: 1.2, 500: 1.5, 2000: 1.4}[
            config.max_queue_delay_us]
        throughput *= {(): 1.0, (8,): 1.05, (64,): 1.1}[config.preferred_batch_sizes]
        p99 = 2.0 + config.max_queue_delay_us / 100
        return Trial(config, concurrency=4, throughput=throughput, p50_ms=p99 / 2, p99_ms=p99)


def never() -> bool:
    return False


def test_the_quick_search_climbs_to_the_best_and_measures_each_configuration_once():
    served = Served()
    outcome = search("quick", served, SPACE, never, "throughput", None)
    assert len(served.asked) == len(set(served.asked)) == len(outcome.trials)
    assert [t.config for t in outcome.trials] == served.asked  # every configuration measured is recorded
    assert served.asked[0] == SPACE.default() == ServingConfig(1, 0, 64) == outcome.default.config
    best = max(outcome.trials, key=lambda t: t.throughput)
    assert outcome.chosen is best and best.config.instances == 2 and best.config.max_queue_delay_us == 500
    assert best.config.preferred_batch_sizes == (64,)
    assert outcome.gain == pytest.approx(best.throughput / 1000) and outcome.note is None and outcome.stopped is None
    assert len(outcome.trials) < len(SPACE.every())  # a climb, not the grid


def test_the_full_search_measures_the_whole_grid():
    served = Served()
    outcome = search("full", served, SPACE, never, "throughput", None)
    assert sorted(served.asked) == sorted(SPACE.every()) and len(SPACE.every()) == 3 * 4 * 3
    assert outcome.chosen.throughput == max(t.throughput for t in outcome.trials)


def test_off_measures_the_default_alone():
    served = Served()
    outcome = search("off", served, SPACE, never, "throughput", None)
    assert served.asked == [SPACE.default()] and outcome.chosen is outcome.default and outcome.gain == 1.0


def test_the_p99_budget_rules_out_the_faster_configurations():
    outcome = search("full", Served(), SPACE, never, "throughput", 4.0)  # delays of 500 us and more: p99 7 ms
    assert outcome.chosen.p99_ms <= 4.0 and outcome.chosen.config.max_queue_delay_us <= 100
    assert outcome.chosen.throughput == max(t.throughput for t in outcome.trials if t.p99_ms <= 4.0)


def test_an_impossible_budget_keeps_the_lowest_p99_and_names_it():
    outcome = search("quick", Served(), SPACE, never, "throughput", 0.5)
    assert outcome.chosen.p99_ms == min(t.p99_ms for t in outcome.trials)
    assert outcome.note == (f"no configuration met the p99 budget of 0.5 ms; the best p99 seen was 2.000 ms "
                            f"({outcome.chosen.config.name})")


def test_the_latency_objective_takes_the_lowest_p50():
    outcome = search("full", Served(), SPACE, never, "latency", None)
    assert outcome.chosen.p50_ms == min(t.p50_ms for t in outcome.trials)


def test_a_configuration_that_fails_is_a_trial_with_its_reason_and_the_search_goes_on():
    served = Served(fail={2})
    outcome = search("quick", served, SPACE, never, "throughput", None)
    failed = [t for t in outcome.trials if t.error]
    assert failed and all(t.config.instances == 2 and t.error == "out of GPU memory" for t in failed)
    assert outcome.chosen.error is None and outcome.chosen.config.max_queue_delay_us == 500


def test_the_time_budget_stops_the_search_and_keeps_what_it_measured():
    served = Served()
    calls = iter(range(100))
    outcome = search("full", served, SPACE, lambda: next(calls) >= 3, "throughput", None)
    assert len(outcome.trials) == 4 and outcome.stopped == "budget"  # the default, then three more
    assert outcome.chosen in outcome.trials


def test_neighbours_step_one_setting_at_a_time():
    found = SPACE.neighbours(ServingConfig(2, 100, 64))
    assert set(found) == {ServingConfig(1, 100, 64), ServingConfig(4, 100, 64), ServingConfig(2, 0, 64),
                          ServingConfig(2, 500, 64), ServingConfig(2, 100, 64, (8,)), ServingConfig(2, 100, 64, (64,))}


def test_every_configuration_takes_the_largest_batch_the_user_declared():
    # A smaller max_batch_size would refuse a client's batch of 64, which the user profiled.
    assert {c.max_batch_size for c in SPACE.every()} == {64}
    assert {c.preferred_batch_sizes for c in SPACE.every()} == {(), (8,), (64,)}
    unbatched = Space(batch_sizes=(0,), queue_delays_us=(0,))
    assert unbatched.every() == [ServingConfig(i, 0, 0) for i in (1, 2, 4)]


def test_the_sweep_stops_when_more_concurrency_stops_paying():
    rates = {1: 100.0, 2: 190.0, 4: 195.0, 8: 400.0}
    asked = []

    def measure_at(concurrency: int) -> Trial:
        asked.append(concurrency)
        return Trial(ServingConfig(), concurrency, rates[concurrency], 1.0, 2.0)

    points = sweep(measure_at, [8, 1, 4, 2])
    assert asked == [1, 2, 4] and best_point(points, "throughput", None).concurrency == 4


def test_the_sweep_stops_at_a_failure_and_the_best_point_is_a_measured_one():
    points = sweep(lambda c: Trial(ServingConfig(), c, error="timeout") if c == 2 else
                   Trial(ServingConfig(), c, 100.0 * c, 1.0, 3.0), [1, 2, 4])
    assert [p.concurrency for p in points] == [1, 2]
    assert best_point(points, "throughput", None).concurrency == 1
    assert score(points[1], "throughput", None) is None


def test_the_pareto_front_holds_the_points_nothing_beats_on_both():
    trials = [Trial(ServingConfig(i), 1, throughput, p99 / 2, p99)
              for i, (throughput, p99) in enumerate([(100, 1.0), (200, 2.0), (150, 3.0), (200, 1.5), (300, 5.0)], 1)]
    trials.append(Trial(ServingConfig(9), error="failed"))
    front = pareto_front(trials)
    assert [(t.throughput, t.p99_ms) for t in front] == [(100, 1.0), (200, 1.5), (300, 5.0)]
