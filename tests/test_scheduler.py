import threading
import time

import pytest

from orchestrator.run.scheduler import Scheduler, Unit


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
