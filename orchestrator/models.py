"""Configuration and results of a run, as pydantic v2 models.

Results embed the protocol's dataclasses (verification, profile entries) unchanged, so
the runners and results.json share one definition of each field.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, TypeAdapter

from runners.protocol import (
    ALL_PRECISIONS,
    DEFAULT_TOLERANCES,
    GPU_ONLY_FORMATS,
    FORMAT_RUNNER,
    GpuInfo,
    JobResult,
    ModelSource,
    Precision,
    ProfileEntry,
    ProfileSettings,
    Tolerance,
    Verification,
)

Framework = Literal["torch", "tensorflow", "jax", "onnx"]
# A variant is `pending` only while a run is under way.
VariantStatus = Literal["pending", "ok", "failed", "skipped"]
Objective = Literal["throughput", "latency"]

# Formats each framework can export to, in the order they are tried.
FRAMEWORK_FORMATS: dict[str, list[str]] = {
    "torch": ["torchscript-trace", "torchscript-script", "onnx", "exported-program", "torch-compile",
              "torch-compile-cudagraphs", "torch-tensorrt", "tensorrt"],
    "tensorflow": ["savedmodel", "onnx", "tensorrt", "tf-trt"],
    "jax": ["savedmodel", "onnx", "tensorrt", "tf-trt"],
    "onnx": ["onnx", "tensorrt"],
}


# Formats whose build is a long compile (about a minute per batch size for ResNet-50 on
# an H100): on GPUs they are built only in the precision that won among the others.
COMPILED_FORMATS = {"torch-compile", "torch-compile-cudagraphs"}
# Searched by default only on GPUs: CUDA graphs need one. Plain torch.compile is opt-in:
# on CPUs its compile time (half a minute for a small MLP on 2 cores) seldom pays off, and
# on GPUs mode="reduce-overhead" measured faster (docs/performance.md).
DEFAULT_EXCLUDED = {False: GPU_ONLY_FORMATS | {"torch-compile"}, True: {"torch-compile"}}


def default_formats(framework: str, on_gpu: bool) -> list[str]:
    return [f for f in FRAMEWORK_FORMATS[framework] if f not in DEFAULT_EXCLUDED[on_gpu]]


def default_precisions(on_gpu: bool) -> list[str]:
    """Half precisions are searched on GPUs; CPUs seldom run them faster."""
    return list(ALL_PRECISIONS) if on_gpu else ["fp32"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(Strict):
    """The MODEL argument: where the model is and how the runner loads it."""

    path: Path  # absolute path of the file (.py, .pt, .ts, .pt2)
    kind: Literal["factory", "torchscript", "exported_program", "savedmodel", "keras", "onnx", "function"]
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
    """Global atol/rtol and per-output overrides; unset values follow the precision.

    A default atol is a fraction of the output's scale (its largest magnitude in the
    reference): half precisions keep about 3 (fp16) or 2 (bf16) significant digits of the
    largest values, whatever units the model's outputs are in."""

    atol: Optional[float] = None
    rtol: Optional[float] = None
    output_atol: dict[str, float] = Field(default_factory=dict)
    output_rtol: dict[str, float] = Field(default_factory=dict)

    def for_output(self, name: str, precision: str, scale: float = 1.0) -> Tolerance:
        atol_fraction, default_rtol = DEFAULT_TOLERANCES[precision]
        default_atol = atol_fraction * max(scale, 1e-30)
        atol = self.output_atol.get(name, self.atol if self.atol is not None else default_atol)
        rtol = self.output_rtol.get(name, self.rtol if self.rtol is not None else default_rtol)
        return Tolerance(atol=atol, rtol=rtol)


# --- the Triton stage (orchestrator/triton_stage.py; README, "Triton stage") ---------------

class TritonSettings(Strict):
    """Deploying variants to Triton Inference Server and measuring them with perf_analyzer."""

    enabled: bool = True
    all_variants: bool = False  # every verified variant, not only the best
    concurrency: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4])
    ready_timeout_s: float = 180.0  # server start until every model is loaded
    perf_timeout_s: float = 300.0  # each perf_analyzer run
    measurement_request_count: PositiveInt = 50  # requests per window (count_windows mode)
    # Unstable measurement: again with twice the window, this often; then one last run that keeps
    # the figures as `stable: false`.
    stability_retries: int = 2
    shm_size: str = "256m"  # the server's /dev/shm (Python-backend stubs exchange tensors there)


class TritonLatency(Strict):
    p50: float
    p90: float
    p95: float
    p99: float


class TritonRun(Strict):
    """One perf_analyzer measurement: a variant served at one batch size and concurrency."""

    variant: str
    backend: str  # Triton backend that served it: onnxruntime, pytorch, tensorrt, python, ...
    batch_size: int
    concurrency: int
    throughput: float  # samples per second, as perf_analyzer counts them (infer/sec)
    latency_ms: TritonLatency  # client-side, per request
    server_queue_ms: float
    server_compute_ms: float  # compute input + infer + output
    stable: bool = True  # False: perf_analyzer never saw 3 windows within 10% (a busy machine)
    csv: Optional[str] = None  # perf_analyzer's CSV, relative to the workspace


class TritonResults(Strict):
    image: str
    model_repository: str  # relative to the workspace
    server_version: Optional[str] = None
    runs: list[TritonRun] = Field(default_factory=list)
    # What went wrong, one line per variant or for the stage; the optimize exit code ignores it.
    error: Optional[str] = None


class OptimizeConfig(Strict):
    model: ModelRef
    samples: Optional[Path] = None
    inputs: list[InputSpec] = Field(default_factory=list)
    seed: int = 0
    formats: Optional[list[str]] = None  # None: every format of the framework for the device
    precisions: Optional[list[Precision]] = None  # None: fp32 on CPUs, all on GPUs
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
    exhaustive: bool = False  # build compiled formats in every precision, not only the winning one
    triton: TritonSettings = Field(default_factory=TritonSettings)


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
    gpus: list[GpuInfo] = Field(default_factory=list)  # as the runners saw them


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
    triton: Optional[TritonResults] = None  # the Triton stage, when it ran


JOB_RESULT = TypeAdapter(JobResult)
