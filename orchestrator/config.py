"""A run's configuration as pydantic v2 models: validated here, in one place, for the CLI and
the Python API alike. What each format is comes from the registry (runners/contract/formats.py)."""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Optional, get_args

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.errors import BadInput
from orchestrator.run.memory_limit import AUTO, NONE, check_memory_setting
from runners.contract.formats import MEMORY_FORMATS, PRECISIONS, FormatName, formats_of
from runners.contract.protocol import (
    DEFAULT_TOLERANCES,
    QUANTIZED,
    AccuracyBudget,
    AxisRange,
    Framework,
    MemoryFormat,
    ModelForm,
    ModelSource,
    Precision,
    ProfileSettings,
    Tolerance,
)

Objective = Literal["throughput", "latency"]
# The runner images a config names (`images`): the CPU flavor, or the CUDA images of an NGC release.
CPU_RELEASE = "cpu"
NGC_RELEASE = re.compile(r"\d{2}\.\d{2}")


class ExecutorName(str, Enum):
    """Where runners run: sandboxed containers, or subprocesses of a local Python (no sandbox)."""

    docker = "docker"
    local = "local"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def default_of(model: type[BaseModel], name: str) -> Any:
    """A field's default (a factory's called anew), for the CLI's options and the parameters that
    must start from the same value: the models hold every default, nothing else repeats one."""
    return model.model_fields[name].get_default(call_default_factory=True)


class ModelRef(Strict):
    """The MODEL argument: where the model is and how the runner loads it."""

    path: Path  # absolute path of the file (.py, .pt, .ts, .pt2)
    form: ModelForm
    factory: Optional[str] = None
    args: dict[str, Any] = Field(default_factory=dict)
    framework: Framework = "torch"
    precision: Precision = "fp32"  # what the source computes in (see ModelSource.precision)
    cpu_file: Optional[str] = None  # beside `path`: see ModelSource.cpu_file

    def title(self) -> str:
        """How a report names the model: `mlp.py:make_mlp`, `model.onnx`."""
        return f"{self.path.name}:{self.factory}" if self.factory else self.path.name

    def source(self) -> ModelSource:
        return ModelSource(form=self.form, file=self.path.name, factory=self.factory, args=self.args,
                           precision=self.precision, cpu_file=self.cpu_file)


class InputSpec(Strict):
    """`--input NAME:SHAPE:DTYPE`: random samples of this shape, batch on axis 0."""

    name: str
    shape: list[PositiveInt]
    dtype: str


class DeclaredAxes(Strict):
    """A model with no batch axis (a pipeline's module, orchestrator/inplace): each input's and
    output's dynamic axes, by position, with the sizes seen. Its samples are one call, used at their
    shapes: nothing is repeated along axis 0, and `batch_sizes` only labels that call."""

    inputs: list[list[AxisRange]]
    outputs: list[list[AxisRange]]


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


class Budget(Strict):
    """An output's accuracy budget (runners/contract/protocol.py AccuracyBudget): the least cosine similarity
    to the reference, the least share of rows whose top-1 class agrees (2-D outputs; None: not
    judged), and an optional largest absolute error."""

    min_cosine: float = Field(default=0.99, ge=-1.0, le=1.0)
    min_top1: Optional[float] = Field(default=0.9, ge=0.0, le=1.0)
    max_abs: Optional[NonNegativeFloat] = None

    def protocol(self) -> AccuracyBudget:
        return AccuracyBudget(min_cosine=self.min_cosine, min_top1=self.min_top1, max_abs=self.max_abs)


class Accuracy(Strict):
    """How quantized variants (int8, fp8) are verified: they cannot meet fp32 tolerances, so each
    output keeps a budget instead; `default` for every output, `outputs` per output name."""

    default: Budget = Field(default_factory=Budget)
    outputs: dict[str, Budget] = Field(default_factory=dict)

    def for_output(self, name: str) -> AccuracyBudget:
        return self.outputs.get(name, self.default).protocol()


# --- the Triton stage (orchestrator/stage.py; docs/serving.md, "The Triton stage") ---------------

