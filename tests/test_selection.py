import json

import pytest

from orchestrator.results import Selection, VariantResult
from orchestrator.run.paired import Cost
from orchestrator.run.selection import artifact_cost, close_candidates, confident, ranked, select_best
from runners.contract.protocol import LatencyStats, ProfileEntry


def entry(batch, p50, p99, throughput):
    return ProfileEntry(batch, LatencyStats(p50, p50, p99, p99, p50), throughput, 3, True)


def variant(name, status="ok", profile=None):
    return VariantResult(name=name, format="onnx", precision="fp32", status=status, profile=profile or [])


FAST_SMALL = variant("a", profile=[entry(1, 0.5, 0.6, 2000), entry(64, 10, 12, 6400)])
FAST_LARGE = variant("b", profile=[entry(1, 0.8, 0.9, 1250), entry(64, 8, 30, 8000)])


def test_throughput_objective_takes_highest_throughput():
    best, selection = select_best([FAST_SMALL, FAST_LARGE], "throughput", None)
    assert best == "b" and selection.batch_size == 64


def test_latency_objective_takes_lowest_p50_at_smallest_batch():
    best, selection = select_best([FAST_SMALL, FAST_LARGE], "latency", None)
    assert best == "a" and selection.batch_size == 1


def test_budget_excludes_points_over_p99():
    best, selection = select_best([FAST_SMALL, FAST_LARGE], "throughput", 20.0)
    assert best == "a" and selection.batch_size == 64
    assert "budget" in selection.reason


def test_budget_nobody_meets_falls_back_with_a_note():
    best, selection = select_best([FAST_SMALL, FAST_LARGE], "throughput", 0.1)
    assert best == "b"
    assert "ignored" in selection.reason


def test_failed_and_unprofiled_variants_are_never_chosen():
    failed = variant("c", status="failed", profile=[entry(64, 1, 1, 10**6)])
    best, _ = select_best([failed, variant("d")], "throughput", None)
    assert best is None


def test_ties_go_to_the_earlier_variant():
    twin = variant("z", profile=FAST_LARGE.profile)
    best, _ = select_best([FAST_LARGE, twin], "throughput", None)
    assert best == "b"


def test_ranked_puts_the_budget_first_then_the_objective_and_leaves_out_unverified_ones():
    slow = variant("c", profile=[entry(64, 20, 21, 3200)])
    failed = variant("d", status="failed", profile=[entry(64, 1, 1, 99999)])
    assert ranked([slow, FAST_SMALL, FAST_LARGE, failed], "throughput", None) == ["b", "a", "c"]
    # Within a p99 budget of 20 ms: a fits at batch 64, b only at batch 1 (p99 30 ms at 64), c not at all.
    assert ranked([slow, FAST_SMALL, FAST_LARGE], "throughput", 20.0) == ["a", "b", "c"]
    assert ranked([FAST_LARGE, variant("e", profile=list(FAST_LARGE.profile))], "throughput", None) == ["b", "e"]


# --- confident selection: the close candidates timed again, interleaved ---------------------------

NOISE = {"a": [1.00, 1.03, 0.98, 1.02, 1.00, 0.97, 1.04, 1.01, 0.99, 1.02],  # per-call ms, round by round
         "b": [1.01, 0.99, 1.00, 0.98, 1.03, 0.99, 1.00, 0.97, 1.02, 0.98]}


def onnx_and_tftrt():
    """b (TF-TRT, which Triton does not serve) is 3 % faster in the single pass than a (ONNX)."""
    return [VariantResult(name="a", format="onnx", precision="fp32", status="ok", artifact="variants/a/model.onnx",
                          profile=[entry(64, 10, 12, 6400)]),
            VariantResult(name="b", format="tf-trt", precision="fp32", status="ok", artifact="variants/b",
                          profile=[entry(64, 10, 12, 6600)]),
            VariantResult(name="c", format="onnx", precision="fp16", status="ok", profile=[entry(64, 10, 12, 5000)])]


def test_the_candidates_within_the_margin_at_the_deciding_batch_are_timed_again():
    variants = onnx_and_tftrt()
    best, selection = select_best(variants, "throughput", None)
    assert best == "b" and close_candidates(variants, best, selection) == ["b", "a"]  # c is 32 % behind


def test_a_rival_that_only_wins_by_noise_loses_to_the_cheaper_artifact(tmp_path):
    variants = onnx_and_tftrt()
    (tmp_path / "variants/a").mkdir(parents=True)
    (tmp_path / "variants/a/model.onnx").write_bytes(b"x" * 100)
    (tmp_path / "variants/b/saved").mkdir(parents=True)
    (tmp_path / "variants/b/saved/graph.pb").write_bytes(b"x" * 10)
    costs = {v.name: artifact_cost(v, tmp_path) for v in variants}
    assert costs["a"] == Cost(servable=True, size_bytes=100) and costs["b"] == Cost(servable=False, size_bytes=10)
    best, selection = select_best(variants, "throughput", None)
    chosen, refined = confident(best, selection, NOISE, costs)
    assert chosen == "a" and refined.tie and refined.tie_broken_by == "servable"
    margin = refined.margin
    assert margin is not None and margin.variant == "b" and margin.low <= 1 <= margin.high
    assert refined.rounds == 10 and refined.confidence == pytest.approx(0.9785, abs=1e-4)
    assert refined.reason.startswith("timed again interleaved at batch 64: tie with b (")
    assert "chose the servable artifact (b led the single profile pass: highest throughput" in refined.reason


def test_a_confirmed_winner_keeps_the_single_pass_reason_and_adds_its_margin():
    variants = onnx_and_tftrt()
    best, selection = select_best(variants, "throughput", None)
    rounds = {"b": [1.0] * 10, "a": [1.04, 1.05, 1.03, 1.04, 1.06, 1.04, 1.05, 1.03, 1.04, 1.05]}
    chosen, refined = confident(best, selection, rounds, {})
    assert chosen == "b" and not refined.tie and refined.tie_broken_by is None
    assert refined.reason == (f"{selection.reason}; timed again interleaved at batch 64: "
                              "1.04× a (98 % interval 1.03–1.05, 10 paired rounds)")


def test_the_selection_round_trips_through_results_json():
    variants = onnx_and_tftrt()
    best, selection = select_best(variants, "throughput", None)
    _, refined = confident(best, selection, NOISE, {"a": Cost(True, 1), "b": Cost(True, 2)})
    data = json.loads(refined.model_dump_json())
    assert data["tie"] is True and data["tie_broken_by"] == "smaller" and data["rounds"] == 10
    assert set(data["margin"]) == {"variant", "ratio", "low", "high"} and data["compared"][0] == data["margin"]
    assert Selection.model_validate(data) == refined
    # A results.json from before confident selection reads as not timed again.
    old = Selection.model_validate({"objective": "throughput", "batch_size": 64, "reason": "why"})
    assert old.rounds == 0 and old.margin is None and not old.tie


def test_one_candidate_keeps_the_choice():
    best, selection = select_best(onnx_and_tftrt(), "throughput", None)
    assert confident(best, selection, {"b": [1.0] * 10}, {}) == (best, selection)
