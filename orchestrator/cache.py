"""Content keys that let a re-run reuse finished jobs.

A job's key hashes its settings (not its paths), the keys of the jobs it builds on, and
a base key of everything outside the job: the model's files, the samples, the image ID
and the runner code. Only successful results are reused: a failed job always runs again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np

from orchestrator.executor import RUNNERS_DIR, read_result
from runners.protocol import RESULT_FILE, Job, JobResult

KEY_FILE = "key"
MAX_LISTED_FILES = 10_000


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_digest(model_file: Path) -> str:
    """The model file's content, plus name, size and mtime of the files beside a factory
    (its weights or helper modules), so editing any of them invalidates the run. A folder
    model (a SavedModel) is the content of every file in it."""
    if model_file.is_dir():
        files = sorted(p for p in model_file.rglob("*") if p.is_file())
        return _digest(*(f"{p.relative_to(model_file)}:{file_digest(p)}" for p in files))
    parts = [file_digest(model_file)]
    if model_file.suffix == ".py":
        siblings = sorted(p for p in model_file.parent.rglob("*") if p.is_file() and p != model_file)
        for path in siblings[:MAX_LISTED_FILES]:
            if "__pycache__" not in path.parts:
                stat = path.stat()
                parts.append(f"{path.relative_to(model_file.parent)}:{stat.st_size}:{stat.st_mtime_ns}")
    return _digest(*parts)


def samples_digest(arrays: dict[str, np.ndarray]) -> str:
    return _digest(*(f"{name}:{a.dtype}:{a.shape}".encode() + np.ascontiguousarray(a).tobytes()
                     for name, a in arrays.items()))


def code_digest() -> str:
    return _digest(*(f"{p.name}:{file_digest(p)}" for p in sorted(RUNNERS_DIR.glob("*.py"))))


def base_key(model_file: Path, arrays: dict[str, np.ndarray], image_id: str) -> str:
    return _digest(model_digest(model_file), samples_digest(arrays), image_id, code_digest())


def job_key(job: Job, base: str, upstream: list[str]) -> str:
    settings = dataclasses.asdict(job)
    for path_field in ("inputs", "output_dir", "needs"):
        settings.pop(path_field)
    return _digest(base, json.dumps(settings, sort_keys=True), *upstream)


def reusable(job: Job, job_dir: Path, key: str) -> Optional[JobResult]:
    """The job's earlier result if it succeeded under the same key."""
    key_file = job_dir / KEY_FILE
    if not (job_dir / RESULT_FILE).exists() or not key_file.exists() or key_file.read_text() != key:
        return None
    result = read_result(job, job_dir)
    return result if result is not None and result.status == "ok" else None


def mark(job_dir: Path, key: str) -> None:
    """Record the key a job is about to run under (before it runs, so a crash can't
    leave a result paired with a stale key)."""
    (job_dir / RESULT_FILE).unlink(missing_ok=True)
    (job_dir / KEY_FILE).write_text(key)
