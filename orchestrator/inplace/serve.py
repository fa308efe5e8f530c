"""`inplace.serve`: a Python function (one that calls an optimized pipeline) served through
PyTriton in the user's own process, until Ctrl-C, SIGTERM or SIGHUP.

The function takes the inputs as numpy arrays, by name, and returns a dict of output arrays. With
`max_batch_size` > 0 every tensor has a batch axis in front (not in `shape`), and requests that
arrive together come as one batch; with 0 each request comes alone, at its full shape. This is the
loop `nav-orch serve --server pytriton` runs in its container (runners/serving/pytriton_server.py).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.errors import BadInput, EnvironmentProblem
from orchestrator.triton.server import HOST, LOOPBACK, check_listen, free_port, reachable
from runners.contract.protocol import ServedModel, ServedTensor
from runners.serving.pytriton_server import serve as serve_model
from runners.serving.pytriton_server import stop_on_signals


@dataclass(frozen=True)
class Tensor:
    """An input or output: its name, numpy dtype and shape per request (-1 where it varies)."""

    name: str
    dtype: Any
    shape: tuple[int, ...]


def served(tensor: Tensor) -> ServedTensor:
    try:
        dtype = np.dtype(tensor.dtype)
    except TypeError:
        raise BadInput(f"inplace.serve: {tensor.name}: {tensor.dtype!r} is not a numpy dtype") from None
    shape = list(tensor.shape)
    if any(not isinstance(size, int) or size == 0 or size < -1 for size in shape):
        raise BadInput(f"inplace.serve: {tensor.name}: shape {tensor.shape} must hold sizes or -1")
    # Triton's dims are never empty: a scalar travels as [1].
    return ServedTensor(name=tensor.name, dtype=dtype.name, dims=shape or [1], reshape=None if shape else [])


def serve(fn: Callable[..., dict[str, Any]], inputs: Sequence[Tensor], outputs: Sequence[Tensor], name: str,
          max_batch_size: int = 0, host: str = HOST, http_port: int = 0, grpc_port: int = 0,
          echo: Callable[[str], None] = print) -> None:
    """Serve `fn` as model `name` until stopped; prints the endpoints first."""
    check_pytriton()
    if max_batch_size < 0:
        raise BadInput(f"inplace.serve: max_batch_size must be 0 (no batching) or more, not {max_batch_size}")
    if not inputs or not outputs:
        raise BadInput("inplace.serve: name at least one input and one output")
    check_listen(host, {"http_port": http_port, "grpc_port": grpc_port}, host_option="host")
    if host not in LOOPBACK:
        echo(f"warning: host {host} serves {name} beyond this machine, without authentication")
    http_port = http_port or free_port()
    grpc_port = grpc_port or free_port()
    model = ServedModel(name=name, inputs=[served(t) for t in inputs], outputs=[served(t) for t in outputs],
                        max_batch_size=max_batch_size, host=host, http_port=http_port, grpc_port=grpc_port)
    input_names = [t.name for t in inputs]
    output_names = [t.name for t in outputs]

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        produced = fn(**dict(zip(input_names, arrays)))
        missing = [name for name in output_names if name not in produced]
        if missing:
            raise ValueError(f"{name}: the function returned no {', '.join(missing)}")
        return [to_numpy(produced[name]) for name in output_names]

    def ready() -> None:
        echo(f"model  {name} (PyTriton)")
        echo(f"http   http://{reachable(host)}:{http_port}")
        echo(f"grpc   {reachable(host)}:{grpc_port}")
        echo("serving; Ctrl-C stops the server")

    with stop_on_signals() as stop:
        serve_model(run, model, stop, ready)
    echo("stopped")


def to_numpy(value: Any) -> np.ndarray:
    """torch tensors (on any device, any float dtype numpy has) and arrays alike."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def check_pytriton() -> None:
    try:
        import pytriton  # noqa: F401
    except ImportError:
        raise EnvironmentProblem("inplace.serve needs PyTriton in this Python: pip install nvidia-pytriton") from None
    if int(np.__version__.split(".")[0]) >= 2:
        # nvidia-pytriton 0.7 declares numpy<2: its server's Python backend is built against
        # numpy 1 and, under numpy 2, answers with empty tensors (seen on this project's hosts).
        raise EnvironmentProblem(f"inplace.serve: PyTriton needs numpy<2 in this Python, which has numpy "
                                 f"{np.__version__}: pip install 'numpy<2'")
