"""Serve a model through PyTriton until SIGTERM, SIGINT or SIGHUP.

    python -m runners.serving.pytriton_server SPEC_JSON     (`nav-orch serve --server pytriton`)

SPEC_JSON is a protocol.ServeSpec: one variant, loaded through variant_loader.arrays_in, so PyTriton
and Triton's Python backend run it alike. It runs where nvidia-pytriton and the variant's framework
are: the CPU Triton image's /opt/python-backend (numpy 1, which PyTriton's server needs). `serve`
is also what orchestrator.inplace.serve runs in the user's own process, for a Python function.
Prints SERVER_READY (runners/contract/protocol.py) once the model answers.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import numpy as np

from runners.contract.protocol import SERVER_READY, ServedModel, ServedTensor, ServeSpec, from_dict
from runners.harness.common import gpu_info
from runners.serving.triton_python_model import split_rows
from runners.serving.variant_loader import ArraysIn, arrays_in, warm_up

GPU_LINE = "nav-orch pytriton: serving on GPU"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def shaped(array: np.ndarray, tensor: ServedTensor, batched: bool) -> np.ndarray:
    """An input as the model takes it: Triton's [1] per sample becomes the model's own shape."""
    if tensor.reshape is None:
        return array
    return array.reshape([array.shape[0], *tensor.reshape] if batched else tensor.reshape)


def declared(array: np.ndarray, dims: list[int], batched: bool) -> np.ndarray:
    """An output in the dims declared: one value per sample, or a scalar, travels as [1]."""
    if batched:
        return array.reshape(-1, 1) if array.ndim == 1 and dims == [1] else array
    return array.reshape(1) if array.ndim == 0 else array


def answer(run: ArraysIn, model: ServedModel) -> Callable[[Sequence[Any]], list[dict[str, np.ndarray]]]:
    """PyTriton's inference callable: requests that arrive together run as one batch where their
    shapes allow (as Triton's dynamic batcher hands them to the Python backend), else one by one."""
    batched = model.max_batch_size > 0
    outputs = [(tensor.name, np.dtype(tensor.dtype), tensor.dims) for tensor in model.outputs]

    def respond(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        if len(arrays) != len(outputs):
            raise ValueError(f"the model returned {len(arrays)} outputs, {model.name} declares {len(outputs)}")
        return {name: np.ascontiguousarray(declared(np.asarray(array).astype(dtype, copy=False), dims, batched))
                for (name, dtype, dims), array in zip(outputs, arrays)}

    def infer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        inputs = [[shaped(request[t.name], t, batched) for t in model.inputs] for request in requests]
        if batched and len(inputs) > 1 and all(a.shape[1:] == b.shape[1:] for arrays in inputs
                                               for a, b in zip(arrays, inputs[0])):
            sizes = [arrays[0].shape[0] for arrays in inputs]
            stacked = run([np.concatenate(column) for column in zip(*inputs)])
            return [respond(rows) for rows in split_rows(stacked, sizes)]
        return [respond(run(arrays)) for arrays in inputs]

    return infer


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event the stop signals set while the block runs (in the main thread; elsewhere the
    caller sets it), with the previous handlers back afterwards."""
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def this_python_for_the_stub() -> Iterator[None]:
    """PyTriton's server runs its Python-backend stub, which links libpython of the system, with
    this Python's standard library. A Python built with a shared libpython of its own (pyenv's)
    differs from the system's: its folder goes first on the server's library path."""
    libdir: Optional[str] = sysconfig.get_config_var("LIBDIR") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None
    before = os.environ.get("LD_LIBRARY_PATH")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *([before] if before else [])])
    try:
        yield
    finally:
        if libdir:
            if before is None:
                os.environ.pop("LD_LIBRARY_PATH", None)
            else:
                os.environ["LD_LIBRARY_PATH"] = before


def serve(run: ArraysIn, model: ServedModel, stop: threading.Event, ready: Callable[[], None]) -> None:
    """Serve `run` (input arrays in, output arrays out) as `model` until `stop` is set."""
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

    config = TritonConfig(http_address=model.host, http_port=model.http_port, grpc_address=model.host,
                          grpc_port=model.grpc_port, allow_metrics=False, exit_on_error=True,
                          strict_readiness=True)

    def tensors(specs: list[ServedTensor]) -> list[Tensor]:
        return [Tensor(name=t.name, dtype=np.dtype(t.dtype).type, shape=tuple(t.dims)) for t in specs]

    # PyTriton guards its control endpoints with a token; statistics stay open, as Triton's own
    # server leaves them: perf_analyzer reads its server-side figures there.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    with this_python_for_the_stub(), Triton(config=config, security_config=security) as triton:
        triton.bind(model_name=model.name, infer_func=answer(run, model), inputs=tensors(model.inputs),
                    outputs=tensors(model.outputs), strict=True,
                    config=ModelConfig(max_batch_size=model.max_batch_size, batching=model.max_batch_size > 0))
        triton.run()  # returns once the model is ready
        ready()
        stop.wait()


def serving_gpu(device: str) -> Optional[str]:
    """The GPU this server computes on, as a line for its log (None on the CPU): torch's own word
    where a torch runtime loaded, else the first GPU the process sees."""
    if not device.startswith("cuda"):
        return None
    used = None
    if "torch" in sys.modules:
        from runners.toolchains.torch_runner import gpu_uuid

        used = gpu_uuid()
    info = gpu_info(used=used)
    return f"{GPU_LINE} {info.uuid} ({info.name})" if info else f"{GPU_LINE} unknown (nvidia-smi gave nothing)"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = from_dict(ServeSpec, json.loads(argv[0]))
    run = arrays_in(spec.loader, spec.artifact, spec.device, spec.precision, [t.name for t in spec.model.inputs])
    if spec.warmup and spec.model.max_batch_size > 0:
        started = time.monotonic()
        warmed = warm_up(run, [(t.dims, np.dtype(t.dtype)) for t in spec.model.inputs], spec.warmup)
        print(f"nav-orch pytriton: warmed at batch sizes {warmed or 'none (dynamic axes)'} in "
              f"{time.monotonic() - started:.1f} s", flush=True)
    gpu = serving_gpu(spec.device)
    if gpu:
        print(gpu, flush=True)
    with stop_on_signals() as stop:
        serve(run, spec.model, stop, lambda: print(SERVER_READY, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
