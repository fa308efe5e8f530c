"""A run's results (results.json) as pydantic v2 models.

Results embed the protocol's dataclasses (verification, profile entries, GPUs) unchanged, so the
runners and results.json share one definition of each field.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, TypeAdapter

from orchestrator.config import Objective, Strict
from runners.formats import FORMATS
from runners.protocol import GpuInfo, JobResult, Precision, ProfileEntry, Verification

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


class TritonResults(Strict):
    image: str
    model_repository: str  # relative to the workspace
    server_version: Optional[str] = None
    runs: list[TritonRun] = Field(default_factory=list)
    # What went wrong, one line per variant or for the stage; the optimize exit code ignores it.
    error: Optional[str] = None


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
        return FORMATS[self.format].runner


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


JOB_RESULT: TypeAdapter[JobResult] = TypeAdapter(JobResult)
