import signal
import threading
import time

import pytest

from orchestrator.run.scheduler import Scheduler, Unit
from orchestrator.signals import Interrupted, StopOnSignals


class Recorder:
    """Fake units: record order, placement and what else ran at the same time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running: dict[str, object] = {}
        self.started: list[str] = []
        self.placed: dict[str, object] = {}
        self.overlaps: dict[str, set[str]] = {}
        self.most_at_once = 0

    def unit(self, name, needs=(), gpu=False, exclusive=False, seconds=0.05):
        def run(device):
            with self.lock:
                self.started.append(name)
                self.placed[name] = device
                self.overlaps[name] = set(self.running)
                for other in self.running:
                    self.overlaps[other].add(name)
                self.running[name] = device
                self.most_at_once = max(self.most_at_once, len(self.running))
            time.sleep(seconds)
            with self.lock:
                del self.running[name]

        return Unit(name=name, run=run, needs=list(needs), gpu=gpu, exclusive=exclusive)


def graph(rec, gpu):
    return [
        rec.unit("reference", gpu=gpu),
        *[rec.unit(f"build-{v}", needs=["reference"], gpu=gpu) for v in "abcd"],
        rec.unit("convert-e", needs=["build-a"], gpu=gpu),
        rec.unit("profile", needs=["build-a", "build-b", "build-c", "build-d", "convert-e"], gpu=gpu,
                 exclusive=True),
    ]


def test_graph_order_is_respected():
    rec = Recorder()
    Scheduler(gpus=[], jobs=2).run(graph(rec, gpu=False))
    order = rec.started
    assert order[0] == "reference" and order[-1] == "profile"
    assert order.index("convert-e") > order.index("build-a")


def test_cpu_units_run_up_to_jobs_and_profiling_runs_alone():
    rec = Recorder()
    Scheduler(gpus=[], jobs=2).run(graph(rec, gpu=False))
    assert rec.most_at_once == 2
    assert any(rec.overlaps[f"build-{v}"] for v in "abcd")  # builds did run in parallel
    assert rec.overlaps["profile"] == set()


def test_one_unit_per_gpu_and_conversions_spread_over_gpus():
    rec = Recorder()
    Scheduler(gpus=["0", "1"], jobs=8).run(graph(rec, gpu=True))
    builds = {rec.placed[f"build-{v}"] for v in "abcd"}
    assert builds == {"0", "1"}
    for name, others in rec.overlaps.items():
        assert all(rec.placed[o] != rec.placed[name] for o in others), f"{name} shared its GPU"
    assert rec.placed["profile"] in {"0", "1"}


def test_a_failing_unit_stops_scheduling_and_raises():
    rec = Recorder()

    def boom(device):
        raise RuntimeError("broken unit")

    units = [Unit("reference", boom), rec.unit("build-a", needs=["reference"])]
    with pytest.raises(RuntimeError, match="broken unit"):
        Scheduler(gpus=[], jobs=2).run(units)
    assert rec.started == []


def test_unknown_needs_are_rejected():
    with pytest.raises(ValueError, match="unknown"):
        Scheduler(gpus=[], jobs=1).run([Unit("a", lambda d: None, needs=["nope"])])


def test_a_cycle_is_rejected_before_any_unit_runs():
    rec = Recorder()
    units = [rec.unit("free"), rec.unit("a", needs=["b"]), rec.unit("b", needs=["a"])]
    with pytest.raises(ValueError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        Scheduler(gpus=[], jobs=2).run(units)
    assert rec.started == []


def test_a_name_given_twice_is_rejected():
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        Scheduler(gpus=[], jobs=1).run([Unit("a", lambda d: None), Unit("a", lambda d: None)])


def test_units_start_in_the_given_order_when_ready_together():
    rec = Recorder()
    units = [rec.unit("root"), *[rec.unit(f"leaf-{i}", needs=["root"]) for i in range(5)]]
    Scheduler(gpus=[], jobs=1).run(units)
    assert rec.started == ["root", *[f"leaf-{i}" for i in range(5)]]


def test_a_chain_of_instant_units_does_not_wait_for_the_poll():
    rec = Recorder()
    units = [rec.unit("u0", seconds=0)] + [rec.unit(f"u{i}", needs=[f"u{i - 1}"], seconds=0) for i in range(1, 20)]
    start = time.monotonic()
    Scheduler(gpus=[], jobs=4).run(units)
    assert rec.started == [f"u{i}" for i in range(20)]
    assert time.monotonic() - start < 1.0  # each step is picked up when its need finishes, not on a timeout


def test_a_failure_lets_running_units_finish_and_starts_nothing_new():
    rec = Recorder()

    def boom(device):
        time.sleep(0.05)
        raise RuntimeError("broken build")

    units = [rec.unit("slow", seconds=0.3), Unit("bad", boom), rec.unit("after-bad", needs=["bad"]),
             rec.unit("after-slow", needs=["slow"])]
    with pytest.raises(RuntimeError, match="broken build"):
        Scheduler(gpus=[], jobs=2).run(units)
    assert rec.started == ["slow"] and rec.running == {}  # "slow" ran to its end before the raise


def test_ctrl_c_calls_on_abort_and_waits_for_running_units():
    aborted = threading.Event()
    returned = threading.Event()
    rec = Recorder()

    def interrupted(device):
        # As Ctrl-C: the stop arrives in the main thread wherever it is, its wait or `pool.submit`
        # starting this very worker; StopOnSignals makes sure that it does arrive.
        signal.raise_signal(signal.SIGINT)
        assert aborted.wait(timeout=10), "on_abort was not called"
        returned.set()

    with pytest.raises(Interrupted):
        with StopOnSignals():
            Scheduler(gpus=[], jobs=1).run([Unit("a", interrupted), rec.unit("b", needs=["a"])],
                                           on_abort=aborted.set)
    assert returned.is_set()
    assert rec.started == []

