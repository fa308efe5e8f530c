"""A warm runner: `python -m runners.harness.serve QUEUE [--preload]`.

It serves the sessions the host writes into its QUEUE folder, one after another (the names are in
runners/contract/protocol.py). Each session runs in a child forked from this process, as
`runners.harness.main` would run it, so that a crash, a leak or a module a model imported stays in
that session; the child is what a fresh runner process would be, minus the start. With
`--preload` the torch and ONNX runners (and so their frameworks) are imported once, here, before
any fork: that import is most of a small model's session on a CPU. Never on a GPU, where a child
must not inherit an initialized CUDA, and never TensorFlow or JAX, whose imports start threads that
a fork does not carry over.

The host stops it by ending its process; it stops by itself once its parent is gone (a local
runner whose host was killed) or after `IDLE_S` without a session.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from runners.contract.protocol import (
    SESSION_EXIT,
    SESSION_LOG,
    SESSION_REQUEST,
    SessionExit,
    WarmSession,
    from_dict,
    to_json,
    write_text_atomic,
)
from runners.harness import main as main_module
from runners.harness.main import main

PRELOAD = ("runners.toolchains.torch_runner", "runners.toolchains.onnx_runner")
IDLE_S = 900.0
POLL_S = 0.02


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # not in this image: its sessions never ask for it
            pass


def share_threads(environment: dict[str, str]) -> None:
    """The session's thread share (OMP_NUM_THREADS), which torch read once, at its import here."""
    threads = environment.get("OMP_NUM_THREADS", "")
    torch = sys.modules.get("torch")
    if torch is not None and threads.isdigit():
        torch.set_num_threads(int(threads))


# Where the container's memory cgroup counts the processes its limit killed (v2, then v1).
OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


def oom_kills() -> int:
    """How many processes the container's memory limit has killed so far (0 where unknown)."""
    for counter in OOM_COUNTERS:
        try:
            lines = Path(counter).read_text().splitlines()
        except OSError:
            continue
        counts = dict(line.partition(" ")[::2] for line in lines)
        return int(counts.get("oom_kill", "0") or 0)
    return 0


def run_session(queue: Path, number: int, session: WarmSession) -> SessionExit:
    before = oom_kills()
    pid = os.fork()
    if pid == 0:  # the session's process: it never returns into the server's loop
        code = 1
        try:
            log = os.open(queue / SESSION_LOG.format(number), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.environ.update(session.environment)
            share_threads(session.environment)
            sys.argv = [main_module.__file__, *session.jobs]  # what `python -m runners.harness.main` sees
            code = main(session.jobs)
        except BaseException:  # noqa: BLE001 - the log says what, the exit code that it failed
            traceback.print_exc()
        finally:
            main_module.leave(code)
    _, status = os.waitpid(pid, 0)
    return SessionExit(code=os.waitstatus_to_exitcode(status), oom_killed=oom_kills() > before)


def serve(queue: Path, warm: bool) -> int:
    parent = os.getppid()
    if warm:
        preload()
    number = 0
    idle_since = time.monotonic()
    while True:
        request = queue / SESSION_REQUEST.format(number)
        if request.exists():
            session = from_dict(WarmSession, json.loads(request.read_text()))
            write_text_atomic(queue / SESSION_EXIT.format(number), to_json(run_session(queue, number, session)))
            number += 1
            idle_since = time.monotonic()
        elif os.getppid() != parent or time.monotonic() - idle_since > IDLE_S:
            return 0
        else:
            time.sleep(POLL_S)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--preload"]):
        print("usage: python -m runners.harness.serve QUEUE [--preload]", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(Path(sys.argv[1]), warm=sys.argv[2:] == ["--preload"]))
