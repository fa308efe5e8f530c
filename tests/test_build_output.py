"""What `images build` and `images bootstrap` show (orchestrator/progress.py BuildOutput): nav-orch's
lines, one live line per image on a terminal, the builder's own output in the log file only."""
from __future__ import annotations

import io
import itertools

from orchestrator.progress import BuildOutput

STEPS = ["Step 1/3 : FROM base", " ---> 1234", "Step 2/3 : RUN pip install x", "Collecting x", "Step 3/3 : COPY a b"]


def build(live: bool, plain: bool) -> tuple[str, str]:
    log, screen = io.StringIO(), io.StringIO()
    ticks = itertools.count(0, 7)
    shown = BuildOutput(log, screen, live=live, plain=plain, clock=lambda: float(next(ticks)))
    shown.note("building pytorch-cpu (nav-orch/pytorch:cpu) through the Docker API")
    for line in STEPS:
        shown.output("pytorch-cpu", line)
    shown.note("pytorch-cpu built in 95 s: 2.10 GB")
    return screen.getvalue(), log.getvalue()


def test_a_pipe_gets_one_line_per_image_and_the_log_gets_everything():
    screen, log = build(live=False, plain=False)
    assert screen.splitlines() == ["building pytorch-cpu (nav-orch/pytorch:cpu) through the Docker API",
                                   "pytorch-cpu built in 95 s: 2.10 GB"]
    assert log.splitlines()[1:-1] == [f"pytorch-cpu: {line}" for line in STEPS]


def test_a_terminal_sees_the_step_in_place_then_the_done_line():
    screen, _ = build(live=True, plain=False)
    assert "pytorch-cpu: step 3/3, 35 s" in screen and "pytorch-cpu: working" in screen
    # Each update rewrites the one line; the done line replaces it for good.
    assert screen.count("\n") == 2 and screen.endswith("\r\x1b[2Kpytorch-cpu built in 95 s: 2.10 GB\n")


def test_plain_shows_the_builders_lines_as_they_come():
    screen, log = build(live=True, plain=True)
    assert screen.splitlines()[1:-1] == STEPS and "\r" not in screen
    assert len(log.splitlines()) == len(STEPS) + 2
