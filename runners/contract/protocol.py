"""The job/result protocol shared by the host and the runners.

Standard library only: this module is imported inside every runner image, whatever
framework it carries, and by the host, which validates results with pydantic.

A *job* is one typed step (reference, export, convert, verify, profile, compare) written as JSON; the
runner answers each job with a *result* JSON next to it. Several jobs may run in one
runner process, in order; a job whose `needs` did not all succeed is skipped.
All paths inside a job are as the runner sees them; artifact paths inside a result are
relative to the job's `output_dir`, so the host never has to map container paths back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, TypeVar, Union

# 2: typed job inputs (JobInputs), a model's `form`, results carry `fingerprint`.
# 3: per-tensor dynamic axes with their sizes (TensorSpec.ranges); IOSpec.batch_axis may be None (no batch axis).
# 4: Job.memory_format.
# 6: Job.variant, ProfileSettings.prune_margin, ProfileEntry.beaten_by, the host's rivals at a turn.
# 8: the compare job (Job.compared, JobResult.rounds, ProfileSettings.rounds and round_calls).
PROTOCOL_VERSION = 8
JOB_FILE = "job.json"
RESULT_FILE = "result.json"
LOG_FILE = "runner.log"
# Sessions that share a GPU take turns at the jobs that time work on it (TURN_KINDS: a profile, and
# a conversion, whose TensorRT builder times its tactics): started with TURNS_ENV set, the runner
# writes TURN_READY in the job's folder and waits for the host's TURN_GO there. A rerun script runs
# alone, without TURNS_ENV, and does not wait. Before TURN_GO the host writes TURN_RIVALS: the
# profiles of the variants verified so far (a JSON list of `Rival`), which a profile is measured against.
TURNS_ENV = "NAV_ORCH_TAKE_TURNS"
TURN_READY = "turn-ready"
TURN_GO = "turn-go"
TURN_RIVALS = "turn-rivals.json"
TURN_KINDS = ("profile", "convert", "compare")
# The timed jobs that take their turn once their variants are loaded, not before they start.
TURN_AFTER_LOADING = ("profile", "compare")
# A warm runner (runners/harness/serve.py) serves CPU sessions of one image one after another from its
# queue folder: the host writes session N's SESSION_REQUEST (a `WarmSession`), the runner forks a
# child for it that logs into SESSION_LOG, and writes SESSION_EXIT (a `SessionExit`) once the child
# is gone. The host stops it by ending its process (its container).
SESSION_REQUEST = "{}.session.json"
SESSION_LOG = "{}.log"
SESSION_EXIT = "{}.exit.json"
# What the reference job writes: the samples keyed by the model's input names, and its outputs.
NORMALIZED_SAMPLES = "samples.npz"
REFERENCE_OUTPUTS = "reference.npz"

# compare: the close candidates timed again interleaved, A B C A B C, in one process (confident
# selection): those of the runners that load a candidate for it (`timed_candidate`), which all run in
# the model's image. The TensorFlow, JAX and TensorRT runners have none yet.
COMPARING_RUNNERS = ("torch", "onnx")
JobKind = Literal["reference", "export", "convert", "verify", "profile", "compare"]
Status = Literal["ok", "failed", "skipped"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "fp8"]
# Quantized precisions: verified against an accuracy budget, not a tolerance, and searched only
# where asked for (--precisions): they change the numbers a model gives.
QUANTIZED: tuple[Precision, ...] = ("int8", "fp8")
# How a quantized variant finds its scales: from each call's activations (dynamic), or calibrated
# ahead of time on samples (static); "" for a variant that is not quantized.
Quantization = Literal["", "dynamic", "static"]
# The layout of the model's weights and 4-D inputs where the runner chooses it (torch variants).
MemoryFormat = Literal["contiguous", "channels_last"]
# Why a channels_last variant is skipped: said by the host where the reference reported the model's
# layouts (JobResult.memory_formats), else by the runner at its export.
NO_CHANNELS_LAST = "channels_last changes nothing here: the model has no 4-D convolution weights"
# The frameworks a source model comes from: each has a runner image (orchestrator/containers/images.py).
Framework = Literal["torch", "tensorflow", "jax", "onnx"]
# The formats of the registry (runners/contract/formats.py), each an entry there.
FormatName = Literal["torchscript-trace", "torchscript-script", "savedmodel", "onnx", "exported-program", "torch-aoti",
                     "torch-compile", "torch-compile-cudagraphs", "torch-tensorrt", "tensorrt", "tf-trt", "python"]
# How the user handed the model over, which says how a runner loads it.
ModelForm = Literal["factory", "torchscript", "exported_program", "savedmodel", "keras", "onnx", "function"]

# Tolerance defaults per precision as (atol as a fraction of the output's largest
# magnitude, rtol): fp32 allows export round-off, half precisions their mantissa's worth
# of error accumulated through a deep network.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-3),
    "fp16": (1e-2, 1e-2),
    "bf16": (5e-2, 5e-2),
    # Quantized variants are judged by their accuracy budget; these only say how far off they are.
    "int8": (1e-1, 1e-1),
    "fp8": (1e-1, 1e-1),
}


@dataclass
class ModelSource:
    """What the user handed over, as the runner should load it."""

    form: ModelForm
    file: str  # file name inside the job's "model" input folder
    factory: Optional[str] = None
    args: dict[str, Any] = field(default_factory=dict)
    # The precision the source computes in. A traced graph (an ExportedProgram) is fixed to the one
    # it was exported in, so its variants are of that precision alone (an inplace module is
    # captured once per precision, where the module's own code adapts its dtypes).
    precision: Precision = "fp32"
    # An ExportedProgram saved on a GPU: the same program saved on the CPU, in the same folder, which
    # the jobs without a GPU load (runners/serving/variant_loader.py place_program says why both exist).
    cpu_file: Optional[str] = None


@dataclass
class AxisRange:
    """A dynamic axis of a tensor and the sizes seen on it."""

    axis: int
    min: int
    typical: int  # the most common size: TensorRT's opt, and where a variant is profiled
    max: int


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list[Optional[int]]  # None marks a dynamic axis
    # The dynamic axes with the sizes they take; empty: the batch axis is the one dynamic axis.
    ranges: list[AxisRange] = field(default_factory=list)


@dataclass
class IOSpec:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # None: the model has no batch axis (its samples are used at their shapes, never repeated);
    # its dynamic axes are its specs' `ranges`.
    batch_axis: Optional[int] = 0


@dataclass
class Tolerance:
    atol: float
    rtol: float


@dataclass
class AccuracyBudget:
    """What a quantized output must keep of the reference, which fp32 tolerances it cannot meet:
    the cosine similarity of the whole output, the share of rows whose top-1 class agrees (for
    outputs that look like class scores: 2-D, 2 or more classes; None: not checked), and an optional
    largest absolute error."""

    min_cosine: float = 0.99
    min_top1: Optional[float] = 0.9
    max_abs: Optional[float] = None


@dataclass
class ProfileSettings:
    """How a variant is timed; see `runners/harness/measure.py` for the stability criterion."""

    warmup_calls: int = 10
    # 50 ms, not 100: this single pass only has to rank; close candidates are timed again
    # interleaved (`rounds`). On the bundled MLP (CPU) the whole run took 0.805x the time (range
    # 0.748-0.920, 6 alternated pairs, benchmarks/profiling_ab.py) and chose the same variant in all 12.
    window_ms: float = 50.0
    min_window_calls: int = 10
    stable_windows: int = 3
    max_windows: int = 10
    stability: float = 0.10
    # Seconds one batch size's timing may take, warm-up included. A variant whose calls take seconds
    # (a broken quantized path) cannot win: past this, its timing stops and is marked unstable.
    max_point_s: float = 20.0
    # A point that cannot win is cut short after its first window: once a rival (a verified variant
    # profiled earlier) has at least (1 + prune_margin) times its throughput at that batch size, and a
    # p99 no higher than its p50, the selection can never choose it. None times every point in full
    # (--exhaustive).
    prune_margin: Optional[float] = 0.2
    # Confident selection (orchestrator/run/paired.py): the candidates within `close_margin` of the
    # best at the deciding batch size are timed again in `rounds` rounds, in each of which every
    # candidate runs `round_calls` timed calls in turn. Short rounds, so that a drift of the device
    # (clocks, heat) hits the candidates of one round alike; 20 rounds give a 95 % interval of the
    # median ratio between the 6th and 15th of them. 0 rounds: the single profile pass decides.
    rounds: int = 20
    round_calls: int = 10
    close_margin: float = 0.10


@dataclass
class JobInputs:
    """A job's read-only inputs, as paths the runner sees ("" where the job takes none)."""

    model: str = ""  # the folder holding the source model (its file: Job.model.file)
    samples: str = ""  # npz, one array per model input
    reference: str = ""  # npz of the source model's outputs
    artifact: str = ""  # the variant's artifact (file or folder)
    export: str = ""  # a two-step format's intermediate, which a conversion job converts
    calibration: str = ""  # npz keyed like the samples, for static quantization (else the samples)

    def paths(self) -> dict[str, str]:
        """The inputs given, by field name."""
        return {name: path for name, path in dataclasses.asdict(self).items() if path}


