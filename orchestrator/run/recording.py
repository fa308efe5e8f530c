"""Recording variant states into results.json: each job's result moves its variant on (or fails
it, once, with the job's reason), and the file is rewritten atomically after every change."""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Optional

from orchestrator.progress import Reporter
from orchestrator.results import ImageRecord, JobTiming, RunResults, Selection, VariantResult
from orchestrator.run.planning import Variant
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import JobResult, ProfileEntry, Rival

# The stage a variant enters when a job of this kind succeeds.
NEXT_STAGE = {"export": "exported", "convert": "converted", "verify": "verified", "profile": "done"}


class Recorder:
    """The run's results, shared by the sessions that run in parallel (one lock guards them)."""

    def __init__(self, results: RunResults, image: ImageRecord, workspace: Workspace, reporter: Reporter,
                 gpu_uuids: Optional[Mapping[str, str]] = None):
        self.results = results
        self.gpu_uuids = gpu_uuids or {}  # the host's GPUs: index -> UUID
        self.image = image
        self.workspace = workspace
        self.reporter = reporter
        self.lock = threading.Lock()
        self.variants: dict[str, VariantResult] = {}
        self.started = time.monotonic()

    def save(self) -> None:
        with self.lock:
            self.results.variants = list(self.variants.values())
            self.workspace.write_results(self.results)

    def queue(self, variants: list[Variant]) -> None:
        for variant in variants:
            self.variants[variant.name] = VariantResult(name=variant.name, format=variant.format,
                                                        precision=variant.precision,
                                                        memory_format=variant.memory_format,
                                                        quantization=variant.quantization, status="pending")
            self.reporter.stage(variant.name, "queued")
        self.save()

    def pending(self, variants: list[Variant] | tuple[Variant, ...]) -> list[Variant]:
        """Those of `variants` that nothing has failed or skipped yet."""
        return [v for v in variants if self.variants[v.name].status == "pending"]

    def entry(self, variant: Variant) -> VariantResult:
        return self.variants[variant.name]

    def rivals(self) -> list[Rival]:
        """The verified, profiled variants' points timed in full: what a later profile is measured against."""
        with self.lock:
            return [Rival(v.name, [e for e in v.profile if e.beaten_by is None])
                    for v in self.variants.values() if v.status == "ok" and v.profile]

    def count_jobs(self, reused: int, run: int) -> None:
        with self.lock:
            self.results.jobs.reused += reused
            self.results.jobs.run += run

    def record_versions(self, result: JobResult) -> None:
        """What a runner reported of its environment: package versions, the GPU it ran on."""
        with self.lock:
            self.image.versions.update(result.versions)
            known = {gpu.uuid for gpu in self.results.environment.gpus}
            if result.gpu is not None and result.gpu.uuid not in known:
                self.results.environment.gpus.append(result.gpu)

    def record_timing(self, result: JobResult, session: str, gpu: Optional[str]) -> None:
        """When and where a job ran; `gpu` is the host's index of the GPU it was placed on."""
        end = time.monotonic() - self.started
        used = result.gpu.uuid if result.gpu is not None else None
        placed = self.gpu_uuids.get(gpu) if gpu is not None else None
        timing = JobTiming(job=result.job_id, kind=result.kind, session=session,
                           placement=f"GPU {gpu}" if gpu is not None else "CPU",
                           start_s=max(0.0, end - result.duration_s), end_s=end,
                           gpu_uuid=used, on_placed_gpu=used == placed if used and placed else None)
        with self.lock:
            self.results.timeline.append(timing)

    def record_source_profile(self, profile: list[ProfileEntry]) -> None:
        with self.lock:
            self.results.source_profile = profile

    def record_fingerprint(self, fingerprint: str) -> None:
        with self.lock:
            self.results.model_fingerprint = fingerprint

    def on_result(self, variant: Variant, result: JobResult) -> None:
        self.record_versions(result)
        with self.lock:
            entry = self.variants[variant.name]
            was_final = entry.status not in ("pending", "ok")
            if result.kind in ("export", "convert") and result.artifact:
                entry.artifact = self.workspace.relative(self.workspace.variant_dir(variant.name) / result.artifact)
            if result.verification is not None:
                entry.verification = result.verification
            entry.gaps = sorted({gap.batch_size: gap for gap in [*entry.gaps, *result.gaps]}.values(),
                                key=lambda gap: gap.batch_size)
            if result.profile:  # never a point at a batch size its verification left out
                left_out = {gap.batch_size for gap in entry.gaps}
                entry.profile = [point for point in result.profile if point.batch_size not in left_out]
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

    def skip(self, variant: Variant, reason: str) -> None:
        with self.lock:
            entry = self.variants[variant.name]
            entry.status, entry.error = "skipped", reason
        self.reporter.stage(variant.name, "skipped", reason)
        self.save()

    def finish(self, best: Optional[str], selection: Selection) -> None:
        with self.lock:
            self.results.best = best
            self.results.selection = selection
            self.results.state = "complete"
        self.save()
