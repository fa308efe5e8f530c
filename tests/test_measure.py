import json
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from orchestrator.run.paired import decide
from runners.contract.protocol import (
    JOB_FILE,
    RESULT_FILE,
    AccuracyBudget,
    IOSpec,
    Job,
    JobInputs,
    JobResult,
    LatencyStats,
    ModelSource,
    ProfileEntry,
    ProfileSettings,
    Rival,
    TensorSpec,
    Tolerance,
    from_dict,
    to_json,
)
from runners.harness.main import main as runner_main
from runners.harness.measure import (
    CALLS_BEFORE_TURN,
    Timing,
    batch_of,
    beaten_by,
    call_rows,
    compare_output,
    compare_result,
    sample_rows,
    time_calls,
    time_interleaved,
    verification_result,
    verify_at_batch_sizes,
    verify_outputs,
)

TOL = Tolerance(atol=1e-4, rtol=1e-3)


def test_identical_outputs_pass_with_zero_error():
    ref = np.linspace(-1, 1, 50, dtype=np.float32)
    error = compare_output(ref.copy(), ref, TOL)
    assert error.passed and error.max_abs_err == 0.0 and error.max_rel_err == 0.0


def test_relative_error_stays_bounded_at_zero_reference():
    ref = np.zeros(10, dtype=np.float32)
    actual = np.full(10, 5e-5, dtype=np.float32)
    error = compare_output(actual, ref, TOL)
    assert error.passed
    assert error.max_rel_err == pytest.approx(5e-5 / 1e-4, rel=1e-3)


def test_error_outside_tolerance_fails_with_numbers():
    ref = np.ones(4)
    error = compare_output(ref + 0.01, ref, TOL)
    assert not error.passed
    assert error.max_abs_err == pytest.approx(0.01)
    assert error.max_rel_err == pytest.approx(0.01 / (1 + 1e-4))


def test_nan_in_variant_output_fails():
    ref = np.ones(3)
    error = compare_output(np.array([1.0, np.nan, 1.0]), ref, TOL)
    assert not error.passed and error.max_abs_err == float("inf")


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        compare_output(np.ones((2, 3)), np.ones((3, 2)), TOL)


def test_verification_names_each_output():
    ref = {"a": np.ones(2), "b": np.zeros(2)}
    result = verify_outputs({"a": np.ones(2), "b": np.ones(2)}, ref, {"a": TOL, "b": TOL})
    assert not result.passed
    assert result.outputs["a"].passed and not result.outputs["b"].passed


def test_batch_of_repeats_samples_along_batch_axis():
    samples = {"x": np.arange(6).reshape(3, 2)}
    out = batch_of(samples, 5)["x"]
    assert out.shape == (5, 2)
    assert out[3].tolist() == [0, 1] and out[4].tolist() == [2, 3]


@pytest.mark.parametrize("rows, batch_size, calls", [
    (6, 3, [[0, 1, 2], [3, 4, 5]]),  # b < S
    (5, 2, [[0, 1], [2, 3], [4, 0]]),  # b does not divide S: the last call wraps around
    (5, 5, [[0, 1, 2, 3, 4]]),  # b == S
    (5, 8, [[0, 1, 2, 3, 4, 0, 1, 2]]),  # b > S: one call, rows repeated
    (3, 1, [[0], [1], [2]]),
])
def test_call_rows_take_every_sample_at_each_batch_size(rows, batch_size, calls):
    assert [taken.tolist() for taken in call_rows(rows, batch_size)] == calls


def verify_job(batch_sizes: list[int], batch_axis=0) -> Job:
    io = IOSpec(inputs=[TensorSpec("x", "float32", [])], outputs=[TensorSpec("y", "float32", [])],
                batch_axis=batch_axis)
    return Job("verify-x", "verify", "torch", "/tmp", io=io, tolerances={"y": TOL, "total": TOL},
               batch_sizes=batch_sizes)


class RowModel:
    """A model computed row by row (the row's values doubled, and their sum), recording its calls."""

    def __init__(self, axis: int = 0, wrong_at: int = 0):
        self.axis, self.wrong_at, self.calls = axis, wrong_at, []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append(x)
        y = x * 2.0
        if x.shape[self.axis] == self.wrong_at:  # wrong in its last row at this batch size alone
            np.moveaxis(y, self.axis, 0)[-1] += 1.0
        return {"y": y, "total": x.sum(axis=1 - self.axis, keepdims=True)}


