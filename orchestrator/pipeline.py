"""The optimize pipeline: reference -> export + verify per variant -> profile -> select.

Each step is a protocol job run by an executor. The steps form a graph of units (one
runner process each) that the scheduler runs as soon as their inputs exist: export and
verify of one variant share a unit (the verify needs the export), variants build in
parallel, and profiling runs as an exclusive unit, so nothing competes with what it
measures. results.json is rewritten after every finished job.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from orchestrator import cache
from orchestrator.executor import Executor, OnResult
from orchestrator.models import ImageRecord, OptimizeConfig, RunResults, VariantResult
from orchestrator.scheduler import Scheduler, Unit
from orchestrator.selection import select_best
from orchestrator.workspace import Workspace
from runners.protocol import FORMAT_ARTIFACT, FORMAT_RUNNER, IOSpec, Job, JobResult

REFERENCE = "reference"
NORMALIZED_SAMPLES = "samples.npz"
REFERENCE_OUTPUTS = "reference.npz"

# The stage a variant enters when a job of this kind succeeds.
NEXT_STAGE = {"export": "verifying", "verify": "verified", "profile": "done"}


class Reporter(Protocol):
    def stage(self, variant: str, stage: str, detail: str = "") -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class Variant:
    name: str
    format: str
    precision: str


class ReferenceFailed(Exception):
    """The source model could not be loaded or run on the samples."""


def plan_variants(config: OptimizeConfig) -> list[Variant]:
    return [Variant(f"{fmt}-{precision}", fmt, precision)
            for fmt in config.formats for precision in config.precisions]


class Pipeline:
    def __init__(self, config: OptimizeConfig, workspace: Workspace, executor: Executor, image: ImageRecord,
                 reporter: Reporter, results: RunResults, base_key: str, gpus: list[str], force: bool = False):
        self.config = config
        self.gpus = gpus
        self.io: Optional[IOSpec] = None
        self.base_key = base_key
        self.force = force
        self.keys: dict[str, str] = {}
        self.workspace = workspace
        self.executor = executor
        self.image = image
        self.reporter = reporter
        self.results = results
        self.lock = threading.Lock()
        self.variants: dict[str, VariantResult] = {}

    # --- bookkeeping ---------------------------------------------------------------

    def save(self) -> None:
        with self.lock:
            self.results.variants = list(self.variants.values())
            self.workspace.write_results(self.results)

    def record_versions(self, result: JobResult) -> None:
        with self.lock:
            self.image.versions.update(result.versions)

    def on_variant_result(self, variant: Variant, result: JobResult) -> None:
        self.record_versions(result)
        with self.lock:
            entry = self.variants[variant.name]
            if result.kind == "export" and result.artifact:
                entry.artifact = self.workspace.relative(self.workspace.variant_dir(variant.name) / result.artifact)
            if result.verification is not None:
                entry.verification = result.verification
            if result.profile:
                entry.profile = result.profile
            if result.status != "ok" and entry.status == "pending":
                entry.status = result.status
                entry.error = f"{result.kind}: {result.error}"
            elif result.kind == "profile":
                entry.status = "ok"
        stage = NEXT_STAGE[result.kind] if entry.status in ("pending", "ok") else entry.status
        self.reporter.stage(variant.name, stage, entry.error or "")
        self.save()

    # --- jobs -------------------------------------------------------------------------

    def job(self, job_id: str, kind: str, runner: str, output_dir: Path, after: list[str], **fields) -> Job:
        """A job, keyed by its settings and the keys of the jobs in `after`."""
        job = Job(id=job_id, kind=kind, runner=runner, output_dir=str(output_dir), device=self.device(), **fields)
        self.keys[job_id] = cache.job_key(job, self.base_key, [self.keys[other] for other in after])
        return job

    def run_session(self, name: str, jobs: list[Job], on_result: OnResult,
                    gpu: Optional[str]) -> dict[str, JobResult]:
        """Run the jobs in one runner process, reusing those already done under the same key."""
        results: dict[str, JobResult] = {}
        for job in jobs:
            earlier = None if self.force else cache.reusable(job, self.workspace.job_dir(job.id), self.keys[job.id])
            if earlier is not None:
                results[job.id] = earlier
                on_result(earlier)
        pending = [dataclasses.replace(job, needs=[n for n in job.needs if n not in results])
                   for job in jobs if job.id not in results]
        with self.lock:
            self.results.jobs.reused += len(results)
            self.results.jobs.run += len(pending)
        for job in pending:
            cache.mark(self.workspace.job_dir(job.id), self.keys[job.id])
        if pending:
            results.update(self.executor.run(name, self.image.tag, pending, on_result, gpu))
        return results

    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def variant_inputs(self, variant: Variant) -> dict[str, str]:
        artifact = self.workspace.variant_dir(variant.name) / FORMAT_ARTIFACT[variant.format]
        return {
            "samples": str(self.workspace.reference / NORMALIZED_SAMPLES),
            "reference": str(self.workspace.reference / REFERENCE_OUTPUTS),
            "artifact": str(artifact),
        }

    def run_reference(self, samples: Path, gpu: Optional[str]) -> None:
        model = self.config.model
        job = self.job(REFERENCE, "reference", model.framework, self.workspace.reference, after=[],
                       inputs={"model": str(model.path.parent), "samples": str(samples)}, model=model.source())
        self.reporter.note("running the source model on the samples")
        result = self.run_session(REFERENCE, [job], self.record_versions, gpu)[REFERENCE]
        if result.status != "ok" or result.io is None:
            raise ReferenceFailed(result.error or "the reference job returned no input/output description")
        self.io = result.io

    def build(self, variant: Variant, gpu: Optional[str]) -> None:
        """Export the variant and verify it against the reference, in one runner process."""
        model, io = self.config.model, self.io
        tolerances = {spec.name: self.config.tolerances.for_output(spec.name, variant.precision)
                      for spec in io.outputs}
        common = dict(format=variant.format, precision=variant.precision, io=io)
        export = self.job(f"export-{variant.name}", "export", model.framework,
                          self.workspace.variant_dir(variant.name), after=[REFERENCE],
                          inputs={"model": str(model.path.parent),
                                  "samples": str(self.workspace.reference / NORMALIZED_SAMPLES)},
                          model=model.source(), **common)
        verify = self.job(f"verify-{variant.name}", "verify", FORMAT_RUNNER[variant.format],
                          self.workspace.job_dir(f"verify-{variant.name}"), after=[f"export-{variant.name}"],
                          inputs=self.variant_inputs(variant),
                          needs=[export.id], tolerances=tolerances, **common)
        self.reporter.stage(variant.name, "exporting")
        self.run_session(f"build-{variant.name}", [export, verify],
                         lambda result: self.on_variant_result(variant, result), gpu)

    def profile(self, candidates: list[Variant], gpu: Optional[str]) -> None:
        variants = [v for v in candidates if self.variants[v.name].status == "pending"]
        if not variants:
            return
        jobs = []
        for variant in variants:
            jobs.append(self.job(f"profile-{variant.name}", "profile", FORMAT_RUNNER[variant.format],
                                 self.workspace.job_dir(f"profile-{variant.name}"),
                                 after=[f"verify-{variant.name}"], inputs=self.variant_inputs(variant), format=variant.format,
                                 precision=variant.precision, io=self.io, batch_sizes=self.config.batch_sizes,
                                 profiling=self.config.profiling))
        by_id = {f"profile-{v.name}": v for v in variants}

        def on_result(result: JobResult) -> None:
            self.on_variant_result(by_id[result.job_id], result)
            following = [v for v in variants if self.variants[v.name].status == "pending"
                         and not self.variants[v.name].profile]
            if following:
                self.reporter.stage(following[0].name, "profiling")

        self.reporter.stage(variants[0].name, "profiling")
        self.run_session("profile", jobs, on_result, gpu)

    # --- the run ----------------------------------------------------------------------

    def execute(self, samples: Path) -> RunResults:
        variants = plan_variants(self.config)
        for variant in variants:
            self.variants[variant.name] = VariantResult(name=variant.name, format=variant.format,
                                                        precision=variant.precision, status="pending")
            self.reporter.stage(variant.name, "queued")
        self.save()
        on_gpu = bool(self.gpus)
        builds = [Unit(f"build-{v.name}", lambda gpu, v=v: self.build(v, gpu), needs=[REFERENCE], gpu=on_gpu)
                  for v in variants]
        units = [
            Unit(REFERENCE, lambda gpu: self.run_reference(samples, gpu), gpu=on_gpu),
            *builds,
            Unit("profile", lambda gpu: self.profile(variants, gpu), needs=[b.name for b in builds],
                 gpu=on_gpu, exclusive=True),
        ]
        Scheduler(self.gpus, self.config.jobs).run(units, on_abort=self.executor.cancel)
        best, selection = select_best(list(self.variants.values()), self.config.objective,
                                      self.config.latency_budget_ms)
        with self.lock:
            self.results.best = best
            self.results.selection = selection
            self.results.state = "complete"
        self.save()
        return self.results