@dataclass
class Job:
    id: str
    kind: JobKind
    runner: str  # module under runners/ that runs it: "torch", "onnx", ...
    output_dir: str  # the one folder the job may write artifacts into
    variant: str = ""  # the variant's name; "" for the reference
    inputs: JobInputs = field(default_factory=JobInputs)
    needs: list[str] = field(default_factory=list)
    model: Optional[ModelSource] = None
    format: Optional[FormatName] = None
    precision: Precision = "fp32"
    memory_format: MemoryFormat = "contiguous"
    quantization: Quantization = ""  # a quantized (int8, fp8) variant's method
    # The reference's inputs and outputs. On a reference job, where given: the host's declaration,
    # by position, of each tensor's dynamic axes (`ranges`) and of `batch_axis`; its names, dtypes
    # and shapes are placeholders (runners/harness/common.py `declared_io`).
    io: Optional[IOSpec] = None
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    # A quantized variant's verification: each output's budget, which it is judged by instead.
    budgets: dict[str, AccuracyBudget] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    profiling: ProfileSettings = field(default_factory=ProfileSettings)
    # A compare job: the candidates' profile jobs, each timed at the compare job's one batch size.
    compared: list[Job] = field(default_factory=list)
    device: str = "cpu"
    protocol: int = PROTOCOL_VERSION

    # The optional fields that a job kind needs, read through these: a job without it does not fit
    # the protocol, and says so instead of failing on None further on.
    def source(self) -> ModelSource:
        """The source model (`model`), for the jobs that load it."""
        return _given(self.model, self, "source model")

    def format_name(self) -> FormatName:
        """The variant's format (`format`), for the jobs of a variant."""
        return _given(self.format, self, "format")

    def io_spec(self) -> IOSpec:
        """The reference's inputs and outputs (`io`), for the exports that declare them."""
        return _given(self.io, self, "io (the reference's inputs and outputs)")


