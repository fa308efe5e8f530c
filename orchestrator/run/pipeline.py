"""The optimize pipeline: reference -> export + verify per variant -> profile -> select.

Each step is a protocol job run by an executor. The steps form a graph of units (one
runner process each) that the scheduler runs as soon as their inputs exist: export and
verify of one variant share a unit (the verify needs the export), variants build in
parallel, and profiling runs as an exclusive unit, so nothing competes with what it
measures. results.json is rewritten after every finished job.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from orchestrator.run import cache
from orchestrator.run import untrusted
from orchestrator.errors import BadInput
from orchestrator.run.executor import Executor, OnResult, Placement
from orchestrator.config import OptimizeConfig
from orchestrator.results import ImageRecord, RunResults, VariantResult
from runners.formats import default_formats, default_precisions
from orchestrator.run.scheduler import Scheduler, Unit
from orchestrator.run.selection import select_best
from orchestrator.run.workspace import Workspace
from runners.formats import FORMATS, default_formats, default_precisions
from runners.protocol import NORMALIZED_SAMPLES, REFERENCE_OUTPUTS, IOSpec, Job, JobResult

REFERENCE = "reference"

# The stage a variant enters when a job of this kind succeeds.
NEXT_STAGE = {"export": "exported", "convert": "converted", "verify": "verified", "profile": "done"}


class Reporter(Protocol):
    def stage(self, variant: str, stage: str, detail: str = "") -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class Variant:
    name: str
    format: str
    precision: str


# `nav-orch profile file.py:function`: the callable as the one variant, profiled only.
FUNCTION_VARIANT = Variant("python-function", "python", "fp32")


class ReferenceFailed(Exception):
    """The source model could not be loaded or run on the samples."""


def plan_variants(config: OptimizeConfig, on_gpu: bool) -> list[Variant]:
    """Every format in every precision it supports (asked-for formats are kept even where
    the device can't run them: their runner says why they are skipped)."""
    formats = config.formats or default_formats(config.model.framework, on_gpu)
    precisions = config.precisions or default_precisions(on_gpu)
    return [Variant(f"{fmt}-{precision}", fmt, precision) for fmt in formats for precision in precisions
            if precision in FORMATS[fmt].precisions]


def check_fixed_batch(io: IOSpec, batch_sizes: list[int]) -> None:
    """A model whose inputs fix the batch axis (an ONNX graph can) is profiled only at that size."""
    for spec in io.inputs:
        fixed = spec.shape[io.batch_axis] if len(spec.shape) > io.batch_axis else None
        if fixed is not None and any(size != fixed for size in batch_sizes):
            raise BadInput(f"input {spec.name!r} has a fixed batch of {fixed} (axis {io.batch_axis}) in the model: "
                           f"pass --batch-sizes {fixed}, or export the model with a dynamic batch axis")


class Pipeline:
    def __init__(self, config: OptimizeConfig, workspace: Workspace, executor: Executor, image: ImageRecord,
                 reporter: Reporter, results: RunResults, inputs_key: str, gpus: list[str], force: bool = False):
        self.config = config
        self.gpus = gpus
        self.io: Optional[IOSpec] = None
        self.output_scale: dict[str, float] = {}
        # Jobs are keyed by what the model *is*: its fingerprint, known once the reference job has
        # run (it always runs: it is the cheapest job), with the samples, image and runner code.
        self.inputs_key = inputs_key
        self.base_key: Optional[str] = None
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
            known = {gpu.uuid for gpu in self.results.environment.gpus}
            if result.gpu is not None and result.gpu.uuid not in known:
                self.results.environment.gpus.append(result.gpu)

    def on_variant_result(self, variant: Variant, result: JobResult) -> None:
        self.record_versions(result)
        with self.lock:
            entry = self.variants[variant.name]
            was_final = entry.status not in ("pending", "ok")
            if result.kind in ("export", "convert") and result.artifact:
                entry.artifact = self.workspace.relative(self.workspace.variant_dir(variant.name) / result.artifact)
            if result.verification is not None:
                entry.verification = result.verification
            if result.profile:
                entry.profile = result.profile
            # A job that reported success can still fail afterwards: its runner left untrusted output.
            if result.status != "ok" and entry.status in ("pending", "ok"):
                entry.status = result.status
                entry.error = f"{result.kind}: {result.error}"
            elif result.kind == "profile" and result.status == "ok":
                entry.status = "ok"
        if not was_final:  # the jobs after a failed one fail too: say so once
            stage = NEXT_STAGE[result.kind] if entry.status in ("pending", "ok") else entry.status
            self.reporter.stage(variant.name, stage, entry.error or "")
        self.save()

    # --- jobs -------------------------------------------------------------------------

    def job(self, job_id: str, kind: str, runner: str, output_dir: Path, after: list[str], **fields) -> Job:
        """A job, keyed by its settings and the keys of the jobs in `after`."""
        job = Job(id=job_id, kind=kind, runner=runner, output_dir=str(output_dir), **fields)
        if self.base_key is not None:
            self.keys[job_id] = cache.job_key(job, self.base_key, [self.keys[other] for other in after])
        return job

    def run_session(self, name: str, jobs: list[Job], on_result: OnResult,
                    placement: Placement) -> dict[str, JobResult]:
        """Run the jobs in one runner process, reusing those already done under the same key
        (only jobs with a key: none before the reference job has fingerprinted the model)."""
        results: dict[str, JobResult] = {}
        for job in jobs:
            key = self.keys.get(job.id)
            earlier = None if self.force or key is None else cache.reusable(job, self.workspace, key)
            if earlier is not None:
                results[job.id] = earlier
                on_result(earlier)
        pending = [dataclasses.replace(job, needs=[n for n in job.needs if n not in results])
                   for job in jobs if job.id not in results]
        with self.lock:
            self.results.jobs.reused += len(results)
            self.results.jobs.run += len(pending)
        for job in pending:
            cache.mark(self.workspace, job.id, self.keys.get(job.id))
        if pending:
            results.update(self.executor.run(name, self.image.tag, pending, on_result, placement))
        return results

    def variant_inputs(self, variant: Variant) -> dict[str, str]:
        artifact = self.workspace.variant_dir(variant.name) / FORMATS[variant.format].artifact
        return {
            "model": str(self.config.model.path.parent),  # torch.compile variants compile the source
            "samples": str(self.workspace.reference / NORMALIZED_SAMPLES),
            "reference": str(self.workspace.reference / REFERENCE_OUTPUTS),
            "artifact": str(artifact),
        }

    def export_job(self, variant: Variant, device: str) -> Job:
        model = self.config.model
        return self.job(f"export-{variant.name}", "export", model.framework, self.workspace.variant_dir(variant.name),
                        after=[REFERENCE], device=device, model=model.source(), format=variant.format,
                        precision=variant.precision, io=self.io,
                        inputs={"model": str(model.path.parent),
                                "samples": str(self.workspace.reference / NORMALIZED_SAMPLES)})

    def convert_job(self, variant: Variant, device: str, needs: list[str]) -> Job:
        conversion = FORMATS[variant.format].conversion
        runner, intermediate = conversion.runner, conversion.intermediate
        inputs = {**self.variant_inputs(variant), "export": str(self.workspace.variant_dir(variant.name) / intermediate)}
        del inputs["artifact"]
        return self.job(f"convert-{variant.name}", "convert", runner, self.workspace.variant_dir(variant.name),
                        after=[f"export-{variant.name}"], device=device, needs=needs, model=self.config.model.source(),
                        format=variant.format, precision=variant.precision, io=self.io, inputs=inputs,
                        batch_sizes=self.config.batch_sizes)

    def built_jobs(self, variant: Variant, device: str, needs: list[str]) -> list[Job]:
        """Verify (after a conversion, where the format needs one) and nothing else."""
        if FORMATS[variant.format].conversion is None:
            return [self.verify_job(variant, device, needs=needs, after=f"export-{variant.name}")]
        convert = self.convert_job(variant, device, needs=needs)
        return [convert, self.verify_job(variant, device, needs=[convert.id], after=convert.id)]

    def verify_job(self, variant: Variant, device: str, needs: list[str], after: str) -> Job:
        tolerances = {spec.name: self.config.tolerances.for_output(spec.name, variant.precision,
                                                                   self.output_scale.get(spec.name, 1.0))
                      for spec in self.io.outputs}
        job_id = f"verify-{variant.name}"
        return self.job(job_id, "verify", FORMATS[variant.format].runner, self.workspace.job_dir(job_id),
                        after=[after], device=device, needs=needs, model=self.config.model.source(),
                        format=variant.format, precision=variant.precision, io=self.io,
                        inputs=self.variant_inputs(variant), tolerances=tolerances)

    def profile_job(self, variant: Variant, device: str, needs: list[str]) -> Job:
        job_id = f"profile-{variant.name}"
        return self.job(job_id, "profile", FORMATS[variant.format].runner, self.workspace.job_dir(job_id),
                        after=[f"verify-{variant.name}"], device=device, needs=needs,
                        model=self.config.model.source(), format=variant.format, precision=variant.precision,
                        io=self.io, inputs=self.variant_inputs(variant), batch_sizes=self.config.batch_sizes,
                        profiling=self.config.profiling)

    def run_reference(self, samples: Path, gpu: Optional[str]) -> None:
        model = self.config.model
        job = self.job(REFERENCE, "reference", model.framework, self.workspace.reference, after=[],
                       device="cuda" if gpu is not None else "cpu", model=model.source(),
                       inputs={"model": str(model.path.parent), "samples": str(samples)})
        self.reporter.note("running the source model on the samples")
        result = self.run_session(REFERENCE, [job], self.record_versions, Placement(gpu))[REFERENCE]
        if result.status != "ok" or result.io is None or result.fingerprint is None:
            raise ReferenceFailed(result.error or "the reference job returned no input/output description "
                                  "or no fingerprint")
        self.io = result.io
        self.base_key = self.keys[REFERENCE] = cache.base_key(result.fingerprint, self.inputs_key)
        with self.lock:
            self.results.model_fingerprint = result.fingerprint
        check_fixed_batch(self.io, self.config.batch_sizes)
        outputs_file = untrusted.open_file(self.workspace.root, self.workspace.reference / REFERENCE_OUTPUTS,
                                           untrusted.ARRAYS_MAX_BYTES)
        with outputs_file, np.load(outputs_file, allow_pickle=False) as outputs:
            self.output_scale = {name: float(np.abs(outputs[name]).max(initial=0.0)) for name in outputs.files}

    def shared_cpus(self) -> Placement:
        """CPU sessions run up to `jobs` at a time: each gets its share of the cores."""
        return Placement(threads=max(1, (os.cpu_count() or 1) // self.config.jobs))

    def on_result_of(self, variant: Variant) -> OnResult:
        return lambda result: self.on_variant_result(variant, result)

    # CPU runs: export and verify share a process per variant; one exclusive unit profiles all.

    def skip_before_export(self, variant: Variant) -> bool:
        """Skip a variant the run cannot build, before any work is spent on it: the reason comes
        from the image itself (the versions its reference job reported) or the missing GPU."""
        reason = None
        toolchain = FORMATS[variant.format].toolchain
        if toolchain is not None and toolchain.distribution not in self.image.versions:
            where = self.image.tag if self.image.tag != "local" else f"the runners' Python ({self.image.id})"
            reason = f"{toolchain.title} is not installed in {where}"
        if reason is None and FORMATS[variant.format].gpu_only and not self.gpus:
            reason = "needs a GPU (this run has none: --gpus)"
        if reason is not None:
            self.skip(variant, reason)
        return reason is not None

    def build(self, variant: Variant, gpu: Optional[str]) -> None:
        if self.skip_before_export(variant):
            return
        export = self.export_job(variant, "cpu")
        jobs = [export, *self.built_jobs(variant, "cpu", needs=[export.id])]
        self.reporter.stage(variant.name, "exporting")
        self.run_session(f"build-{variant.name}", jobs, self.on_result_of(variant), self.shared_cpus())

    def profile_all(self, candidates: list[Variant], gpu: Optional[str]) -> None:
        variants = [v for v in candidates if self.variants[v.name].status == "pending"]
        if not variants:
            return
        jobs = [self.profile_job(v, "cpu", needs=[]) for v in variants]
        by_id = {job.id: v for job, v in zip(jobs, variants)}

        def on_result(result: JobResult) -> None:
            self.on_variant_result(by_id[result.job_id], result)
            following = [v for v in variants if self.variants[v.name].status == "pending"]
            if following:
                self.reporter.stage(following[0].name, "profiling")

        self.reporter.stage(variants[0].name, "profiling")
        self.run_session("profile", jobs, on_result, Placement(gpu))

    # GPU runs: exports run on CPUs in parallel. On the GPU, one process verifies and profiles
    # every variant that needs no compile (one CUDA start for all); then each compiled variant
    # gets a process of its own, built only in the precision that won so far.

    def export_only(self, variant: Variant, gpu: Optional[str]) -> None:
        if self.skip_before_export(variant):
            return
        self.reporter.stage(variant.name, "exporting")
        self.run_session(f"export-{variant.name}", [self.export_job(variant, "cpu")], self.on_result_of(variant),
                         self.shared_cpus())

    def check(self, name: str, variants: list[Variant], gpu: Optional[str]) -> None:
        variants = [v for v in variants if self.variants[v.name].status == "pending"]
        if not variants:
            return
        jobs, owner = [], {}
        for variant in variants:
            built = self.built_jobs(variant, "cuda", needs=[])
            profile = self.profile_job(variant, "cuda", needs=[built[-1].id])
            jobs += [*built, profile]
            owner.update({job.id: variant for job in (*built, profile)})

        def on_result(result: JobResult) -> None:
            self.on_variant_result(owner[result.job_id], result)
            following = [v for v in variants if self.variants[v.name].status == "pending" and not
                         self.variants[v.name].verification]
            if following and result.kind == "profile":
                self.reporter.stage(following[0].name, "verifying")

        self.reporter.stage(variants[0].name, "verifying")
        self.run_session(name, jobs, on_result, Placement(gpu))

    def check_compiled(self, variant: Variant, cheap: list[Variant], gpu: Optional[str]) -> None:
        winner = self.winning_precision(cheap)
        if winner and variant.precision != winner and not self.config.exhaustive:
            self.skip(variant, f"not built: {winner} was the fastest precision of the other formats "
                               "(--exhaustive builds every precision)")
            return
        self.check(f"check-{variant.name}", [variant], gpu)

    def winning_precision(self, cheap: list[Variant]) -> Optional[str]:
        best, _ = select_best([self.variants[v.name] for v in cheap], self.config.objective,
                              self.config.latency_budget_ms)
        return self.variants[best].precision if best else None

    def skip(self, variant: Variant, reason: str) -> None:
        with self.lock:
            entry = self.variants[variant.name]
            entry.status, entry.error = "skipped", reason
        self.reporter.stage(variant.name, "skipped", reason)
        self.save()

    def units(self, variants: list[Variant], samples: Path) -> list[Unit]:
        reference = Unit(REFERENCE, lambda gpu: self.run_reference(samples, gpu), gpu=bool(self.gpus))
        if not self.gpus:
            builds = [Unit(f"build-{v.name}", lambda gpu, v=v: self.build(v, gpu), needs=[REFERENCE])
                      for v in variants]
            profile = Unit("profile", lambda gpu: self.profile_all(variants, gpu), needs=[b.name for b in builds],
                           exclusive=True)
            return [reference, *builds, profile]
        exports = [Unit(f"export-{v.name}", lambda gpu, v=v: self.export_only(v, gpu), needs=[REFERENCE])
                   for v in variants]
        # Variants that need no compile are checked in one process per runtime, so a slow export
        # of one runtime (ONNX) does not hold up the others.
        cheap_by_runner: dict[str, list[Variant]] = {}
        for v in variants:
            if not FORMATS[v.format].compiled:
                cheap_by_runner.setdefault(FORMATS[v.format].runner, []).append(v)
        cheap_checks = [Unit(f"check-{runner}", lambda gpu, r=runner, vs=vs: self.check(f"check-{r}", vs, gpu),
                             needs=[f"export-{v.name}" for v in vs], gpu=True, exclusive=True)
                        for runner, vs in cheap_by_runner.items()]
        compiled = []
        for v in variants:
            if FORMATS[v.format].compiled:
                rivals = cheap_by_runner.get(FORMATS[v.format].runner, [])
                needs = [f"export-{v.name}"] + ([f"check-{FORMATS[v.format].runner}"] if rivals else [])
                compiled.append(Unit(f"check-{v.name}", lambda gpu, v=v, rivals=rivals: self.check_compiled(v, rivals, gpu),
                                     needs=needs, gpu=True, exclusive=True))
        return [reference, *exports, *cheap_checks, *compiled]

    # Profile only (`nav-orch profile`): no reference, export or verify; one job times the function.

    def profile_function(self, samples: Path, gpu: Optional[str]) -> None:
        model, variant = self.config.model, FUNCTION_VARIANT
        job_id = f"profile-{variant.name}"
        job = self.job(job_id, "profile", FORMATS[variant.format].runner, self.workspace.job_dir(job_id), after=[],
                       device="cuda" if gpu is not None else "cpu", model=model.source(), format=variant.format,
                       inputs={"model": str(model.path.parent), "samples": str(samples)},
                       batch_sizes=self.config.batch_sizes, profiling=self.config.profiling)
        self.reporter.stage(variant.name, "profiling")
        self.run_session("profile", [job], self.on_result_of(variant), Placement(gpu))

    # --- the run ----------------------------------------------------------------------

    def execute(self, samples: Path) -> RunResults:
        function = self.config.model.kind == "function"
        variants = [FUNCTION_VARIANT] if function else plan_variants(self.config, bool(self.gpus))
        for variant in variants:
            self.variants[variant.name] = VariantResult(name=variant.name, format=variant.format,
                                                        precision=variant.precision, status="pending")
            self.reporter.stage(variant.name, "queued")
        self.save()
        units = ([Unit("profile", lambda gpu: self.profile_function(samples, gpu), gpu=bool(self.gpus), exclusive=True)]
                 if function else self.units(variants, samples))
        Scheduler(self.gpus, self.config.jobs).run(units, on_abort=self.executor.cancel)
        best, selection = select_best(list(self.variants.values()), self.config.objective,
                                      self.config.latency_budget_ms)
        with self.lock:
            self.results.best = best
            self.results.selection = selection
            self.results.state = "complete"
        self.save()
        return self.results
