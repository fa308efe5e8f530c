"""Measuring a served model with perf_analyzer, the way Triton Model Analyzer drives it:
`-i grpc -f out.csv --verbose-csv --measurement-mode count_windows`, one run per batch size and
concurrency (no -b for a model Triton does not batch), figures read from the CSV (never from
stdout), a hard timeout per run, and on an unstable measurement (see UNSTABLE) another run with
twice the window, a bounded number of times. Each run's command line, output and CSV stay in the
workspace.
"""
from __future__ import annotations

import csv
import io as text_io
import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from orchestrator.config import TritonSettings
from orchestrator.containers import engine
from orchestrator.errors import NavOrchError
from orchestrator.results import TritonLatency
from orchestrator.run import untrusted
from orchestrator.triton.repository import request_shape

# What perf_analyzer prints when its windows did not settle. Some versions say instead that no
# request finished in a window: "No valid requests recorded within time interval. Please use a
# larger time window." A longer window is the cure for both (Model Analyzer treats them alike).
UNSTABLE = ("Failed to obtain stable measurement", "a larger time window")
PERF_MOUNT = "/perf"
# perf_analyzer's CSV gives times in microseconds.
LATENCY_COLUMNS = {"p50": "p50 latency", "p90": "p90 latency", "p95": "p95 latency", "p99": "p99 latency"}
COMPUTE_COLUMNS = ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
REQUIRED_COLUMNS = ("Concurrency", "Inferences/Second", "Server Queue", *COMPUTE_COLUMNS, *LATENCY_COLUMNS.values())
# The last try's --stability-percentage: any three windows pass, so perf_analyzer writes its CSV.
ACCEPT_ANY = 1000
MAX_INPUT_ROWS = 4
MAX_INPUT_VALUES = 4_000_000  # keep --input-data files small: fewer rows for big inputs


# Runs a container to its end within a timeout: (its exit, None on timeout; its output).
RunContainer = Callable[[engine.ContainerSpec, float], tuple[Optional[engine.ExitState], str]]


class PerfFailed(NavOrchError):
    """perf_analyzer gave no measurement (one line says why)."""


@dataclass
class Measurement:
    concurrency: int
    throughput: float  # infer/sec: samples per second (requests x batch size)
    latency_ms: TritonLatency
    server_queue_ms: float
    server_compute_ms: float
    stable: bool = True


def parse_csv(text: str) -> list[Measurement]:
    """The rows of a perf_analyzer `-f` CSV (with or without --verbose-csv): its first table,
    which ends at the first blank line."""
    table: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if table:
                break
            continue
        table.append(line)
    if not table:
        raise PerfFailed("perf_analyzer wrote an empty CSV")
    reader = csv.DictReader(text_io.StringIO("\n".join(table)))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise PerfFailed(f"perf_analyzer's CSV lacks the columns {', '.join(missing)}")
    rows = []
    for row in reader:
        try:
            us = {column: float(row[column]) for column in REQUIRED_COLUMNS}
        except (TypeError, ValueError):
            raise PerfFailed(f"perf_analyzer's CSV has a row that is not numbers: {row}") from None
        rows.append(Measurement(
            concurrency=int(us["Concurrency"]),
            throughput=us["Inferences/Second"],
            latency_ms=TritonLatency(**{key: us[column] / 1000 for key, column in LATENCY_COLUMNS.items()}),
            server_queue_ms=us["Server Queue"] / 1000,
            server_compute_ms=sum(us[column] for column in COMPUTE_COLUMNS) / 1000,
        ))
    return sorted(rows, key=lambda m: m.concurrency)


