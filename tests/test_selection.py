from orchestrator.results import VariantResult
from orchestrator.run.selection import ranked, select_best
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