T = TypeVar("T")


def _given(value: Optional[T], job: Job, what: str) -> T:
    if value is None:
        raise ProtocolError(f"{job.kind} job {job.id} has no {what}")
    return value


@dataclass
class OutputError:
    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool
    # A quantized variant's figures and the budget they were judged by (then atol/rtol only inform).
    cosine: Optional[float] = None
    top1: Optional[float] = None  # the share of rows whose argmax agrees; None: no class axis
    budget: Optional[AccuracyBudget] = None


@dataclass
class Verification:
    passed: bool
    outputs: dict[str, OutputError]
    batch_sizes: list[int] = field(default_factory=list)  # the batch sizes it ran at; empty: the samples as they are


@dataclass
class LatencyStats:
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float


@dataclass
class ProfileEntry:
    batch_size: int
    latency_ms: LatencyStats
    throughput: float  # samples per second, one stream
    windows: int
    stable: bool
    # The rival that beat this point by the margin after its first window (ProfileSettings.prune_margin):
    # its timing stopped there, and its figures are that window's.
    beaten_by: Optional[str] = None


@dataclass
class ProfileGap:
    """A batch size a variant could not be verified or timed at, and why (out of memory): the variant
    stays eligible at the batch sizes it ran."""

    batch_size: int
    reason: str


@dataclass
class Rival:
    """A verified variant's profile, which a later profile is measured against."""

    variant: str
    profile: list[ProfileEntry]


@dataclass
class WarmSession:
    """A session handed to a warm runner: its job files in order (as the runner sees them), and the
    environment its process gets beyond the runner's own."""

    jobs: list[str]
    environment: dict[str, str] = field(default_factory=dict)


@dataclass
class SessionExit:
    """How a warm runner's session process ended: its exit code (negative: the signal that killed
    it), and whether the container's memory limit killed something while it ran."""

    code: int
    oom_killed: bool = False


