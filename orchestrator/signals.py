"""SIGINT, SIGTERM and SIGHUP stop every command the way Ctrl-C does.

SIGTERM is what CI runners send on cancel, and what `timeout`, Kubernetes and systemd send;
SIGHUP comes when a terminal closes. The first of them raises `Interrupted` in the main thread,
so the run unwinds through its clean-up (containers removed, results.json marked
`interrupted`); any signal after that is noted and ignored, so a second Ctrl-C or a repeated
SIGTERM cannot cut the clean-up short. The exit code is 128 + the signal's number.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal number: 130 for Ctrl-C (a plain KeyboardInterrupt), 143 SIGTERM, 129 SIGHUP."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


class StopOnSignals:
    """Within this context the stop signals raise `Interrupted` once, then are ignored."""

    def __init__(self, on_repeat: Callable[[str], None] = lambda text: print(text, file=sys.stderr)):
        self.on_repeat = on_repeat
        self.received: list[int] = []
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            raise Interrupted(signum)
        self.on_repeat(f"nav-orch: {signal.Signals(signum).name} again: still removing containers, please wait")

    def __enter__(self) -> StopOnSignals:
        try:
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread (an embedding application): leave signals alone
            self.previous.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