def test_a_compiled_variant_is_verified_on_every_sample_at_each_batch_size():
    samples = {"x": np.arange(10, dtype=np.float64).reshape(5, 2)}
    model = RowModel()
    reference = RowModel()(samples)
    result = verify_at_batch_sizes(model, samples, reference, verify_job([2, 5, 8]))
    assert result.passed and result.batch_sizes == [2, 5, 8]
    rows = [[0, 1], [2, 3], [4, 0], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 0, 1, 2]]
    assert [call.tolist() for call in model.calls] == [samples["x"][taken].tolist() for taken in rows]
    # A variant wrong at one batch size alone fails, with its worst figures, even in a repeated row.
    for size in (2, 8):
        failed = verify_at_batch_sizes(RowModel(wrong_at=size), samples, reference, verify_job([2, 5, 8]))
        assert not failed.passed and failed.outputs["y"].max_abs_err == 1.0 and failed.outputs["total"].passed


def test_the_rows_line_up_on_another_batch_axis():
    samples = {"x": np.arange(10, dtype=np.float64).reshape(2, 5)}  # 5 samples on axis 1
    model = RowModel(axis=1)
    reference = RowModel(axis=1)(samples)
    assert sample_rows(samples, reference, 1) == 5
    result = verify_at_batch_sizes(model, samples, reference, verify_job([3], batch_axis=1))
    assert result.passed and result.batch_sizes == [3]
    assert [call.tolist() for call in model.calls] == [samples["x"][:, [0, 1, 2]].tolist(),
                                                       samples["x"][:, [3, 4, 0]].tolist()]


def test_without_a_batch_axis_or_batch_sizes_the_samples_run_as_they_are():
    samples = {"x": np.arange(10, dtype=np.float64).reshape(5, 2)}
    reference = RowModel()(samples)
    for job in (verify_job([2, 8], batch_axis=None), verify_job([])):
        model = RowModel()
        result = verify_at_batch_sizes(model, samples, reference, job)
        assert result.passed and result.batch_sizes == []
        assert [call.tolist() for call in model.calls] == [samples["x"].tolist()]
    # An output without the samples' rows on the batch axis (a scalar) has no row to compare a call's to.
    assert sample_rows(samples, {**reference, "loss": np.float64(1.0)}, 0) is None
    assert sample_rows(samples, {"y": np.ones((4, 2))}, 0) is None
    assert sample_rows(samples, reference, None) is None


def test_time_calls_reports_percentiles_and_throughput():
    settings = ProfileSettings(warmup_calls=2, window_ms=5, min_window_calls=5, stable_windows=3, max_windows=10)
    entry = time_calls(lambda: sum(range(2000)), settings, batch_size=4)
    stats = entry.latency_ms
    assert 0 < stats.p50 <= stats.p90 <= stats.p95 <= stats.p99
    assert entry.throughput == pytest.approx(4 * 1000 / stats.mean)
    assert 3 <= entry.windows <= 10


def test_time_calls_stops_unstable_after_max_windows():
    calls = iter(range(10**6))
    settings = ProfileSettings(warmup_calls=0, window_ms=0, min_window_calls=2, stable_windows=3, max_windows=4,
                               stability=0.0001)

    def growing() -> None:
        # Each call is slower than the last, so windows never agree.
        n = next(calls)
        sum(range(2000 * (n + 1)))

    entry = time_calls(growing, settings, batch_size=1)
    assert entry.windows == 4 and entry.stable is False


def test_a_quantized_output_is_judged_by_its_accuracy_budget():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((8, 10))
    close = reference + 0.01 * rng.standard_normal((8, 10))  # int8-like noise: no fp32 tolerance holds
    loose = Tolerance(1e-4, 1e-3)
    budget = AccuracyBudget(min_cosine=0.999, min_top1=0.75)
    result = verify_outputs({"y": close}, {"y": reference}, {"y": loose}, {"y": budget})
    error = result.outputs["y"]
    assert result.passed and error.budget == budget and error.cosine > 0.999 and error.top1 >= 0.75
    assert not verify_outputs({"y": close}, {"y": reference}, {"y": loose}).passed  # the tolerance alone fails it
    # Shuffled rows keep the values' spread but lose the classes: both figures miss, and say so.
    shuffled = reference[::-1].copy()
    result = verify_outputs({"y": shuffled}, {"y": reference}, {"y": loose}, {"y": budget})
    failed = verification_result(Job("verify-x", "verify", "onnx", "/tmp"), result)
    assert failed.status == "failed" and failed.error.startswith("outside the accuracy budget: y: cosine ")
    assert "< 0.999" in failed.error and "top-1 " in failed.error and "< 0.75" in failed.error
    # A max_abs bound judges too; top-1 is not judged (None) for an output with no class axis.
    capped = verify_outputs({"y": close[:, :1]}, {"y": reference[:, :1]}, {"y": loose},
                            {"y": AccuracyBudget(min_cosine=0.9, max_abs=1e-6)}).outputs["y"]
    assert capped.top1 is None and not capped.passed


