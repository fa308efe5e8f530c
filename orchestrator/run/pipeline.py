"""The optimize pipeline: reference -> export + verify per variant -> profile -> select (the close
candidates timed again, interleaved).

The parts: planning (orchestrator/run/planning.py: the variants and the graph of steps), building
jobs (jobs.py), recording variant states (recording.py) and running sessions (sessions.py). This
module runs the reference job first, hands what it established to every step the scheduler runs,
and selects the best variant at the end.
"""
from __future__ import annotations

import dataclasses
import math
import os
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np

from orchestrator.config import OptimizeConfig
from orchestrator.errors import BadInput
from orchestrator.results import Selection
from orchestrator.run import cache
from orchestrator.run.executor import Executor, OnResult, Placement
from orchestrator.run.jobs import JobBuilder, Reference
from orchestrator.run.paired import within_point_budget
from orchestrator.run.planning import (
    COMPARE,
    REFERENCE,
    Step,
    Variant,
    compiled_skip_reason,
    layout_skip_reason,
    plan_steps,
    plan_variants,
    search_cut_reason,
    skip_reason,
    source_skip_reason,
)
from orchestrator.run.recording import Recorder
from orchestrator.run.runner_output import reference_outputs
from orchestrator.run.scheduler import Scheduler, Unit
from orchestrator.run.selection import artifact_cost, close_candidates, confident, select_best
from orchestrator.run.sessions import Sessions
from orchestrator.run.turns import GpuTurns
from orchestrator.run.workspace import Workspace
from runners.contract.formats import FORMATS
from runners.contract.protocol import COMPARING_RUNNERS, IOSpec, JobResult

# What a variant's stage is while a job of this kind runs for it.
DOING = {"export": "exporting", "convert": "converting", "verify": "verifying", "profile": "profiling"}


class ReferenceFailed(Exception):
    """The source model could not be loaded or run on the samples."""


def check_fixed_batch(io: IOSpec, batch_sizes: list[int]) -> None:
    """A model whose inputs fix the batch axis (an ONNX graph can) is profiled only at that size.
    A model without a batch axis (its dynamic axes declared) has none to fix."""
    batch_axis = io.batch_axis
    if batch_axis is None:
        return
    for spec in io.inputs:
        fixed = spec.shape[batch_axis] if len(spec.shape) > batch_axis else None
        if fixed is not None and any(size != fixed for size in batch_sizes):
            raise BadInput(f"input {spec.name!r} has a fixed batch of {fixed} (axis {batch_axis}) in the model: "
                           f"pass --batch-sizes {fixed}, or export the model with a dynamic batch axis")


