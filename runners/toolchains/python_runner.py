"""Python runner: profiles any Python callable (`nav-orch profile file.py:function`), fed the
samples as numpy arrays, positionally in the order the samples hold them. Nothing is exported
or verified: the function is timed as it is, with the same loop as every variant."""
from __future__ import annotations

from functools import partial

from runners.contract.protocol import Job, JobResult
from runners.harness.common import Handlers, import_callable, load_npz
from runners.harness.measure import Timing, batch_of, profile_result


def versions() -> dict[str, str]:
    return {}


def profile(job: Job, timing: Timing) -> JobResult:
    function = import_callable(job)
    samples = load_npz(job.inputs.samples)
    return profile_result(job, lambda size: partial(function, *batch_of(samples, size).values()), timing)


def handlers(timing: Timing) -> Handlers:
    """This runner's jobs, for one runner process."""
    return {"profile": partial(profile, timing=timing)}