def test_a_slow_point_stops_at_its_time_budget_unstable():
    calls = []
    settings = ProfileSettings(warmup_calls=10, window_ms=0, min_window_calls=10, stable_windows=3, max_windows=10,
                               max_point_s=0.2)

    def slow() -> None:  # 50 ms a call: 10 warm-ups and 3 windows of 10 would take 2 s
        calls.append(1)
        time.sleep(0.05)

    entry = time_calls(slow, settings, batch_size=2)
    assert entry.stable is False and entry.windows == 1
    # Warm-up stops past a quarter of the budget (2 calls), the window once it is spent (4 more).
    assert len(calls) <= 8
    assert entry.latency_ms.p50 == pytest.approx(50, rel=0.5)


def point(batch_size: int, throughput: float, p50: float, p99: float, beaten_by=None) -> ProfileEntry:
    return ProfileEntry(batch_size, LatencyStats(p50, p50, p99, p99, p50), throughput, 3, True, beaten_by)


def test_a_point_is_beaten_only_by_a_rival_that_wins_every_objective_at_its_batch_size():
    slow = point(8, 1000.0, p50=8.0, p99=9.0)
    assert beaten_by(slow, [Rival("fast", [point(8, 1200.0, p50=6.6, p99=8.0)])], 0.2) == "fast"
    # Not by the margin, or at another batch size, or with a tail past the point's median (a p99
    # budget might then keep the rival out and the point in), or with figures cut short themselves.
    assert beaten_by(slow, [Rival("close", [point(8, 1190.0, p50=6.6, p99=8.0)])], 0.2) is None
    assert beaten_by(slow, [Rival("other-size", [point(64, 9000.0, p50=7.0, p99=7.5)])], 0.2) is None
    assert beaten_by(slow, [Rival("long-tail", [point(8, 2000.0, p50=4.0, p99=8.5)])], 0.2) is None
    assert beaten_by(slow, [Rival("cut", [point(8, 2000.0, p50=4.0, p99=4.0, beaten_by="x")])], 0.2) is None
    assert beaten_by(slow, [Rival("close", [point(8, 1190.0, 6.6, 8.0)]),
                            Rival("fast", [point(1, 500.0, 2.0, 2.0), point(8, 4000.0, 2.0, 2.0)])], 0.2) == "fast"


def test_a_beaten_point_stops_after_its_first_window_and_says_by_whom():
    settings = ProfileSettings(warmup_calls=2, window_ms=5, min_window_calls=5, stable_windows=3, max_windows=10)
    fast = Rival("fast", [point(4, 1e9, p50=1e-6, p99=1e-6)])
    entry = time_calls(lambda: time.sleep(0.001), settings, batch_size=4, rivals=[fast])
    assert entry.beaten_by == "fast" and entry.windows == 1 and entry.stable is False
    assert entry.latency_ms.p50 >= 1.0 and entry.throughput == pytest.approx(4 * 1000 / entry.latency_ms.mean)
    # --exhaustive (no margin) times it in full; so does a rival slower than the point.
    full = time_calls(lambda: time.sleep(0.001), replace(settings, prune_margin=None), batch_size=4, rivals=[fast])
    assert full.beaten_by is None and full.windows >= 3
    slow = Rival("slow", [point(4, 1.0, p50=4000.0, p99=4000.0)])
    assert time_calls(lambda: time.sleep(0.001), settings, batch_size=4, rivals=[slow]).windows >= 3