@dataclass
class GpuInfo:
    """The GPU a runner saw, as nvidia-smi reports it (clocks in MHz when it is read)."""

    name: str
    uuid: str
    driver: str
    compute_capability: str
    sm_clock_mhz: Optional[int] = None
    memory_clock_mhz: Optional[int] = None
    max_sm_clock_mhz: Optional[int] = None


@dataclass
class JobResult:
    job_id: str
    kind: JobKind
    status: Status
    error: Optional[str] = None
    versions: dict[str, str] = field(default_factory=dict)
    io: Optional[IOSpec] = None  # reference jobs
    artifact: Optional[str] = None  # export jobs; relative to output_dir
    verification: Optional[Verification] = None  # verify jobs
    profile: list[ProfileEntry] = field(default_factory=list)  # profile jobs
    rounds: dict[str, list[float]] = field(default_factory=dict)  # compare jobs: each variant's median ms per round
    gaps: list[ProfileGap] = field(default_factory=list)  # verify and profile jobs: batch sizes left out
    gpu: Optional[GpuInfo] = None  # jobs that ran on a GPU
    # Reference jobs: what the source model is (runners/harness/common.py `fingerprint`); every other
    # job's cache key hangs on it.
    fingerprint: Optional[str] = None
    # Reference jobs: the memory formats that change the model (channels_last only where it has 4-D
    # convolution weights), so the host skips the others before any export; None: the runner does not say.
    memory_formats: Optional[list[MemoryFormat]] = None
    duration_s: float = 0.0
    protocol: int = PROTOCOL_VERSION


@dataclass
class ServedTensor:
    """An input or output as a server declares it (Triton's config, PyTriton's Tensor)."""

    name: str
    dtype: str  # numpy's name
    dims: list[int]  # -1 where dynamic; without the batch axis when batched; never empty ([1] for a scalar)
    reshape: Optional[list[int]] = None  # the shape the model sees per sample, where it differs from dims


@dataclass
class ServedModel:
    """A model as PyTriton serves it (runners/serving/pytriton_server.py), on the given address."""

    name: str
    inputs: list[ServedTensor]
    outputs: list[ServedTensor]
    max_batch_size: int  # 0: unbatched, tensors at their full shapes
    host: str
    http_port: int
    grpc_port: int


@dataclass
class ServeSpec:
    """What `python -m runners.serving.pytriton_server` serves: one variant, loaded as the Triton
    Python-backend model loads it (runners/serving/variant_loader.py arrays_in)."""

    model: ServedModel
    loader: str  # the format's loader (runners/serving/variant_loader.py arrays_in)
    artifact: str  # the artifact's path where the server runs
    precision: str
    device: str
    warmup: list[int] = field(default_factory=list)  # batch sizes called once before ready (compiled variants)


# What a compiled variant's folder (its artifact, runners/contract/formats.py) holds: the program a server
# compiles, and its options. A quantized variant, or a model torch.export cannot capture, has no program:
# it compiles its source where it runs, which no server can.
COMPILED_PROGRAM = "program.pt2"
COMPILED_OPTIONS = "options.json"
# What the PyTriton server (runners/serving/pytriton_server.py) prints once its model answers.
SERVER_READY = "nav-orch pytriton: ready"


class ProtocolError(ValueError):
    """A job or result document does not fit the protocol."""


def one_line(error: BaseException) -> str:
    """An error as a result's `error` tells it, and the host's messages too: its type and first line."""
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    message = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return message if len(message) <= 400 else message[:397] + "..."


def to_json(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj), indent=2, sort_keys=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a document (results.json, a
    report), and a full disk leaves the last whole one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
    except OSError:  # a full disk: the document stays as it was, whole, and no half copy is left beside it
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def from_dict(cls: Any, data: Any) -> Any:
    """Build a dataclass (recursively) from parsed JSON, checking the keys it knows."""
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise ProtocolError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ProtocolError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
        return cls(**{k: from_dict(hints[k], v) for k, v in data.items()})
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return from_dict(inner[0], data) if len(inner) == 1 else data
    if origin is list:
        return [from_dict(args[0], item) for item in data]
    if origin is dict:
        return {k: from_dict(args[1], v) for k, v in data.items()}
    return data


def read_job(path: Path) -> Job:
    job = from_dict(Job, json.loads(Path(path).read_text()))
    if job.protocol != PROTOCOL_VERSION:
        raise ProtocolError(f"job protocol {job.protocol}, runner speaks {PROTOCOL_VERSION}")
    return job
