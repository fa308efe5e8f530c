"""Configuration and results of a run, as pydantic v2 models.

Results embed the protocol's dataclasses (verification, profile entries) unchanged, so
the runners and results.json share one definition of each field.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, get_args

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, TypeAdapter,
                      ValidationInfo, field_validator)
from pydantic_core import PydanticCustomError

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


class ExecutorKind(str, Enum):
    """Where runners run: sandboxed containers, or subprocesses of a local Python (no sandbox)."""

    docker = "docker"
    local = "local"

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

    atol: Optional[NonNegativeFloat] = None
    rtol: Optional[NonNegativeFloat] = None
    output_atol: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    output_rtol: dict[str, NonNegativeFloat] = Field(default_factory=dict)

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


def not_one_of(value: object, what: str, choices: Iterable[str]) -> PydanticCustomError:
    """The error for a value outside `choices`; its message lists them (pydantic adds no prefix)."""
    return PydanticCustomError("not_one_of", f"{value!r} is not {what}; choose from {', '.join(choices)}")


# Fields with a fixed set of values: what a value is, and the values.
CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "precisions": ("a precision", ALL_PRECISIONS),
    "objective": ("an objective", get_args(Objective)),
    "executor": ("an executor", tuple(kind.value for kind in ExecutorKind)),
}


class OptimizeConfig(Strict):
    """Everything a run needs, validated here for the CLI and the Python API alike."""

    # A field set on a built config is validated too: no way round the checks for API callers.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    model: ModelRef
    samples: Optional[Path] = None
    inputs: list[InputSpec] = Field(default_factory=list)
    seed: int = 0
    formats: Optional[list[str]] = None  # None: every format of the framework for the device
    precisions: Optional[list[Precision]] = None  # None: fp32 on CPUs, all on GPUs
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 64])
    tolerances: Tolerances = Field(default_factory=Tolerances)
    objective: Objective = "throughput"
    latency_budget_ms: Optional[PositiveFloat] = None
    workspace: Path
    images: str = "cpu"
    gpus: str = "none"
    jobs: PositiveInt = 1
    job_timeout_s: PositiveFloat = 900.0
    memory: Optional[str] = None  # per runner container, docker's syntax ("8g")
    pids: PositiveInt = 4096
    profiling: ProfileSettings = Field(default_factory=ProfileSettings)
    exhaustive: bool = False  # build compiled formats in every precision, not only the winning one
    triton: TritonSettings = Field(default_factory=TritonSettings)
    executor: ExecutorKind = ExecutorKind.docker
    python: Optional[str] = None  # the local executor's Python; None: the host's own

    @field_validator("precisions", "objective", "executor", mode="before")
    @classmethod
    def known_choices(cls, value: Any, info: ValidationInfo) -> Any:
        # Before pydantic's own check, whose message would not name the wrong value.
        what, choices = CHOICES[info.field_name]
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item not in choices:
                raise not_one_of(item, what, choices)
        return value

    @field_validator("formats")
    @classmethod
    def known_formats(cls, formats: Optional[list[str]], info: ValidationInfo) -> Optional[list[str]]:
        model = info.data.get("model")  # absent when the model itself is invalid
        if formats is None or model is None or model.kind == "function":
            return formats
        known = FRAMEWORK_FORMATS[model.framework]
        for fmt in formats:
            if fmt not in known:
                raise not_one_of(fmt, f"a format of {model.framework}", known)
        return formats

    @field_validator("batch_sizes")
    @classmethod
    def positive_batch_sizes(cls, sizes: list[int]) -> list[int]:
        if not sizes:
            raise PydanticCustomError("no_batch_size", "no batch size given; give positive integers like 1,8,64")
        for size in sizes:
            if size < 1:
                raise PydanticCustomError("batch_size", f"{size} is not a batch size; give positive integers "
                                          "like 1,8,64")
        return sizes

    @field_validator("python")
    @classmethod
    def python_only_local(cls, python: Optional[str], info: ValidationInfo) -> Optional[str]:
        executor = info.data.get("executor")
        if python is not None and executor is not None and executor is not ExecutorKind.local:
            raise PydanticCustomError("python_not_local", f"a Python is for executor local only, not "
                                      f"{executor.value} (containers bring their own)")
        return python


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
    # What the source model is (its fingerprint, from the reference job): the cache keys build on it.
    model_fingerprint: Optional[str] = None
    environment: Environment
    triton: Optional[TritonResults] = None  # the Triton stage, when it ran


JOB_RESULT = TypeAdapter(JobResult)
