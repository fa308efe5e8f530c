"""SIGINT, SIGTERM and SIGHUP stop every command the way Ctrl-C does.

SIGTERM is what CI runners send on cancel, and what `timeout`, Kubernetes and systemd send;
SIGHUP comes when a terminal closes. The first of them raises `Interrupted` in the main thread,
so the run unwinds through its clean-up (containers removed, results.json marked
`interrupted`); any signal after that is noted and ignored, so a second Ctrl-C or a repeated
SIGTERM cannot cut the clean-up short. The exit code is 128 + the signal's number.

Python runs a signal handler in the main thread at its next bytecode, which may belong to a
finaliser (a `__del__` or a weakref callback run by the garbage collector). Python drops an
exception raised there, and the stop would be lost while its signal counted as received, so
every later Ctrl-C would be ignored as a repeat. A dropped stop is therefore raised again.
"""
from __future__ import annotations

import _thread
import signal
import sys
import threading
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
        self.raised: Optional[Interrupted] = None
        self.previous_unraisable_hook = sys.unraisablehook
        self.hook_running = threading.RLock()  # held by the main thread while _unraisable runs

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if inside(frame, StopOnSignals._unraisable):  # raised here, Python would drop it without a word
            self._signal_after_hook(signum)
            return
        self.received.append(signum)
        if len(self.received) == 1:
            self.raised = Interrupted(signum)
            raise self.raised
        self.on_repeat(f"nav-orch: {signal.Signals(signum).name} again: still removing containers, please wait")

    def _unraisable(self, unraisable: Any) -> None:
        with self.hook_running:
            if self.raised is not None and unraisable.exc_value is self.raised:
                self.received.clear()  # the stop never arrived: its signal is a first one again
                self._signal_after_hook(self.raised.signum)
            else:
                self.previous_unraisable_hook(unraisable)

    def _signal_after_hook(self, signum: int) -> None:
        """Signal the main thread again once it has left the hook; if another finaliser drops the stop
        then, it comes back to the hook."""
        def signal_main() -> None:
            with self.hook_running:
                _thread.interrupt_main(signal.Signals(signum))

        threading.Thread(target=signal_main, daemon=True).start()

    def __enter__(self) -> StopOnSignals:
        try:
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread (an embedding application): leave signals alone
            self.previous.clear()
            return self
        self.previous_unraisable_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.previous:
            sys.unraisablehook = self.previous_unraisable_hook


def inside(frame: Optional[FrameType], function: Callable[..., Any]) -> bool:
    """Whether `function` is running in `frame` or in one of its callers."""
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False
