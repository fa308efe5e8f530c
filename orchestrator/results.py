"""A run's results (results.json) as pydantic v2 models.

Results embed the protocol's dataclasses (verification, profile entries, GPUs) unchanged, so the
runners and results.json share one definition of each field.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from orchestrator.config import Objective, Strict
from orchestrator.run.paired import TieBreak
from runners.contract.formats import FORMATS
from runners.contract.protocol import (
    AxisRange,
    FormatName,
    GpuInfo,
    MemoryFormat,
    Precision,
    ProfileEntry,
    ProfileGap,
    Quantization,
    Verification,
)

# A variant is `pending` only while a run is under way.
VariantStatus = Literal["pending", "ok", "failed", "skipped"]


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


LOCAL_SERVER_PREFIX = "tritonserver "  # TritonResults.image of a local server: this, then its path


class SearchTrial(Strict):
    """One serving configuration the Triton search loaded and measured, at its best concurrency."""

    config: str  # its name: i{instances}-d{queue delay}-b{max batch}[-p{preferred sizes}]
    instances: int
    max_queue_delay_us: int
    max_batch_size: int
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    concurrency: Optional[int] = None
    throughput: float = 0.0
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    server_queue_ms: Optional[float] = None
    server_compute_ms: Optional[float] = None
    error: Optional[str] = None  # it did not load, or did not answer


class TritonSearch(Strict):
    """The search of the served best variant's configuration (orchestrator/triton/config_search.py)."""

    variant: str
    mode: str  # quick (a hill climb from the default) or full (every configuration)
    budget_s: float
    client_batch_size: Optional[int]  # each request's batch (1; None: an unbatched model)
    trials: list[SearchTrial] = Field(default_factory=list)  # in the order measured
    default: Optional[str] = None
    chosen: Optional[str] = None  # written into the model repository's config.pbtxt
    gain: Optional[float] = None  # the chosen's throughput over the default's
    pareto: list[str] = Field(default_factory=list)  # no other trial has both more throughput and a lower p99
    note: Optional[str] = None
    stopped: Optional[str] = None  # "budget": the time ran out first; "interrupted"


class TritonResults(Strict):
    image: str  # the server's image, or the local tritonserver ("tritonserver PATH")
    # What measured: perf_analyzer (its image beside the server's), or tritonclient's gRPC client in
    # nav-orch's process where there is no Docker (orchestrator/triton/grpc_load.py).
    client: str = "perf_analyzer"
    local_python: Optional[str] = None  # a local tritonserver's: the Python its models ran in
    model_repository: str  # relative to the workspace
    server_version: Optional[str] = None
    # Seconds from the server's start until every model was ready: a compiled variant compiles and warms
    # every batch size it is sent first.
    ready_s: Optional[float] = None
    runs: list[TritonRun] = Field(default_factory=list)
    search: Optional[TritonSearch] = None
    # What went wrong, one line per variant or for the stage; the optimize exit code ignores it.
    error: Optional[str] = None


class VariantResult(Strict):
    name: str
    format: FormatName
    precision: Precision
    memory_format: MemoryFormat = "contiguous"
    quantization: Quantization = ""  # int8/fp8: dynamic or static (runners/contract/formats.py Quantizer)
    status: VariantStatus
    error: Optional[str] = None
    artifact: Optional[str] = None  # relative to the workspace
    verification: Optional[Verification] = None
    profile: list[ProfileEntry] = Field(default_factory=list)
    gaps: list[ProfileGap] = Field(default_factory=list)  # batch sizes it could not run (out of memory)

    @property
    def runner(self) -> str:
        return FORMATS[self.format].runner


class ImageRecord(Strict):
    tag: str
    id: str
    labels: dict[str, str] = Field(default_factory=dict)
    # A derived image (--requirements): the runner image it is built on, and the requirements it adds.
    base: Optional[str] = None
    requirements: list[str] = Field(default_factory=list)
    # What the runners reported from inside containers of this image.
    versions: dict[str, str] = Field(default_factory=dict)


class Environment(Strict):
    nav_orch: str
    host_python: str
    docker: Optional[str] = None
    # Each runner container's memory limit as Docker took it ("11059m"); None: no limit (or no container).
    runner_memory: Optional[str] = None
    images: list[ImageRecord] = Field(default_factory=list)
    gpus: list[GpuInfo] = Field(default_factory=list)  # as the runners saw them


