"""One model of a zoo: its optimize run in a child process (`nav-orch run-config`), the same
pipeline as `nav-orch optimize`, wherever the zoo places it (this host, or a Ray node).

The child stops the way optimize does on SIGTERM (containers removed, results kept): when the
zoo is interrupted, and when the process that started it dies (a Ray worker on a lost node), as
the kernel sends it SIGTERM then (PR_SET_PDEATHSIG). It runs in a session of its own, so that a
kill aimed at its parent's process group (Ray's, of a worker it gives up) does not kill it before
that clean-up.
"""
from __future__ import annotations

import ctypes
import io
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from orchestrator.config import OptimizeConfig

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent goes (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_optimize(config: OptimizeConfig, log: Path, python: str = sys.executable,
                 on_start: Callable[[subprocess.Popen], None] = lambda child: None) -> int:
    """Run `config`'s optimize to the end in a child process writing `log`; its exit code (0: a best
    variant, 1: none verified, 2 bad input, 3 environment; optimize's codes). An interrupt here
    stops the child with SIGTERM and waits for its clean-up before it propagates; `on_start` gets
    the child, for whoever must stop it from another thread."""
    log.parent.mkdir(parents=True, exist_ok=True)
    config_file = log.with_name(f"{log.stem}.config.json")
    config_file.write_text(config.model_dump_json(indent=2))
    with open(log, "w") as out:
        child = subprocess.Popen([python, "-m", "orchestrator.cli", "run-config", str(config_file),
                                  "--progress", "plain"],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 preexec_fn=stop_with_parent, start_new_session=True)
        on_start(child)
        try:
            return child.wait()
        except BaseException:
            child.send_signal(signal.SIGTERM)
            child.wait()
            raise


def last_line(log: Path) -> str:
    """The log's last line: the one-line error of a run that failed."""
    try:
        return last_nonempty(log.read_text(errors="replace"), 500)
    except OSError:
        return ""


def last_nonempty(text: str, limit: int) -> str:
    """The last line of `text` that is not blank, at most `limit` characters."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


# --- archives: workspaces and model folders carried through Ray's object store ---------------------

def pack(folder: Path) -> bytes:
    """`folder` as a gzipped tar, its members named relative to it; links and special files left out."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".", filter=lambda member: member if member.isfile() or member.isdir() else None)
    return buffer.getvalue()


def unpack(archive: bytes, target: Path) -> None:
    """Extract an archive from another node into `target`, as untrusted data: regular files and
    folders only, every path inside `target` (tarfile's data filter), no link ever created."""

    def plain(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if not (member.isfile() or member.isdir()):
            return None
        return tarfile.data_filter(member, path)

    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(target, filter=plain)
