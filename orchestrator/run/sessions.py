"""Running sessions: a list of jobs in one runner process, reusing those that finished earlier
in this workspace under the same key (unless --force), and marking the rest before they run."""
from __future__ import annotations

import dataclasses

from orchestrator.run import cache
from orchestrator.run.executor import Executor, OnResult, Placement
from orchestrator.run.recording import Recorder
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import Job, JobResult


class Sessions:
    def __init__(self, executor: Executor, workspace: Workspace, keys: dict[str, str], recorder: Recorder,
                 image: str, force: bool):
        self.executor = executor
        self.workspace = workspace
        self.keys = keys  # job id -> content key (orchestrator/run/jobs.py); a job without one always runs
        self.recorder = recorder
        self.image = image
        self.force = force

    def run(self, name: str, jobs: list[Job], on_result: OnResult, placement: Placement) -> dict[str, JobResult]:
        results: dict[str, JobResult] = {}
        for job in jobs:
            key = self.keys.get(job.id)
            earlier = None if self.force or key is None else cache.reusable(job, self.workspace, key)
            if earlier is not None:
                results[job.id] = earlier
                on_result(earlier)
        pending = [dataclasses.replace(job, needs=[n for n in job.needs if n not in results])
                   for job in jobs if job.id not in results]
        self.recorder.count_jobs(reused=len(results), run=len(pending))
        for job in pending:
            cache.mark(self.workspace, job.id, self.keys.get(job.id))
        if pending:
            def timed(result: JobResult) -> None:
                self.recorder.record_timing(result, name, placement.gpu)
                on_result(result)

            results.update(self.executor.run(name, self.image, pending, timed, placement))
        return results