class PairedRatio(Strict):
    """The chosen variant against one rival, timed interleaved: the median over rounds of the rival's
    time over the chosen one's (above 1: the chosen is faster), and its interval."""

    variant: str
    ratio: float
    low: float
    high: float


class Selection(Strict):
    objective: Objective
    latency_budget_ms: Optional[float] = None
    batch_size: Optional[int] = None
    reason: str
    # Confident selection (orchestrator/run/paired.py), where the close candidates were timed
    # interleaved at `batch_size`; absent (0 rounds) where they were not.
    rounds: int = 0
    confidence: Optional[float] = None  # the intervals' coverage of the median ratio (0.95, or less with few rounds)
    margin: Optional[PairedRatio] = None  # the chosen over its closest rival
    compared: list[PairedRatio] = Field(default_factory=list)  # the chosen against each rival, closest first
    tie: bool = False  # the fastest could not be told from a rival: the cheaper artifact was chosen
    tie_broken_by: Optional[TieBreak] = None


class JobCounts(Strict):
    run: int = 0
    reused: int = 0  # finished earlier under the same content key


class JobTiming(Strict):
    """A job this run ran (a reused one did not), for the report's timeline: seconds from the run's
    start (its end as the host saw the result; its start that less the runner's own duration)."""

    job: str
    kind: str
    session: str  # the runner process that ran it
    placement: str  # "GPU 0", or "CPU"
    start_s: float
    end_s: float
    # The GPU the runner reported computing on, and whether it is the one placed (None where either
    # is unknown): the evidence that placement holds inside containers and subprocesses.
    gpu_uuid: Optional[str] = None
    on_placed_gpu: Optional[bool] = None


class RunResults(Strict):
    model: Optional[str] = None  # what was optimized: `mlp.py:make_mlp`, `model.onnx`
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
    timeline: list[JobTiming] = Field(default_factory=list)
    # The source model run as is (its framework, its precision, on the run's device), timed by the
    # reference job: what the best variant's gain is measured against.
    source_profile: list[ProfileEntry] = Field(default_factory=list)


# --- a profile's figure, and one run's gain over another: the report's verdict and optimize's summary ---

def figure(profile: list[ProfileEntry], objective: str, batch: Optional[int]) -> Optional[float]:
    """A profile's figure for the objective: throughput (higher wins) or p50 latency (lower wins)."""
    entries = [e for e in profile if batch is None or e.batch_size == batch]
    if not entries:
        return None
    if objective == "throughput":
        return max(e.throughput for e in entries)
    return min(e.latency_ms.p50 for e in entries)


def gain(ours: float, theirs: float, objective: str) -> float:
    """How many times better `ours` is: throughput higher, latency lower."""
    return ours / theirs if objective == "throughput" else theirs / ours


def confidence_text(selection: Selection) -> Optional[str]:
    """`1.04× onnx-fp32 (95 % interval 1.01–1.07, 12 paired rounds)`, or on a tie `tie with
    onnx-fp32 (0.98×, 95 % interval 0.95–1.02, 12 paired rounds): chose the smaller artifact`;
    None where the candidates were not timed interleaved."""
    margin = selection.margin
    if margin is None or selection.confidence is None:
        return None
    interval = (f"{selection.confidence * 100:.0f} % interval {margin.low:.2f}–{margin.high:.2f}, "
                f"{selection.rounds} paired rounds")
    if not selection.tie:
        return f"{margin.ratio:.2f}× {margin.variant} ({interval})"
    return (f"tie with {margin.variant} ({margin.ratio:.2f}×, {interval}): "
            f"chose {TIE_BROKEN[selection.tie_broken_by or 'order']}")


# How a tie was broken, in words.
TIE_BROKEN = {"servable": "the servable artifact", "smaller": "the smaller artifact",
              "faster to load": "the artifact faster to load",
              "order": "the fastest by median (the artifacts cost alike)"}


# --- inplace pipelines (orchestrator/inplace): WORKSPACE/pipeline.json and each module's capture ----

