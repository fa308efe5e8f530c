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

import signal
import sys
import threading
import time
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
        self.previous_unraisable_hook = sys.unraisablehook
        self.raised: Optional[Interrupted] = None
        # A stop that Python dropped is owed: a helper thread signals the main thread again, one signal at
        # a time, never while the main thread runs the hook (which holds `lock`; it also guards what follows).
        self.lock = threading.RLock()
        self.owed: Optional[int] = None  # the signal of the dropped stop
        self.sent = False  # the helper's signal has not reached _handle yet
        self.sender: Optional[threading.Thread] = None

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.sent = False
        if inside(frame, StopOnSignals._unraisable):  # raised here, Python would drop it without a word
            self._owe(signum)
            return
        if self.owed is None:  # an owed stop's signal was counted when it first came
            self.received.append(signum)
        if len(self.received) == 1 or self.owed is not None:
            self.owed = None
            self.raised = Interrupted(signum)
            raise self.raised
        self.on_repeat(f"nav-orch: {signal.Signals(signum).name} again: still removing containers, please wait")

    def _unraisable(self, unraisable: Any) -> None:
        with self.lock:
            if self.raised is not None and unraisable.exc_value is self.raised:
                self._owe(self.raised.signum)
            else:
                self.previous_unraisable_hook(unraisable)

    def _owe(self, signum: int) -> None:
        with self.lock:
            self.owed = signum
            if self.sender is None:
                self.sender = threading.Thread(target=self._send_owed, args=(threading.main_thread().ident,),
                                               name="nav-orch-stop", daemon=True)
                self.sender.start()

    def _send_owed(self, main: int) -> None:
        """Signal the main thread until no stop is owed: a real signal, which also cuts a blocking call
        short, as the first one did. Another finaliser may drop it again, and then it is owed again."""
        while True:
            with self.lock:
                owed = self.owed
                if not self.sent and owed is None:
                    self.sender = None
                    return
                if not self.sent and owed is not None:
                    self.sent = True
                    signal.pthread_kill(main, owed)
            time.sleep(0.005)

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
        with self.lock:
            self.owed, self.sent = None, False  # the helper sends nothing more
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
