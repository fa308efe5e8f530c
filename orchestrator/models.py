"""Configuration and results of a run, as pydantic v2 models.

Results embed the protocol's dataclasses (verification, profile entries) unchanged, so
the runners and results.json share one definition of each field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, TypeAdapter

from runners.protocol import (
    DEFAULT_TOLERANCES,
    FORMAT_RUNNER,
    JobResult,
    ModelSource,
    Precision,
    ProfileEntry,
    ProfileSettings,
    Tolerance,
    Verification,
)

Framework = Literal["torch"]
# A variant is `pending` only while a run is under way.
VariantStatus = Literal["pending", "ok", "failed", "skipped"]
Objective = Literal["throughput", "latency"]

# Formats each framework can export to, in the order they are tried.
FRAMEWORK_FORMATS: dict[str, list[str]] = {
    "torch": ["torchscript-trace", "torchscript-script", "onnx", "exported-program"],
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(Strict):
    """The MODEL argument: where the model is and how the runner loads it."""

    path: Path  # absolute path of the file (.py, .pt, .ts, .pt2)
    kind: Literal["factory", "torchscript", "exported_program"]
    factory: Optional[str] = None
    args: dict[str, Any] = Field(default_factory=dict)
    framework: Framework = "torch"

    def source(self) -> ModelSource:
        return ModelSource(kind=self.kind, file=self.path.name, factory=self.factory, args=self.args)


class InputSpec(Strict):
    """`--input NAME:SHAPE:DTYPE`: random samples of this shape, batch on axis 0."""

    name: str
    shape: list[PositiveInt]
    dtype: str


class Tolerances(Strict):
    """Global atol/rtol and per-output overrides; unset values follow the precision."""

    atol: Optional[float] = None
    rtol: Optional[float] = None
    output_atol: dict[str, float] = Field(default_factory=dict)
    output_rtol: dict[str, float] = Field(default_factory=dict)

    def for_output(self, name: str, precision: str) -> Tolerance:
        default_atol, default_rtol = DEFAULT_TOLERANCES[precision]
        atol = self.output_atol.get(name, self.atol if self.atol is not None else default_atol)
        rtol = self.output_rtol.get(name, self.rtol if self.rtol is not None else default_rtol)
        return Tolerance(atol=atol, rtol=rtol)


class OptimizeConfig(Strict):
    model: ModelRef
    samples: Optional[Path] = None
    inputs: list[InputSpec] = Field(default_factory=list)
    seed: int = 0
    formats: list[str]
    precisions: list[Precision] = Field(default_factory=lambda: ["fp32"])
    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 8, 64])
    tolerances: Tolerances = Field(default_factory=Tolerances)
    objective: Objective = "throughput"
    latency_budget_ms: Optional[float] = None
    workspace: Path
    images: str = "cpu"
    gpus: str = "none"
    jobs: PositiveInt = 1
    job_timeout_s: float = 900.0
    memory: Optional[str] = None  # per runner container, docker's syntax ("8g")
    pids: PositiveInt = 4096
    profiling: ProfileSettings = Field(default_factory=ProfileSettings)


class VariantResult(Strict):
    name: str
    format: str
    precision: Precision
    status: VariantStatus
    error: Optional[str] = None
    artifact: Optional[str] = None  # relative to the workspace
    verification: Optional[Verification] = None
    profile: list[ProfileEntry] = Field(default_factory=list)

    @property
    def runner(self) -> str:
        return FORMAT_RUNNER[self.format]


class ImageRecord(Strict):
    tag: str
    id: str
    labels: dict[str, str] = Field(default_factory=dict)
    # What the runners reported from inside containers of this image.
    versions: dict[str, str] = Field(default_factory=dict)


class Environment(Strict):
    nav_orch: str
    host_python: str
    docker: Optional[str] = None
    images: list[ImageRecord] = Field(default_factory=list)


class Selection(Strict):
    objective: Objective
    latency_budget_ms: Optional[float] = None
    batch_size: Optional[int] = None
    reason: str


class JobCounts(Strict):
    run: int = 0
    reused: int = 0  # finished earlier under the same content key


class RunResults(Strict):
    state: Literal["running", "complete", "interrupted", "failed"] = "running"
    error: Optional[str] = None
    best: Optional[str] = None
    selection: Optional[Selection] = None
    variants: list[VariantResult] = Field(default_factory=list)
    jobs: JobCounts = Field(default_factory=JobCounts)
    environment: Environment


JOB_RESULT = TypeAdapter(JobResult)
