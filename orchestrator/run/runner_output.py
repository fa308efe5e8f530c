"""What runners wrote, read through the trust boundary (untrusted.py): a job's result.json, and the
reference job's result, outputs and samples. Every host read of runner output is here, so the
checks it gets (no link followed, a size limit, an artifact path confined) can be seen in one place.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import TypeAdapter, ValidationError

from orchestrator.errors import BadInput
from orchestrator.run import untrusted
from orchestrator.run.planning import REFERENCE
from orchestrator.run.workspace import Workspace
from runners.contract.arrays import load_npz
from runners.contract.protocol import NORMALIZED_SAMPLES, REFERENCE_OUTPUTS, RESULT_FILE, IOSpec, Job, JobResult

JOB_RESULT: TypeAdapter[JobResult] = TypeAdapter(JobResult)


def job_result(job: Job, workspace: Workspace) -> Optional[JobResult]:
    """The job's result.json (None when there is none); one the host will not use becomes a
    `failed` result that says why."""
    path = workspace.jobs / job.id / RESULT_FILE
    if not os.path.lexists(path):
        return None
    try:
        result = JOB_RESULT.validate_json(untrusted.read_bytes(workspace.root, path, untrusted.RESULT_MAX_BYTES))
        # The artifact path is later joined to host paths to mount, copy and serve the artifact.
        if result.artifact is not None:
            untrusted.relative_inside(result.artifact)
        return result
    except untrusted.UntrustedOutput as error:
        return JobResult(job.id, job.kind, "failed", error=str(error))
    except ValidationError as error:
        return JobResult(job.id, job.kind, "failed",
                         error=f"invalid result from the runner: {error.errors()[0]['msg']}")


def reference_io(workspace: Workspace) -> IOSpec:
    """The input/output description the reference job reported (jobs/reference/result.json)."""
    path = workspace.jobs / REFERENCE / RESULT_FILE
    try:
        result = JOB_RESULT.validate_json(untrusted.read_bytes(workspace.root, path, untrusted.RESULT_MAX_BYTES))
    except (OSError, ValidationError, untrusted.UntrustedOutput):
        result = None
    if result is None or result.io is None:
        raise BadInput(f"{path} holds no input/output description: run `nav-orch optimize` on this workspace again")
    return result.io


def reference_outputs(workspace: Workspace) -> dict[str, np.ndarray]:
    """The source model's outputs on the samples, by name."""
    return _arrays(workspace, workspace.reference / REFERENCE_OUTPUTS)


def reference_samples(workspace: Workspace) -> dict[str, np.ndarray]:
    """The samples as the reference job keyed them by input name (not the user's --samples file:
    orchestrator/samples.py reads that)."""
    return _arrays(workspace, workspace.reference / NORMALIZED_SAMPLES)


def _arrays(workspace: Workspace, path: Path) -> dict[str, np.ndarray]:
    with untrusted.open_file(workspace.root, path, untrusted.ARRAYS_MAX_BYTES) as arrays:
        return load_npz(arrays)
