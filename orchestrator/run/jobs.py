"""Building the protocol jobs of a run, each keyed for reuse (orchestrator/run/cache.py).

Every job after the reference builds on what the reference job established (`Reference`): the
model's input/output description, the scale of its outputs (for the tolerances) and the base key
that the model's fingerprint anchors. It is handed to each builder method, never kept as state
that is unset until the reference has run.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from orchestrator.config import DeclaredAxes, OptimizeConfig
from orchestrator.run import cache
from orchestrator.run.planning import COMPARE, REFERENCE, Variant
from orchestrator.run.workspace import Workspace
from runners.contract.formats import FORMATS
from runners.contract.protocol import (
    NORMALIZED_SAMPLES,
    QUANTIZED,
    REFERENCE_OUTPUTS,
    AccuracyBudget,
    AxisRange,
    IOSpec,
    Job,
    JobInputs,
    JobKind,
    MemoryFormat,
    ProfileSettings,
    TensorSpec,
    Tolerance,
)


@dataclass(frozen=True)
class Reference:
    """What the reference job established, which every later job builds on."""

    io: IOSpec
    output_scale: dict[str, float]  # each output's largest magnitude
    key: str  # the base of every later job's key: the model's fingerprint and the run's inputs
    memory_formats: Optional[tuple[MemoryFormat, ...]] = None  # the layouts that change the model; None: unknown


def declared_io(axes: Optional[DeclaredAxes]) -> Optional[IOSpec]:
    """The dynamic axes a reference job is told, by position; the runner names and shapes them."""
    if axes is None:
        return None

    def specs(side: str, ranges: list[list[AxisRange]]) -> list[TensorSpec]:
        return [TensorSpec(f"{side}_{index}", "", [], ranges=list(axis)) for index, axis in enumerate(ranges)]

    return IOSpec(inputs=specs("input", axes.inputs), outputs=specs("output", axes.outputs), batch_axis=None)


class JobBuilder:
    def __init__(self, config: OptimizeConfig, workspace: Workspace):
        self.config = config
        self.workspace = workspace
        self.keys: dict[str, str] = {}  # job id -> content key; jobs without one always run

    def _job(self, job_id: str, kind: JobKind, runner: str, output_dir: Path, variant: Optional[Variant],
             device: str, inputs: JobInputs, needs: Optional[list[str]] = None, io: Optional[IOSpec] = None,
             tolerances: Optional[dict[str, Tolerance]] = None, batch_sizes: Optional[list[int]] = None,
             profiling: Optional[ProfileSettings] = None, budgets: Optional[dict[str, AccuracyBudget]] = None) -> Job:
        return Job(id=job_id, kind=kind, runner=runner, variant=variant.name if variant else "",
                   output_dir=str(output_dir), inputs=inputs, needs=needs or [],
                   model=self.config.model.source(), format=variant.format if variant else None,
                   precision=variant.precision if variant else "fp32",
                   memory_format=variant.memory_format if variant else "contiguous",
                   quantization=variant.quantization if variant else "", io=io, tolerances=tolerances or {},
                   batch_sizes=batch_sizes or [], profiling=profiling or ProfileSettings(), device=device,
                   budgets=budgets or {})

    def _keyed(self, job: Job, reference: Reference, after: list[str]) -> Job:
        self.keys[job.id] = cache.job_key(job, reference.key, [self.keys[other] for other in after])
        return job

    def folders(self, variants: list[Variant]) -> list[Path]:
        """Every folder the jobs of a run over `variants` write, known before any job is made: a warm
        runner sees them from its start (orchestrator/run/executor.py)."""
        ids = [REFERENCE, COMPARE, *(f"{step}-{variant.name}" for variant in variants
                                       for step in ("export", "convert", "verify", "profile")
                                       if step != "convert" or FORMATS[variant.format].conversion)]
        return [self.workspace.reference, *(self.workspace.variant_dir(variant.name) for variant in variants),
                *(self.workspace.job_dir(job_id) for job_id in ids)]

    # --- the jobs ---------------------------------------------------------------------------------

    def reference_job(self, samples: Path, device: str) -> Job:
        """Runs the source model on the samples, then times it as it is at the batch sizes (alone on
        its device: nothing else runs yet); never reused (it fingerprints the model). Where the
        config declares dynamic axes, the job carries them as the io the runner fills in."""
        inputs = JobInputs(model=str(self.config.model.path.parent), samples=str(samples))
        return self._job(REFERENCE, "reference", self.config.model.framework, self.workspace.reference, None,
                         device=device, inputs=inputs, io=declared_io(self.config.dynamic_axes),
                         batch_sizes=self.config.batch_sizes, profiling=self.config.profiling)

    def function_job(self, variant: Variant, samples: Path, device: str) -> Job:
        """`nav-orch profile`: times the function; never reused (there is no reference to key it by)."""
        job_id = f"profile-{variant.name}"
        inputs = JobInputs(model=str(self.config.model.path.parent), samples=str(samples))
        return self._job(job_id, "profile", FORMATS[variant.format].runner, self.workspace.job_dir(job_id), variant,
                         device=device, inputs=inputs, batch_sizes=self.config.batch_sizes,
                         profiling=self.config.profiling)

    def _variant_inputs(self, variant: Variant) -> JobInputs:
        return JobInputs(
            model=str(self.config.model.path.parent),  # torch.compile variants compile the source
            samples=str(self.workspace.reference / NORMALIZED_SAMPLES),
            reference=str(self.workspace.reference / REFERENCE_OUTPUTS),
            artifact=str(self.workspace.variant_dir(variant.name) / FORMATS[variant.format].artifact),
        )

    def calibration(self, variant: Variant) -> str:
        """The npz a statically quantized variant is calibrated on: the user's, else ("") the samples."""
        given = self.config.calibration
        return str(given) if given is not None and variant.quantization == "static" else ""

    def export_job(self, variant: Variant, reference: Reference, device: str) -> Job:
        inputs = JobInputs(model=str(self.config.model.path.parent),
                           samples=str(self.workspace.reference / NORMALIZED_SAMPLES),
                           calibration=self.calibration(variant))
        # A two-step format's export bounds its batch axis to the engine's range (Torch-TensorRT).
        job = self._job(f"export-{variant.name}", "export", self.config.model.framework,
                        self.workspace.variant_dir(variant.name), variant, device=device, io=reference.io,
                        inputs=inputs, batch_sizes=self.config.batch_sizes if FORMATS[variant.format].conversion
                        else None)
        return self._keyed(job, reference, [])  # the reference's key is the base of every key

    def checked_jobs(self, variant: Variant, reference: Reference, device: str, needs: list[str]) -> list[Job]:
        """What makes an exported variant verified: a conversion where the format needs one, then
        the verification."""
        conversion = FORMATS[variant.format].conversion
        if conversion is None:
            return [self.verify_job(variant, reference, device, needs, after=f"export-{variant.name}")]
        inputs = replace(self._variant_inputs(variant), artifact="", calibration=self.calibration(variant),
                         export=str(self.workspace.variant_dir(variant.name) / conversion.intermediate))
        convert = self._keyed(self._job(f"convert-{variant.name}", "convert", conversion.runner,
                                        self.workspace.variant_dir(variant.name), variant, device=device, needs=needs,
                                        io=reference.io, inputs=inputs, batch_sizes=self.config.batch_sizes),
                              reference, [f"export-{variant.name}"])
        return [convert, self.verify_job(variant, reference, device, [convert.id], after=convert.id)]

    def verify_job(self, variant: Variant, reference: Reference, device: str, needs: list[str], after: str) -> Job:
        tolerances = {spec.name: self.config.tolerances.for_output(spec.name, variant.precision,
                                                                   reference.output_scale.get(spec.name, 1.0))
                      for spec in reference.io.outputs}
        # A quantized variant is judged by its accuracy budget (the tolerances then only inform).
        budgets = ({spec.name: self.config.accuracy.for_output(spec.name) for spec in reference.io.outputs}
                   if variant.precision in QUANTIZED else {})
        job_id = f"verify-{variant.name}"
        # A compiled variant compiles a graph per batch size: verified at those it is profiled at.
        job = self._job(job_id, "verify", FORMATS[variant.format].runner, self.workspace.job_dir(job_id), variant,
                        device=device, needs=needs, io=reference.io, inputs=self._variant_inputs(variant),
                        tolerances=tolerances, budgets=budgets,
                        batch_sizes=self.config.batch_sizes if FORMATS[variant.format].compiled else None)
        return self._keyed(job, reference, [after])

    def compare_job(self, variants: list[Variant], reference: Reference, device: str, batch_size: int,
                    profiling: ProfileSettings) -> Job:
        """The close candidates timed again interleaved at the deciding `batch_size` as `profiling`
        says, each given as its profile job at that size; the job goes to the first one's runner,
        whose process loads them all. Keyed by their profiles, so a run that reused them reuses the
        comparison too."""
        job_id = COMPARE
        output_dir = self.workspace.job_dir(job_id)
        compared = [replace(self.profile_job(variant, reference, device, needs=[]), output_dir=str(output_dir),
                            batch_sizes=[batch_size]) for variant in variants]
        job = self._job(job_id, "compare", FORMATS[variants[0].format].runner, output_dir, None, device=device,
                        inputs=JobInputs(), needs=[], batch_sizes=[batch_size], profiling=profiling)
        return self._keyed(replace(job, compared=compared), reference, [f"profile-{v.name}" for v in variants])

    def profile_job(self, variant: Variant, reference: Reference, device: str, needs: list[str]) -> Job:
        job_id = f"profile-{variant.name}"
        job = self._job(job_id, "profile", FORMATS[variant.format].runner, self.workspace.job_dir(job_id), variant,
                        device=device, needs=needs, io=reference.io, inputs=self._variant_inputs(variant),
                        batch_sizes=self.config.batch_sizes, profiling=self.config.variant_profiling())
        return self._keyed(job, reference, [f"verify-{variant.name}"])