def write_input_data(samples: dict[str, np.ndarray], names: list[str], batched: bool, path: Path) -> Path:
    """perf_analyzer's --input-data JSON from the real samples, so the model is measured on the
    data it was verified on (random bytes can break models that index with their inputs).
    Batched models get single rows (perf_analyzer stacks them into batches); others the whole
    array. `names` are the served input names, in the samples' order."""
    arrays = list(samples.values())
    if len(arrays) != len(names):
        raise PerfFailed(f"the samples hold {len(arrays)} inputs, the model takes {len(names)}")
    if batched:
        rows_per_sample = max(1, min(MAX_INPUT_ROWS, MAX_INPUT_VALUES // max(1, sum(a[0].size for a in arrays))))
        count = min(rows_per_sample, min(len(a) for a in arrays))
        steps = [{name: tensor_json(array[index]) for name, array in zip(names, arrays)} for index in range(count)]
    else:
        steps = [{name: tensor_json(array) for name, array in zip(names, arrays)}]
    path.write_text(json.dumps({"data": steps}))
    path.chmod(0o644)
    return path


def tensor_json(array: np.ndarray) -> dict:
    return {"content": array.reshape(-1).tolist(), "shape": request_shape(array.shape)}


def unstable(output: str) -> bool:
    """Whether perf_analyzer's output says a longer window could give a measurement."""
    return any(marker in output for marker in UNSTABLE)


def command(model: str, batch_size: Optional[int], concurrency: int, grpc_url: str, csv_path: str,
            request_count: int, input_data: Optional[str], stability_percentage: Optional[int] = None) -> list[str]:
    """perf_analyzer's argument list; `batch_size` None for a model Triton does not batch
    (max_batch_size 0), which takes no -b: its requests carry the full shapes."""
    # -v: the log then shows every window's figures, which says why a measurement was unstable.
    args = ["perf_analyzer", "-m", model, *(["-b", str(batch_size)] if batch_size is not None else []),
            "-u", grpc_url, "-i", "grpc", "-f", csv_path, "--verbose-csv",
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-mode", "count_windows", "--measurement-request-count", str(request_count), "-v"]
    if stability_percentage is not None:
        args += ["--stability-percentage", str(stability_percentage)]
    if input_data:
        args += ["--input-data", input_data]
    return args


def last_message(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "failed", "*** error"))]
    return (errors or lines or ["no output"])[-1][:300]


class PerfAnalyzer:
    """Runs perf_analyzer in containers of `image` (through `run_container`) on the host network
    (the server listens on 127.0.0.1 only); writes into `folder`."""

    def __init__(self, run_container: RunContainer, image: str, run_id: str, folder: Path, settings: TritonSettings):
        self.run_container = run_container
        self.image = image
        self.run_id = run_id
        self.folder = folder
        self.settings = settings
        folder.mkdir(parents=True, exist_ok=True)

    def measure(self, model: str, batch_size: Optional[int], concurrency: int, grpc_url: str,
                input_data: Optional[Path]) -> tuple[Measurement, Path]:
        """One point (`batch_size` None: an unbatched model); returns it and its CSV. Raises PerfFailed.

        Unstable: again with twice the window, `stability_retries` times; then once more where any
        three windows count as stable, so the figures are kept, marked `stable: false` (as the
        runners keep theirs): on a busy machine that beats having none."""
        request_count = self.settings.measurement_request_count
        attempts = self.settings.stability_retries + 2
        batch = f"-b{batch_size}" if batch_size is not None else ""
        for attempt in range(attempts):
            last = attempt == attempts - 1
            stem = f"{model}{batch}-c{concurrency}" + (f"-try{attempt + 1}" if attempt else "")
            csv_path = self.folder / f"{stem}.csv"
            csv_path.unlink(missing_ok=True)
            args = command(model, batch_size, concurrency, grpc_url, f"{PERF_MOUNT}/{csv_path.name}", request_count,
                           f"{PERF_MOUNT}/{input_data.name}" if input_data else None,
                           ACCEPT_ANY if last else None)
            # The command line is kept for people to rerun; it is never run through a shell.
            untrusted.write_text(
                self.folder / f"{stem}.cmd",
                f"# in {self.image}, --network host, this folder mounted at {PERF_MOUNT}, while the server runs "
                "(`nav-orch serve WORKSPACE --grpc-port PORT`)\n" + shlex.join(args) + "\n")
            state, output = self.run_container(self._spec(args), self.settings.perf_timeout_s)
            untrusted.write_text(self.folder / f"{stem}.log", output)
            if state is None:
                raise PerfFailed(f"perf_analyzer timed out after {self.settings.perf_timeout_s:.0f} s "
                                 f"(log: {self.folder.name}/{stem}.log)")
            if state.code == 0 and os.path.lexists(csv_path):
                # The container could write this folder: its CSV is read as untrusted data.
                text = untrusted.read_bytes(self.folder, csv_path, untrusted.RESULT_MAX_BYTES).decode(errors="replace")
                rows = [row for row in parse_csv(text) if row.concurrency == concurrency]
                if not rows:
                    raise PerfFailed(f"perf_analyzer's CSV has no row for concurrency {concurrency}")
                rows[0].stable = not last
                return rows[0], csv_path
            if not unstable(output) or last:
                raise PerfFailed(f"perf_analyzer: {last_message(output)} (log: {self.folder.name}/{stem}.log)")
            if attempt < attempts - 2:
                request_count *= 2
        raise AssertionError("unreachable")

    def _spec(self, args: list[str]) -> engine.ContainerSpec:
        return engine.ContainerSpec(
            image=self.image, command=args,
            mounts=[engine.Mount(source=self.folder, target=PERF_MOUNT, read_only=False)],
            labels={engine.RUN_LABEL: self.run_id, engine.ROLE_LABEL: "perf-analyzer"},
            network="host",
        )