class TritonSettings(Strict):
    """Deploying variants to Triton Inference Server and measuring them with perf_analyzer."""

    enabled: bool = True
    all_variants: bool = False  # every verified variant, not only the best
    concurrency: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4])
    # Server start until every model is loaded: a compiled variant compiles and warms each batch size
    # first, about a minute each on an H100 (a failed load ends the wait at once, from the log).
    ready_timeout_s: float = 600.0
    perf_timeout_s: float = 300.0  # each perf_analyzer run
    measurement_request_count: PositiveInt = 50  # requests per window (count_windows mode)
    # Unstable measurement: again with twice the window, this often; then one last run that keeps
    # the figures as `stable: false`.
    stability_retries: int = 2
    shm_size: str = "256m"  # the server's /dev/shm (Python-backend stubs exchange tensors there)
    # The local executor's server: a tritonserver of this machine (default: nvidia-pytriton's in the
    # runners' Python, else one on PATH), serving through its Python backend (orchestrator/triton/local.py).
    tritonserver: Optional[Path] = None
    # The search of the served best variant's configuration (orchestrator/triton/config_search.py):
    # quick (Model Analyzer's hill climb), full (every configuration) or off; within this many seconds.
    search: Literal["quick", "full", "off"] = "quick"
    search_budget_s: PositiveFloat = 120.0
    search_concurrency: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 4, 8])
    # The Python its models run in (the Python backend's stub): numpy<2 and the variant's runtime; the
    # artifacts need not the model's own libraries. Default: the runners' (OptimizeConfig.python).
    python: Optional[str] = None

    @model_validator(mode="after")
    def all_variants_need_the_stage(self) -> TritonSettings:
        if self.all_variants and not self.enabled:
            raise conflict("all_variants", "enabled=False", "the Triton stage that would serve every verified "
                           "variant is off")
        return self


def conflict(first: str, second: str, why: str) -> PydanticCustomError:
    """The error for two settings that exclude each other, named in backticks: the CLI puts its
    options in their place (orchestrator/cli_text.py validation_message)."""
    return PydanticCustomError("conflict", "`{first}` and `{second}` exclude each other: {why}",
                               {"first": first, "second": second, "why": why})


def not_one_of(value: object, what: str, choices: Iterable[str]) -> PydanticCustomError:
    """The error for a value outside `choices`; its message lists them (pydantic adds no prefix)."""
    return PydanticCustomError("not_one_of", f"{value!r} is not {what}; choose from {', '.join(choices)}")


# Fields with a fixed set of values: what a value is, and the values.
CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "precisions": ("a precision", (*PRECISIONS, *QUANTIZED)),
    "memory_formats": ("a memory format", MEMORY_FORMATS),
    "objective": ("an objective", get_args(Objective)),
    "executor": ("an executor", tuple(kind.value for kind in ExecutorName)),
}