def test_a_runner_session_measures_each_profile_against_those_before_it_and_the_hosts(tmp_path):
    """Two profile jobs in one real runner process (runners/harness/main.py, the python runner): the slow
    function's points are cut short by the fast one's, profiled before it in the same process."""
    (tmp_path / "fns.py").write_text("import time\n\ndef fast(x):\n    return x\n\n"
                                     "def slow(x):\n    time.sleep(0.003)\n    return x\n")
    np.savez(tmp_path / "samples.npz", x=np.ones((2, 3), np.float32))
    settings = ProfileSettings(warmup_calls=2, window_ms=5, min_window_calls=5, stable_windows=3, max_windows=10)
    paths = []
    for name in ("fast", "slow"):
        folder = tmp_path / f"profile-{name}"
        folder.mkdir()
        job = Job(id=f"profile-{name}", kind="profile", runner="python", output_dir=str(folder), variant=name,
                  inputs=JobInputs(model=str(tmp_path), samples=str(tmp_path / "samples.npz")),
                  model=ModelSource(form="function", file="fns.py", factory=name), format="python",
                  batch_sizes=[1, 2], profiling=settings)
        (folder / JOB_FILE).write_text(to_json(job))
        paths.append(str(folder / JOB_FILE))
    assert runner_main(paths) == 0
    fast, slow = (from_dict(JobResult, json.loads((tmp_path / f"profile-{name}" / RESULT_FILE).read_text()))
                  for name in ("fast", "slow"))
    assert fast.status == slow.status == "ok"
    assert [e.beaten_by for e in fast.profile] == [None, None]
    assert [e.beaten_by for e in slow.profile] == ["fast", "fast"] and [e.windows for e in slow.profile] == [1, 1]
    # A session also gets the host's rivals with its turn, and never measures a variant against itself.
    session = Timing(lambda job: [Rival("host", []), Rival("self", [])])
    session.add(Job("profile-a", "profile", "python", "/tmp", variant="a"),
                [point(1, 10.0, 1.0, 1.0), point(2, 5.0, 1.0, 1.0, beaten_by="host")])
    rivals = session.start(Job("profile-self", "profile", "python", "/tmp", variant="self"))
    assert [(r.variant, len(r.profile)) for r in rivals] == [("a", 1), ("host", 0)]


class FakeDevice:
    """A clock that moves only by the calls run on it, each by its candidate's cost times the
    device's slowdown, which grows by `drift` a call: a machine that heats up."""

    def __init__(self, drift: float = 0.0):
        self.now_ns = 0
        self.slowdown = 1.0
        self.drift = drift
        self.ran: list[str] = []

    def clock(self) -> int:
        return self.now_ns

    def call(self, name: str, cost_ms: float) -> Callable[[], None]:
        def run() -> None:
            self.ran.append(name)
            self.now_ns += round(cost_ms * 1e6 * self.slowdown)
            self.slowdown += self.drift
        return run


def test_interleaved_timing_runs_the_candidates_in_turn_round_by_round():
    device = FakeDevice()
    settings = ProfileSettings(rounds=3, round_calls=2, warmup_calls=1)
    rounds = time_interleaved({"a": device.call("a", 1.0), "b": device.call("b", 2.0)}, settings, device.clock)
    assert rounds == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    assert "".join(device.ran) == "ab" + "aabb" * 3  # warm-up, then A B A B ...


def test_a_comparison_runs_each_candidate_before_its_turn_so_that_it_compiles_outside_the_turn():
    device = FakeDevice()
    asked: list[str] = []

    def take_turn(job: Job) -> list[Rival]:
        asked.append("".join(device.ran))
        return []

    job = Job(id="compare", kind="compare", runner="torch", output_dir="",
              profiling=ProfileSettings(rounds=2, round_calls=1, warmup_calls=1))
    result = compare_result(job, {"a": device.call("a", 1.0), "b": device.call("b", 2.0)}, Timing(take_turn))
    assert asked == ["a" * CALLS_BEFORE_TURN + "b" * CALLS_BEFORE_TURN]
    assert "".join(device.ran) == asked[0] + "ab" + "ab" * 2  # then the warm-up and the rounds, in the turn
    assert result.status == "ok" and {name: len(times) for name, times in result.rounds.items()} == {"a": 2, "b": 2}


def test_interleaved_rounds_let_the_paired_rule_see_through_a_drifting_device():
    # The device slows by half over the run; b costs 3 % more than a in every round, far less than
    # the drift, which unpaired figures would mix in.
    device = FakeDevice(drift=0.5 / 200)
    rounds = time_interleaved({"a": device.call("a", 1.0), "b": device.call("b", 1.03)},
                              ProfileSettings(rounds=20, round_calls=5, warmup_calls=0), device.clock)
    assert max(rounds["a"]) > min(rounds["b"]) * 1.3  # unpaired, their ranges overlap
    decision = decide(rounds, {})
    assert decision.winner == "a" and not decision.tie and decision.compared[0].interval.low > 1.0
