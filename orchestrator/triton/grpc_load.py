"""Measuring a served model without perf_analyzer (a host without Docker has neither its image nor
its binary): `concurrency` threads of tritonclient's gRPC client, each sending the samples'
request in a loop, counted in windows of requests as perf_analyzer's count_windows mode counts
them. A point is stable when three windows in a row agree within 10 %; after MAX_WINDOWS windows
the figures are kept as unstable. Server queue and compute times come from the server's own
statistics.
The point is written as a CSV with perf_analyzer's columns, so it reads back like one of its runs.
"""
from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from orchestrator.config import TritonSettings
from orchestrator.triton.perf_analyzer import COMPUTE_COLUMNS, LATENCY_COLUMNS, Measurement, PerfFailed, parse_csv
from orchestrator.triton.server import CHANNEL_ARGS

GRPC_CLIENT = "tritonclient-grpc"  # results.json's triton.client for these figures
STABLE_WINDOWS = 3
STABILITY = 0.10  # perf_analyzer's default --stability-percentage
MAX_WINDOWS = 10


def stable_tail(throughputs: list[float]) -> bool:
    """The last STABLE_WINDOWS windows agree within STABILITY of their mean (perf_analyzer's test)."""
    tail = throughputs[-STABLE_WINDOWS:]
    if len(tail) < STABLE_WINDOWS:
        return False
    mean = sum(tail) / len(tail)
    return mean > 0 and (max(tail) - min(tail)) / mean <= STABILITY


def percentile_ms(latencies_s: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies_s), q)) * 1000


def requests_from(input_data: Path, batch_size: Optional[int], datatypes: dict[str, str]) -> dict[str, np.ndarray]:
    """The request's arrays from perf_analyzer's --input-data JSON (stage.write_input_data): its rows
    stacked and repeated to `batch_size` (None: the whole sample, unbatched), in the served dtypes."""
    steps = json.loads(input_data.read_text())["data"]
    arrays = {}
    for name, datatype in datatypes.items():
        dtype = triton_to_np_dtype(datatype)
        rows = [np.asarray(step[name]["content"], dtype=dtype).reshape(step[name]["shape"]) for step in steps]
        if batch_size is None:
            arrays[name] = rows[0]
        else:
            arrays[name] = np.stack([rows[i % len(rows)] for i in range(batch_size)])
    return arrays


class GrpcLoad:
    """Perf for the stage (stage.Perf): measures over gRPC from this process; writes into `folder`."""

    def __init__(self, folder: Path, settings: TritonSettings, clock: Callable[[], float] = time.perf_counter):
        self.folder = folder
        self.settings = settings
        self.clock = clock
        folder.mkdir(parents=True, exist_ok=True)

    def measure(self, model: str, batch_size: Optional[int], concurrency: int, grpc_url: str,
                input_data: Optional[Path]) -> tuple[Measurement, Path]:
        if input_data is None:
            raise PerfFailed("the gRPC load needs the samples' input data")
        client = triton_grpc.InferenceServerClient(grpc_url, channel_args=list(CHANNEL_ARGS))
        try:
            metadata = client.get_model_metadata(model)
            arrays = requests_from(input_data, batch_size, {i.name: i.datatype for i in metadata.inputs})
            # The server's figures from the end of the warm-up: its first requests grow the stub's
            # shared memory, and would weigh on averages of a few windows.
            windows, latencies, counted, before = self._run(grpc_url, model, arrays, concurrency,
                                                            lambda: self._statistics(client, model))
            after = self._statistics(client, model)
        except InferenceServerException as error:
            raise PerfFailed(f"gRPC: {error.message() or error}") from None
        finally:
            client.close()
        rows = batch_size or 1
        requests = max(1, after["count"] - before["count"])
        server_us = {key: (after[key] - before[key]) / requests / 1000 for key in after if key != "count"}
        row = {"Concurrency": concurrency, "Inferences/Second": sum(windows[-STABLE_WINDOWS:]) * rows
               / min(len(windows), STABLE_WINDOWS), "Server Queue": server_us["queue"],
               **{column: server_us[column] for column in COMPUTE_COLUMNS},
               **{column: percentile_ms(latencies, float(key[1:])) * 1000 for key, column in LATENCY_COLUMNS.items()},
               "Requests": counted}
        stem = f"{model}" + (f"-b{batch_size}" if batch_size is not None else "") + f"-c{concurrency}"
        csv_path = self.folder / f"{stem}.csv"
        with csv_path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
        point = parse_csv(csv_path.read_text())[0]
        point.stable = stable_tail(windows)
        return point, csv_path

    @staticmethod
    def _statistics(client: triton_grpc.InferenceServerClient, model: str) -> dict[str, int]:
        stats = client.get_inference_statistics(model).model_stats[0].inference_stats
        return {"count": stats.success.count, "queue": stats.queue.ns,
                "Server Compute Input": stats.compute_input.ns, "Server Compute Infer": stats.compute_infer.ns,
                "Server Compute Output": stats.compute_output.ns}

    def _run(self, grpc_url: str, model: str, arrays: dict[str, np.ndarray], concurrency: int,
             statistics: Callable[[], dict[str, int]]) -> tuple[list[float], list[float], int, dict[str, int]]:
        """Windows of `measurement_request_count` requests after a warm-up: (requests per second of each
        window, the latencies of the last STABLE_WINDOWS windows, requests counted, `statistics()` as
        the warm-up ended)."""
        window = self.settings.measurement_request_count
        done: list[tuple[float, float]] = []  # (end, latency) of each request, in completion order
        lock = threading.Lock()
        stop = threading.Event()
        failures: list[str] = []

        def send() -> None:
            client = triton_grpc.InferenceServerClient(grpc_url, channel_args=list(CHANNEL_ARGS))
            inputs = []
            for name, array in arrays.items():
                tensor = triton_grpc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            try:
                while not stop.is_set():
                    start = self.clock()
                    client.infer(model, inputs, client_timeout=self.settings.perf_timeout_s)
                    end = self.clock()
                    with lock:
                        done.append((end, end - start))
            except InferenceServerException as error:
                failures.append(error.message() or str(error))
                stop.set()
            finally:
                client.close()

        threads = [threading.Thread(target=send, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        warmup = 2 * concurrency
        deadline = time.monotonic() + self.settings.perf_timeout_s
        windows: list[float] = []
        before: dict[str, int] = {}
        try:
            self._wait_for(done, warmup, stop, deadline, window)
            before = statistics()
            while not stop.is_set() and len(windows) < MAX_WINDOWS and not stable_tail(windows):
                target = warmup + (len(windows) + 1) * window
                self._wait_for(done, target, stop, deadline, window)
                if stop.is_set():
                    break
                first, last = done[target - window - 1][0], done[target - 1][0]
                windows.append(window / max(last - first, 1e-9))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=self.settings.perf_timeout_s)
        if failures:
            raise PerfFailed(f"gRPC: {failures[0]}")
        counted = min(len(windows), STABLE_WINDOWS) * window
        end = warmup + len(windows) * window
        return windows, [latency for _, latency in done[end - counted:end]], counted, before

    def _wait_for(self, done: list, count: int, stop: threading.Event, deadline: float, window: int) -> None:
        """Until `count` requests are done, the senders stopped, or the deadline passed (PerfFailed)."""
        while len(done) < count and not stop.is_set():
            if time.monotonic() > deadline:
                raise PerfFailed(f"{len(done)} requests in {self.settings.perf_timeout_s:.0f} s; a window "
                                 f"needs {window}")
            time.sleep(0.005)