class OptimizeConfig(Strict):
    """Everything a run needs, validated here for the CLI and the Python API alike."""

    # A field set on a built config is validated too: no way round the checks for API callers.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    model: ModelRef
    samples: Optional[Path] = None
    inputs: list[InputSpec] = Field(default_factory=list)
    seed: int = 0
    formats: Optional[list[FormatName]] = None  # None: every format of the framework for the device
    precisions: Optional[list[Precision]] = None  # None: fp32 on CPUs, all on GPUs
    memory_formats: Optional[list[MemoryFormat]] = None  # None: contiguous on CPUs, channels_last too on GPUs
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 64])
    tolerances: Tolerances = Field(default_factory=Tolerances)
    accuracy: Accuracy = Field(default_factory=Accuracy)  # quantized variants' budgets
    calibration: Optional[Path] = None  # npz for static quantization; None: the samples
    objective: Objective = "throughput"
    latency_budget_ms: Optional[PositiveFloat] = None
    workspace: Path
    images: str = "cpu"
    gpus: str = "none"
    # 1, not the host's cores as `nav-orch optimize --jobs` has it: a config is built where a zoo or
    # a pipeline starts and may run on another host (a Ray node, from the JSON it travels as), and
    # one build at a time gets every core (Pipeline.shared_cpus), which suits any host.
    jobs: PositiveInt = 1
    # Runner sessions on one GPU at a time: they compile and verify side by side and take turns
    # to time (orchestrator/run/turns.py); 1 gives each session a GPU of its own.
    gpu_sessions: PositiveInt = 6
    job_timeout_s: PositiveFloat = 900.0
    # Per runner container: auto (orchestrator/run/memory_limit.py), none, or Docker's syntax ("8g").
    memory: str = AUTO
    pids: PositiveInt = 4096
    profiling: ProfileSettings = Field(default_factory=ProfileSettings)
    # Build compiled formats in every precision (compiled_skip_reason), and time every profile point
    # in full, none cut short for a rival that beat it (`variant_profiling`).
    exhaustive: bool = False
    triton: TritonSettings = Field(default_factory=TritonSettings)
    executor: ExecutorName = ExecutorName.docker
    python: Optional[str] = None  # the local executor's Python; None: the host's own
    # The model's own libraries (transformers, timm, ...) as pip requirement lines: installed into a
    # runner image derived from the toolchain's (orchestrator/containers/derived_images.py), whose own
    # packages they can never replace. Normalized: each line as packaging writes it, sorted, once.
    requirements: list[str] = Field(default_factory=list)
    find_links: Optional[Path] = None  # a folder of wheels for the derived image's pip (air-gapped hosts)
    dynamic_axes: Optional[DeclaredAxes] = None  # None: axis 0 of every input and output is the batch

    def variant_profiling(self) -> ProfileSettings:
        """How the variants are timed: as `profiling` says, with no point cut short under --exhaustive."""
        return dataclasses.replace(self.profiling, prune_margin=None) if self.exhaustive else self.profiling

    @field_validator("precisions", "memory_formats", "objective", "executor", mode="before")
    @classmethod
    def known_choices(cls, value: Any, info: ValidationInfo) -> Any:
        # Before pydantic's own check, whose message would not name the wrong value.
        assert info.field_name is not None  # always set for a field's validator
        what, choices = CHOICES[info.field_name]
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item not in choices:
                raise not_one_of(item, what, choices)
        return value

    @field_validator("formats", mode="before")
    @classmethod
    def known_formats(cls, formats: Any, info: ValidationInfo) -> Any:
        # Before pydantic's own check, whose message would not name the framework's formats.
        model = info.data.get("model")  # absent when the model itself is invalid
        if not isinstance(formats, (list, tuple)) or model is None or model.form == "function":
            return formats
        known = [f.name for f in formats_of(model.framework)]
        for fmt in formats:
            if fmt not in known:
                raise not_one_of(fmt, f"a format of {model.framework}", known)
        return formats

    @field_validator("images")
    @classmethod
    def known_release(cls, images: str) -> str:
        if images == "auto":  # the command line's and inplace's: resolved on the host it runs on
            raise PydanticCustomError("release", "auto is resolved on the host a run starts on "
                                      "(orchestrator.containers.images.resolve_release); give cpu or an NGC "
                                      "release YY.MM, as in 25.10")
        if images != CPU_RELEASE and not NGC_RELEASE.fullmatch(images):
            raise PydanticCustomError("release", f"{images!r} is not an image release; use auto, cpu or an NGC "
                                      "release YY.MM, as in 25.10")
        return images

    @model_validator(mode="after")
    def tritonserver_only_local(self) -> OptimizeConfig:
        given = [name for name in ("tritonserver", "python") if getattr(self.triton, name) is not None]
        if given and self.executor is not ExecutorName.local:
            raise conflict(f"triton_{given[0]}", "executor", f"a tritonserver of this machine serves for the "
                           f"local executor, and {self.executor.value} brings its own")
        return self

    @model_validator(mode="after")
    def one_source_of_samples(self) -> OptimizeConfig:
        # Checked once every field is: the random inputs' batch sizes matter only with a batch axis.
        if self.samples is not None and self.inputs:
            raise conflict("samples", "inputs", "the samples file is used as it is, and random inputs would be "
                           "ignored; give one of them")
        sizes = {spec.name: spec.shape[0] for spec in self.inputs}
        if self.dynamic_axes is None and len(set(sizes.values())) > 1:
            given = ", ".join(f"{name}: {size}" for name, size in sizes.items())
            raise PydanticCustomError("batch_sizes_differ", "every one of `inputs` needs the same batch size "
                                      f"(axis 0); got {given}")
        return self

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

    @field_validator("memory", mode="before")
    @classmethod
    def memory_limit(cls, value: Any) -> Any:
        if value is None:  # as the API took "no limit" before auto existed
            return NONE
        try:
            return check_memory_setting(value) if isinstance(value, str) else value
        except ValueError as error:
            raise PydanticCustomError("memory", str(error)) from None

    @field_validator("requirements")
    @classmethod
    def normalized_requirements(cls, lines: list[str]) -> list[str]:
        return sorted({normalized_requirement(line) for line in lines})

    @field_validator("python")
    @classmethod
    def python_only_local(cls, python: Optional[str], info: ValidationInfo) -> Optional[str]:
        executor = info.data.get("executor")
        if python is not None and executor is not None and executor is not ExecutorName.local:
            raise PydanticCustomError("python_not_local", f"a Python is for executor local only, not "
                                      f"{executor.value} (containers bring their own)")
        return python


def normalized_requirement(line: str) -> str:
    """A requirement line as packaging writes it (`transformers==5.24.0`, `timm>=1.0`); a line that is
    not a requirement of a package by name (a pip option, a path, a URL) raises why."""
    try:
        requirement = Requirement(line.strip())
    except InvalidRequirement:
        raise PydanticCustomError("requirement", f"{line.strip()!r} is not a requirement line like "
                                  "transformers==5.24.0 (pip options, paths and URLs are not taken: pip's own "
                                  "configuration and --find-links are)") from None
    if requirement.url:
        raise PydanticCustomError("requirement", f"{line.strip()!r} names a URL; name the package and put its "
                                  "wheel in a --find-links folder")
    return str(requirement)


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (pip's format: a package per line, # comments),
    each checked; BadInput (one line, with the file and line) for one that is not a requirement."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise BadInput(f"--requirements {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"--requirements {path}: cannot be read ({error})") from None
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        try:
            lines.append(normalized_requirement(line))
        except PydanticCustomError as error:
            raise BadInput(f"--requirements {path}:{number}: {error.message()}") from None
    return lines