class CapturedModule(Strict):
    """How a pipeline's module left the user's process (WORKSPACE/modules/NAME/capture.json): the
    artifact, its inputs and outputs as the call's leaves in order, and how to rebuild the call's
    structure around them. Written by the user's process, never by a runner."""

    precision: Precision  # what it computes in (a copy of the module cast to it was captured)
    form: Literal["exported_program", "torchscript"]
    file: str  # inside the capture's folder
    cpu_file: Optional[str] = None  # a GPU capture's copy on the CPU (runners/serving/variant_loader.py place_program)
    inputs: list[str]  # leaf names (structure.py), in the artifact's order
    outputs: list[str]
    inputs_structure: dict[str, Any]  # structure.to_data
    outputs_structure: dict[str, Any]
    input_shapes: dict[str, list[Optional[int]]]  # None on a dynamic axis
    input_ranges: dict[str, list[AxisRange]]  # a dynamic axis's sizes, over the calls the capture reproduced
    output_ranges: dict[str, list[AxisRange]]
    output_dtypes: dict[str, str]
    calls_checked: int  # recorded calls the artifact reproduced
    note: Optional[str] = None  # recorded calls it did not reproduce, which run eager


class InProcessCandidate(Strict):
    """The module itself, as the user built it, compiled in the user's process: inplace.optimize's own
    candidate beside the runners' variants (orchestrator/inplace/candidate.py)."""

    name: str
    precision: Precision
    compile_mode: str  # torch.compile's mode ("default", "reduce-overhead", ...)
    memory_format: MemoryFormat = "contiguous"
    # The capture whose call signature it takes, relative to the pipeline's workspace; "" where the
    # module could not be captured and it is called with each call's own arguments.
    capture: str
    status: Literal["won", "lost", "rejected"]
    reason: Optional[str] = None  # why it was rejected
    recorded_diff: Optional[float] = None
    # Median seconds over the recorded calls, timed here, and the best runner variant's the same way;
    # vs_best_runner = best_runner_s / time_s (above 1: the module compiled here is faster).
    time_s: Optional[float] = None
    best_runner: Optional[str] = None
    best_runner_s: Optional[float] = None
    vs_best_runner: Optional[float] = None


class ModuleResult(Strict):
    """One module of a pipeline: captured and optimized, or eager with the reason."""

    status: Literal["optimized", "eager"]
    reason: Optional[str] = None  # why it stays eager
    best: Optional[str] = None  # the variant it runs: the best one that ran every recorded call in place
    precision: Optional[Precision] = None
    workspace: Optional[str] = None  # the best's optimize run, relative to the pipeline's workspace
    # One capture and optimize run per precision: each capture's form (exported_program or
    # torchscript) or why it failed, and each run's workspace.
    captures: dict[str, str] = Field(default_factory=dict)
    workspaces: dict[str, str] = Field(default_factory=dict)
    # Formats left out of its runner search, and why (orchestrator/inplace/narrowing.py).
    cuts: dict[str, str] = Field(default_factory=dict)
    candidates: list[str] = Field(default_factory=list)  # verified variants best first: load_optimized's fallbacks
    rejected: dict[str, str] = Field(default_factory=dict)  # better variants passed over, and why
    calls_seen: int = 0
    calls_kept: int = 0
    # The largest difference, relative to the outputs' largest magnitude, between the variant's
    # outputs and the module's own: over the recorded calls, and in place in the optimized run.
    recorded_diff: Optional[float] = None
    in_place_diff: Optional[float] = None
    in_process: Optional[InProcessCandidate] = None  # the module compiled here, and how it fared


class PipelineTiming(Strict):
    """The pipeline end to end over every sample, seconds: the median of `repeats` runs each, eager
    and optimized alternated in rounds once the modules are swapped in. `speedup_low`/`speedup_high`:
    the interval of the median of the rounds' speedups (PipelineResults.speedup)."""

    eager_s: float
    optimized_s: Optional[float] = None
    repeats: int
    speedup_low: Optional[float] = None
    speedup_high: Optional[float] = None


class PipelineResults(Strict):
    state: Literal["running", "complete", "interrupted", "failed"] = "running"
    error: Optional[str] = None
    nav_orch: str
    samples: int
    modules: dict[str, ModuleResult] = Field(default_factory=dict)
    timing: Optional[PipelineTiming] = None
    speedup: Optional[float] = None  # eager over optimized: the median of the alternated rounds' ratios
    # The pipeline's final outputs, optimized against eager. Floating-point outputs: the largest
    # absolute difference, and the same relative to the eager outputs' largest magnitude, which
    # `tolerance` bounds. Integer outputs (token ids): the fraction of elements that differ, which
    # `mismatch_tolerance` bounds.
    max_output_diff: Optional[float] = None
    relative_output_diff: Optional[float] = None
    mismatched: Optional[float] = None
    tolerance: Optional[float] = None
    mismatch_tolerance: Optional[float] = None
    passed: Optional[bool] = None
    optimize_s: Optional[float] = None  # the wall time of inplace.optimize