class Pipeline:
    def __init__(self, config: OptimizeConfig, workspace: Workspace, executor: Executor, recorder: Recorder,
                 inputs_key: str, gpus: list[str], force: bool = False):
        self.config = config
        self.workspace = workspace
        self.executor = executor
        self.recorder = recorder
        self.inputs_key = inputs_key  # the samples, the runners' environment and code (cache.inputs_key)
        self.gpus = gpus
        self.jobs = JobBuilder(config, workspace)
        self.sessions = Sessions(executor, workspace, self.jobs.keys, recorder, recorder.image.tag, force)
        # Sessions sharing a GPU take turns at what they time; a GPU of one session needs none.
        self.turns = {gpu: GpuTurns() for gpu in gpus} if config.gpu_sessions > 1 else {}
        self.variants = plan_variants(config, bool(gpus))
        self.searched = {v.format for v in self.variants}

    def execute(self, samples: Path) -> Optional[Reference]:
        """Run every step; returns what the reference job established (None for `nav-orch profile`,
        which has no reference)."""
        variants = self.variants
        self.recorder.queue(variants)
        steps = plan_steps(variants, bool(self.gpus), len(self.gpus))
        function = self.config.model.form == "function"
        if not function:  # CPU sessions run in warm runners that see every folder of the run
            given = [self.config.model.path.parent, samples, *filter(None, [self.config.calibration])]
            self.executor.expect(self.jobs.folders(variants), given, self.config.jobs)
            # Started now, beside the reference job, for the CPU sessions that will run at once.
            on_cpus = [s for s in steps if s.action in ("build", "export") and self.cut_reason(s.variants[0]) is None]
            self.executor.prewarm(self.recorder.image.tag, min(self.config.jobs, len(on_cpus)))
        reference = None if function else self.run_reference(samples, self.gpus[0] if self.gpus else None)
        units = [Unit(step.name, partial(self.perform, step, reference, samples),
                      needs=list(step.needs), gpu=step.gpu, exclusive=step.exclusive)
                 for step in steps]
        Scheduler(self.gpus, self.config.jobs, self.config.gpu_sessions).run(units, on_abort=self.executor.cancel)
        best, selection = select_best(list(self.recorder.variants.values()), self.config.objective,
                                      self.config.latency_budget_ms)
        if best is not None and reference is not None:
            best, selection = self.time_again(variants, best, selection, reference)
        self.recorder.finish(best, selection)
        return reference

    def time_again(self, variants: list[Variant], best: str, selection: Selection,
                   reference: Reference) -> tuple[str, Selection]:
        """Confident selection: the best and its close rivals, of the runners that compare (one
        process loads them all), loaded side by side and timed again interleaved; the choice by their
        paired ratios. A comparison that fails leaves the single pass's choice, and says so."""
        planned = {variant.name: variant for variant in variants}

        def comparing(name: str) -> bool:
            return FORMATS[planned[name].format].runner in COMPARING_RUNNERS

        settings = self.config.profiling
        close = [name for name in close_candidates(list(self.recorder.variants.values()), best, selection,
                                                   settings.close_margin) if comparing(name)]
        if settings.rounds == 0 or len(close) < 2 or not comparing(best) or selection.batch_size is None:
            return best, selection
        slowest_ms = max(entry.latency_ms.p50 for name in close for entry in self.recorder.variants[name].profile
                         if entry.batch_size == selection.batch_size)
        fitted = within_point_budget(settings, slowest_ms)
        if fitted is None:
            return best, selection.model_copy(update=dict(reason=(
                f"{selection.reason}; the close candidates were not timed again (a call of {slowest_ms:,.0f} ms: "
                f"{settings.rounds} rounds would take longer than profiling.max_point_s, {settings.max_point_s:g} s)")))
        gpu = self.gpus[0] if self.gpus else None
        job = self.jobs.compare_job([planned[name] for name in close], reference, "cpu" if gpu is None else "cuda",
                                    selection.batch_size, fitted)
        self.recorder.reporter.note(f"timing {len(close)} close candidates again, interleaved: {', '.join(close)}")
        result = self.sessions.run(COMPARE, [job], lambda result: None, Placement(
            gpu, turns=self.turns.get(gpu) if gpu is not None else None))[job.id]
        rounds = result.rounds
        if result.status != "ok" or set(rounds) != set(close) or len({len(times) for times in rounds.values()}) != 1 \
                or not all(math.isfinite(t) and t > 0 for times in rounds.values() for t in times):
            why = result.error or "it timed other candidates, or gave times that are not positive numbers"
            return best, selection.model_copy(update=dict(
                reason=f"{selection.reason}; the close candidates were not timed again ({why})"))
        costs = {name: artifact_cost(self.recorder.variants[name], self.workspace.root) for name in close}
        return confident(best, selection, rounds, costs)

    def run_reference(self, samples: Path, gpu: Optional[str]) -> Reference:
        """The source model on the samples: its outputs, the input/output description, and its
        fingerprint, which keys every later job. It always runs (it is the cheapest job)."""
        job = self.jobs.reference_job(samples, "cuda" if gpu is not None else "cpu")
        self.recorder.reporter.note("running the source model on the samples, and timing it as it is")
        result = self.sessions.run(REFERENCE, [job], self.recorder.record_versions, Placement(gpu))[REFERENCE]
        if result.status != "ok" or result.io is None or result.fingerprint is None:
            raise ReferenceFailed(result.error or "the reference job returned no input/output description "
                                  "or no fingerprint")
        check_fixed_batch(result.io, self.config.batch_sizes)
        key = cache.base_key(result.fingerprint, self.inputs_key)
        self.recorder.record_fingerprint(result.fingerprint)
        self.recorder.record_source_profile(result.profile)
        scale = {name: float(np.abs(array).max(initial=0.0))
                 for name, array in reference_outputs(self.workspace).items()}
        memory_formats = tuple(result.memory_formats) if result.memory_formats is not None else None
        return Reference(io=result.io, output_scale=scale, key=key, memory_formats=memory_formats)

    def perform(self, step: Step, reference: Optional[Reference], samples: Path, gpu: Optional[str]) -> None:
        if step.action == "profile-function":
            self.profile_function(step.variants[0], samples, gpu)
            return
        assert reference is not None, "every step but profile-function builds on the reference"
        if step.action == "build":
            self.build(step.variants[0], reference)
        elif step.action == "export":
            self.export(step.variants[0], reference)
        elif step.action == "profile":
            self.profile(step, reference, gpu)
        elif step.action == "check":
            self.check(step.name, list(step.variants), reference, gpu)
        elif step.action == "check-compiled":
            self.check_compiled(step, reference, gpu)

    def on_result_of(self, variant: Variant) -> OnResult:
        return lambda result: self.recorder.on_result(variant, result)

    def shared_cpus(self) -> Placement:
        """CPU sessions run up to `jobs` at a time: each gets its share of the cores."""
        return Placement(threads=max(1, (os.cpu_count() or 1) // self.config.jobs))

    def skipped(self, variant: Variant, reference: Reference) -> bool:
        """Skip a variant the run cannot build, or need not, before any work is spent on it."""
        image = self.recorder.image
        where = image.tag if image.tag != "local" else f"the runners' Python ({image.id})"
        reason = (source_skip_reason(variant, self.config.model)
                  or skip_reason(variant, image.versions, where, bool(self.gpus))
                  or layout_skip_reason(variant, reference.memory_formats) or self.cut_reason(variant))
        if reason is not None:
            self.recorder.skip(variant, reason)
        return reason is not None

    def cut_reason(self, variant: Variant) -> Optional[str]:
        """Why a variant the run could build is left out of its search (none under --exhaustive)."""
        return None if self.config.exhaustive else search_cut_reason(
            variant, self.searched, bool(self.gpus), bool(self.config.formats))

    # CPU runs: export and verify share a session per variant; one exclusive step profiles all.

    def build(self, variant: Variant, reference: Reference) -> None:
        if self.skipped(variant, reference):
            return
        export = self.jobs.export_job(variant, reference, "cpu")
        jobs = [export, *self.jobs.checked_jobs(variant, reference, "cpu", needs=[export.id])]
        self.recorder.reporter.stage(variant.name, "exporting")
        self.sessions.run(f"build-{variant.name}", jobs, self.on_result_of(variant), self.shared_cpus())

    def profile(self, step: Step, reference: Reference, gpu: Optional[str]) -> None:
        variants = self.recorder.pending(step.variants)
        if not variants:
            return
        jobs = [self.jobs.profile_job(v, reference, "cpu", needs=[]) for v in variants]
        owner = {job.id: v for job, v in zip(jobs, variants)}

        def on_result(result: JobResult) -> None:
            self.recorder.on_result(owner[result.job_id], result)
            following = self.recorder.pending(variants)
            if following:
                self.recorder.reporter.stage(following[0].name, "profiling")

        self.recorder.reporter.stage(variants[0].name, "profiling")
        self.sessions.run("profile", jobs, on_result, Placement(gpu))

    # GPU runs: exports run on the CPUs in parallel; the GPU verifies and profiles.

    def export(self, variant: Variant, reference: Reference) -> None:
        if self.skipped(variant, reference):
            return
        self.recorder.reporter.stage(variant.name, "exporting")
        self.sessions.run(f"export-{variant.name}", [self.jobs.export_job(variant, reference, "cpu")],
                          self.on_result_of(variant), self.shared_cpus())

    def check(self, name: str, variants: list[Variant], reference: Reference, gpu: Optional[str]) -> None:
        to_check = []
        for variant in self.recorder.pending(variants):
            # A format exported in its check session: what would skip its export (`skipped` records
            # why) is decided here.
            if not (FORMATS[variant.format].exported_in_check and self.skipped(variant, reference)):
                to_check.append(variant)
        variants = to_check
        if not variants:
            return
        jobs, profiles, owner = [], [], {}
        for variant in variants:
            # A trace is exported here, on the GPU it will run on, as is a program compiled on it
            # (Torch-TensorRT); a compiled format here, at once.
            export = ([self.jobs.export_job(variant, reference, "cuda")] if FORMATS[variant.format].exported_in_check
                      else [])
            checked = self.jobs.checked_jobs(variant, reference, "cuda", needs=[job.id for job in export])
            profile = self.jobs.profile_job(variant, reference, "cuda", needs=[checked[-1].id])
            jobs += [*export, *checked]
            profiles.append(profile)
            owner.update({job.id: variant for job in (*export, *checked, profile)})
        # Every export and verification before the first profile: a profile waits for a turn, which
        # other sessions' compiles on this GPU hold up, and the rest of the session needs none.
        jobs += profiles
        position = {job.id: index for index, job in enumerate(jobs)}
        turns = self.turns.get(gpu) if gpu is not None else None

        def on_result(result: JobResult) -> None:
            if turns is not None and result.status == "failed" and "out of memory" in (result.error or ""):
                result = dataclasses.replace(result, error=(
                    f"{result.error} (up to {self.config.gpu_sessions} sessions shared this GPU: a lower "
                    "--gpu-sessions leaves each more memory)"))
            self.recorder.on_result(owner[result.job_id], result)
            following = [job for job in jobs[position[result.job_id] + 1:] if self.recorder.pending([owner[job.id]])]
            if following:
                self.recorder.reporter.stage(owner[following[0].id].name, DOING[following[0].kind])

        self.recorder.reporter.stage(variants[0].name, DOING[jobs[0].kind])
        self.sessions.run(name, jobs, on_result, Placement(gpu, turns=turns, rivals=self.recorder.rivals))

    def check_compiled(self, step: Step, reference: Reference, gpu: Optional[str]) -> None:
        (variant,) = step.variants
        best, _ = select_best([self.recorder.entry(v) for v in step.rivals], self.config.objective,
                              self.config.latency_budget_ms)
        winner = self.recorder.variants[best].precision if best else None
        gpus = self.recorder.results.environment.gpus
        reason = None if self.config.exhaustive else compiled_skip_reason(
            variant, winner, gpus[0].compute_capability if gpus else None, bool(self.config.precisions))
        if reason:
            self.recorder.skip(variant, reason)
            return
        self.check(step.name, [variant], reference, gpu)

    # `nav-orch profile`: no reference, export or verify; one job times the function.

    def profile_function(self, variant: Variant, samples: Path, gpu: Optional[str]) -> None:
        job = self.jobs.function_job(variant, samples, "cuda" if gpu is not None else "cpu")
        self.recorder.reporter.stage(variant.name, "profiling")
        self.sessions.run("profile", [job], self.on_result_of(variant), Placement(gpu))
