"""`nav-orch clean`: abandoned containers go, those of runs still going stay and are listed; --dry-run
removes nothing; --all asks first (or takes --yes) and is refused where no one can answer. Driven
through a stand-in for the daemon's containers (cleanup.Containers)."""
from __future__ import annotations

from typing import Optional

import pytest

from orchestrator.containers.cleanup import RunContainer, clean, plan_clean
from orchestrator.errors import BadInput


class FakeContainers:
    def __init__(self, *containers: RunContainer):
        self.containers = list(containers)
        self.removed: list[str] = []

    def listed(self) -> list[RunContainer]:
        return list(self.containers)

    def remove(self, container: RunContainer) -> None:
        self.removed.append(container.name)


def container(name: str, abandoned: bool, running: bool = True) -> RunContainer:
    return RunContainer(id=f"id-{name}", name=name, run=f"run-{name}", owner=f"host:{len(name)}:1", running=running,
                        abandoned=abandoned)


DEAD, LIVE = container("dead", abandoned=True), container("live", abandoned=False)


class Asked:
    """A terminal's answer, and what it was asked."""

    def __init__(self, answer: bool):
        self.answer, self.questions = answer, []

    def __call__(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer


def run_clean(containers: FakeContainers, every: bool = False, dry_run: bool = False,
              confirm: Optional[Asked] = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    return clean(containers, every, dry_run, confirm, lines.append), lines


def test_the_plan_keeps_live_runs_unless_all():
    plain, every = plan_clean([DEAD, LIVE], every=False), plan_clean([DEAD, LIVE], every=True)
    assert (plain.remove, plain.keep, plain.live) == ([DEAD], [LIVE], [])
    assert (every.remove, every.keep, every.live) == ([DEAD, LIVE], [], [LIVE])


def test_a_plain_clean_removes_the_abandoned_and_lists_the_live_kept():
    containers = FakeContainers(DEAD, LIVE)
    removed, lines = run_clean(containers)
    assert removed == 1 and containers.removed == ["dead"]
    assert lines[0] == "removed 1 container(s)"
    assert lines[1].startswith("kept live (run run-live, running, started by host:4:1): its run is still going")


def test_a_dry_run_removes_nothing_and_says_what_would_go_and_stay():
    containers = FakeContainers(DEAD, LIVE)
    removed, lines = run_clean(containers, dry_run=True)
    assert removed == 0 and containers.removed == []
    assert lines[0].startswith("would remove dead (run run-dead")
    assert lines[1].startswith("kept live (run run-live")
    assert lines[2] == "would remove 1 container(s), keep 1 (dry run: nothing removed)"


def test_all_with_dry_run_asks_nothing_and_removes_nothing():
    containers = FakeContainers(DEAD, LIVE)
    removed, lines = run_clean(containers, every=True, dry_run=True)  # no one to ask: none needed
    assert removed == 0 and containers.removed == [] and len(lines) == 3


def test_all_asks_first_naming_the_live_runs():
    containers, asked = FakeContainers(DEAD, LIVE), Asked(True)
    removed, lines = run_clean(containers, every=True, confirm=asked)
    assert removed == 2 and containers.removed == ["dead", "live"]
    assert asked.questions == ["Remove all 2 nav-orch container(s), 1 of them of runs still going?"]
    assert lines[0].startswith("run still going: live (run run-live") and lines[-1] == "removed 2 container(s)"


def test_all_declined_removes_nothing():
    containers = FakeContainers(DEAD, LIVE)
    removed, lines = run_clean(containers, every=True, confirm=Asked(False))
    assert removed == 0 and containers.removed == [] and lines[-1] == "removed nothing"


def test_all_with_no_one_to_ask_is_refused_before_listing():
    class Unlisted(FakeContainers):
        def listed(self) -> list[RunContainer]:
            raise AssertionError("listed before the refusal")

    with pytest.raises(BadInput, match="add --yes to confirm"):
        run_clean(Unlisted(DEAD, LIVE), every=True)


def test_all_with_nothing_there_asks_nothing():
    asked = Asked(True)
    assert run_clean(FakeContainers(), every=True, confirm=asked) == (0, ["removed 0 container(s)"])
    assert asked.questions == []
