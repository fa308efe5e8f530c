"""Content keys that let a re-run reuse finished jobs.

A job's key hashes its settings (not its paths), the keys of the jobs it builds on, and a
base key: the model's fingerprint (what the model *is*, reported by the reference job, which
always runs), the samples, the runners' environment (image ID, or the local Python and its
packages) and the runner code. Only successful results are reused: a failed job always runs again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Optional

import numpy as np

from orchestrator.run import untrusted
from orchestrator.run.executor import RUNNERS_DIR
from orchestrator.run.runner_output import job_result
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import RESULT_FILE, Job, JobResult

KEY_FILE = "key"


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def samples_digest(arrays: dict[str, np.ndarray]) -> str:
    return _digest(*(f"{name}:{a.dtype}:{a.shape}".encode() + np.ascontiguousarray(a).tobytes()
                     for name, a in arrays.items()))


def code_digest() -> str:
    """The runner code in every folder of runners/: a change to any of it redoes the jobs."""
    return _digest(*(f"{p.relative_to(RUNNERS_DIR)}:".encode() + p.read_bytes()
                     for p in sorted(RUNNERS_DIR.rglob("*.py"))))


def inputs_key(arrays: dict[str, np.ndarray], environment_id: str) -> str:
    """Everything but the model: the samples, the runners' environment and code."""
    return _digest(samples_digest(arrays), environment_id, code_digest())


def base_key(fingerprint: str, inputs: str) -> str:
    return _digest(fingerprint, inputs)


def job_key(job: Job, base: str, upstream: list[str]) -> str:
    settings = dataclasses.asdict(job)
    for each in (settings, *settings["compared"]):  # paths move with the workspace: not part of what a job is
        for path_field in ("inputs", "output_dir", "needs"):
            each.pop(path_field)
    return _digest(base, json.dumps(settings, sort_keys=True), *upstream)


def reusable(job: Job, workspace: Workspace, key: str) -> Optional[JobResult]:
    """The job's earlier result if it succeeded under the same key (both files are runner-writable
    and read as untrusted data)."""
    key_file = workspace.jobs / job.id / KEY_FILE
    try:
        if untrusted.read_bytes(workspace.root, key_file, 1024).decode(errors="replace") != key:
            return None
    except (OSError, untrusted.UntrustedOutput):
        return None
    result = job_result(job, workspace)
    return result if result is not None and result.status == "ok" else None


def mark(workspace: Workspace, job_id: str, key: Optional[str]) -> None:
    """Record the key a job is about to run under (before it runs, so a crash can't leave a
    result paired with a stale key); a job without a key leaves none."""
    job_dir = workspace.job_dir(job_id)
    (job_dir / RESULT_FILE).unlink(missing_ok=True)
    (job_dir / KEY_FILE).unlink(missing_ok=True)
    if key is not None:
        untrusted.write_text(job_dir / KEY_FILE, key)
