"""Turns on a shared GPU: several sessions compile and verify on one GPU side by side, and each
job that times work on it (a profile; a TensorRT build, which times its tactics) waits for a turn
during which no other session on that GPU runs anything.

Compiling (Inductor, TensorRT's parsing) is mostly CPU work, so sessions that hold a GPU each for
the whole of their compile leave it idle for most of a run; timing is what must be alone. The
runner side of the handshake is in runners/harness/main.py (`wait_for_turn`); the executor asks for turns
on the runner's behalf.
"""
from __future__ import annotations

import threading
from typing import Optional


class GpuTurns:
    """Who may run on one GPU now. A session is *active* while it runs work, *queued* while its
    runner waits for a turn, and the *holder* while it times. A turn is given, in the order asked,
    only when no other session is active; no session starts while one holds a turn."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._queue: list[str] = []
        self._holder: Optional[str] = None

    def try_enter(self, session: str) -> bool:
        """Whether `session` may start now (no one is timing); if so it is active."""
        with self._lock:
            if self._holder is not None:
                return False
            self._active.add(session)
            return True

    def ask(self, session: str) -> bool:
        """`session`'s runner waits to time: whether it holds the turn now (ask again until it does)."""
        with self._lock:
            if self._holder == session:
                return True
            self._active.discard(session)
            if session not in self._queue:
                self._queue.append(session)
            if self._holder is None and not self._active and self._queue[0] == session:
                self._queue.pop(0)
                self._holder = session
                return True
            return False

    def done(self, session: str) -> None:
        """`session`'s timed job reported: it is back at work (its next job may use the GPU)."""
        with self._lock:
            if self._holder == session:
                self._holder = None
                self._active.add(session)

    def leave(self, session: str) -> None:
        """`session`'s runner is gone, whatever state it was in."""
        with self._lock:
            self._active.discard(session)
            if session in self._queue:
                self._queue.remove(session)
            if self._holder == session:
                self._holder = None
