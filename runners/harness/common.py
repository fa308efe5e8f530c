"""What every runner module shares: skipping, loading arrays, describing errors and GPUs.

Kept apart from main.py, which runs as `__main__`: an exception class defined there would
be a different class from the one the runner modules import.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from runners.contract import nvidia_smi
from runners.contract.arrays import load_npz, save_npz  # noqa: F401 - the runners import load_npz from here
from runners.contract.formats import ONNXRUNTIME_CUDA, RUNNER_NEEDS, TOOLCHAINS, Toolchain
from runners.contract.protocol import (
    NORMALIZED_SAMPLES,
    REFERENCE_OUTPUTS,
    AxisRange,
    GpuInfo,
    IOSpec,
    Job,
    JobResult,
    ProtocolError,
    TensorSpec,
)


class Skip(Exception):
    """Raised by a handler when the job cannot apply to this model (status `skipped`)."""


Handlers = dict[str, Callable[[Job], JobResult]]  # job kind -> what runs it


class LastLoaded:
    """The variants a runner process loaded: verify and profile of one variant share one load (and
    one compile). A GPU session verifies all its variants before it profiles any
    (orchestrator/run/pipeline.py), so those loaded while the process holds less than `keep_bytes`
    (as `in_use` counts, e.g. the GPU memory it allocated) stay loaded, and their profiles need no
    second load. Any other replaces the last one loaded, so memory stays bounded."""

    def __init__(self, in_use: Callable[[], int] = lambda: 0, keep_bytes: int = 0) -> None:
        self.in_use, self.keep_bytes = in_use, keep_bytes
        self.kept: dict[tuple, Any] = {}
        self.key: Optional[tuple] = None
        self.value: Any = None

    def get(self, key: tuple, load: Callable[[], Any]) -> Any:
        if key in self.kept:
            return self.kept[key]
        if key != self.key:
            self.key, self.value = None, None  # free the last model before loading the next
            value = load()
            if self.in_use() < self.keep_bytes:
                self.kept[key] = value
                return value
            self.key, self.value = key, value
        return self.value


def sharing_a_load(plain: Handlers, loading: dict[str, Callable[[Job, LastLoaded], JobResult]],
                   loaded: Optional[LastLoaded] = None) -> Handlers:
    """A runner's handlers for one process, where those in `loading` share one LastLoaded (by default
    one that keeps a single variant)."""
    loaded = loaded or LastLoaded()

    def sharing(handler: Callable[[Job, LastLoaded], JobResult]) -> Callable[[Job], JobResult]:
        return lambda job: handler(job, loaded)

    return {**plain, **{kind: sharing(handler) for kind, handler in loading.items()}}


def base_versions(with_toolchains: bool, on_gpu: bool = False) -> dict[str, str]:
    """Python, numpy, the packages a format's runner needs where they are installed (found, not
    imported: torch costs seconds), and `with_toolchains` the optional toolchains (runners/contract/formats.py)
    this image has. Those are imported to be found, which would pull torch and TensorRT into every
    runner process of the CUDA images; the reference job's report is what the host decides from.
    `on_gpu` with them: the GPU runtimes too (gpu_runtime_versions)."""
    present = {package: installed_version(package) for package in RUNNER_NEEDS
               if importlib.util.find_spec(package) is not None}
    return {"python": platform.python_version(), "numpy": np.__version__, **present,
            **(toolchain_versions(TOOLCHAINS) if with_toolchains else {}),
            **(gpu_runtime_versions() if with_toolchains and on_gpu else {})}


def gpu_runtime_versions() -> dict[str, str]:
    """ONNX Runtime's version, keyed `ONNXRUNTIME_CUDA.module`, where it has its CUDA execution
    provider: without it an ONNX variant cannot run on a GPU (plain onnxruntime, a runners' venv)."""
    try:
        if importlib.util.find_spec("onnxruntime") is None:
            return {}
        ort = importlib.import_module("onnxruntime")
        providers = ort.get_available_providers()
    except Exception:  # noqa: BLE001 - a broken install runs nothing on the GPU, never a failed job
        return {}
    return {ONNXRUNTIME_CUDA.module: str(ort.__version__)} if "CUDAExecutionProvider" in providers else {}


def installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def toolchain_versions(toolchains: Iterable[Toolchain]) -> dict[str, str]:
    """The version of each toolchain whose module imports here, keyed by the module's name.

    Imported, not looked up by distribution name: that name varies with how the module was
    installed, and a module that is present but cannot load its libraries is no toolchain. The
    import costs once per runner process (sys.modules keeps it); a module that is not there at
    all costs only the look-up."""
    found = {}
    for toolchain in toolchains:
        try:
            if importlib.util.find_spec(toolchain.module) is None:
                continue
            module = importlib.import_module(toolchain.module)
        except Exception:  # noqa: BLE001 - a broken install is a missing toolchain, never a failed job
            continue
        found[toolchain.module] = str(getattr(module, "__version__", "unknown"))
    return found


def gpu_info(environ: Mapping[str, str] = os.environ, run: nvidia_smi.SmiCall = nvidia_smi.run_command,
             used: Optional[str] = None) -> Optional[GpuInfo]:
    """The GPU a job ran on, read with nvidia-smi (present wherever the NVIDIA runtime is): the one
    the framework reported computing on (`used`, a UUID), else the first visible one."""
    device = used or environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
    gpus = nvidia_smi.query(nvidia_smi.RUNNER_FIELDS, device, run)
    return gpus[0].info() if gpus else None


def import_callable(job: Job) -> Callable[..., Any]:
    """The function a `file.py:name` model names (a factory, or for `profile` the function itself).
    The file's folder goes on sys.path, so its sibling modules import."""
    source = job.source()
    if source.factory is None:
        raise ProtocolError(f"{job.kind} job {job.id}: the model {source.file} names no function")
    path = Path(job.inputs.model) / source.file
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{source.file} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, source.factory, None)
    if not callable(function):
        raise ValueError(f"{source.file} has no function {source.factory!r}")
    return function


def key_by_names(samples: dict[str, np.ndarray], names: Optional[list[str]], taker: str) -> dict[str, np.ndarray]:
    """Key the samples by the input names `taker` (the model, forward(), the engine) declares: by
    name where all match, else in order; the samples' own keys where it declares none."""
    if names is None:
        return dict(samples)
    if set(samples) == set(names):
        return {name: samples[name] for name in names}
    if len(names) != len(samples):
        raise ValueError(f"the samples hold {len(samples)} arrays ({', '.join(samples)}) "
                         f"but {taker} takes {len(names)} ({', '.join(names)})")
    return dict(zip(names, samples.values()))


def tensor_spec(name: str, array: np.ndarray) -> TensorSpec:
    """An input or output as sampled, its batch axis (0) dynamic."""
    shape: list[Optional[int]] = list(array.shape)
    if shape:
        shape[0] = None
    return TensorSpec(name=name, dtype=str(array.dtype), shape=shape)


def _user_module_files(folder: Path) -> list[Path]:
    """Files of the modules imported from the model's folder (the factory's own module among
    them); installed packages are the image's business, even when a venv lies in that folder."""
    found = set()
    for module in list(sys.modules.values()):
        name = getattr(module, "__file__", None)
        if not name:
            continue
        path = Path(name).resolve()
        if folder in path.parents and not {"site-packages", "dist-packages"} & set(path.parts) and path.is_file():
            found.add(path)
    return sorted(found)


def _hash_file(h: Any, path: Path) -> None:
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def fingerprint(job: Job, weights: Iterable[bytes] = ()) -> str:
    """What the source model is, which every later job's cache key builds on. A model file (or
    SavedModel folder): its bytes. A factory: the source of the modules it imported from the
    model's folder, and the bytes of the weights it made or loaded (`weights`). Nothing else
    that lies near the model (workspaces, logs, VCS data, virtual environments) counts."""
    h = hashlib.sha256()
    folder = Path(job.inputs.model).resolve()
    source = job.source()
    if source.form in ("factory", "function"):
        for path in _user_module_files(folder):
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            _hash_file(h, path)
        for block in weights:
            h.update(block)
    else:
        path = folder / source.file
        for item in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            h.update(str(item.relative_to(folder)).encode() + b"\0")
            _hash_file(h, item)
    return h.hexdigest()


def array_bytes(named: Iterable[tuple[str, np.ndarray]]) -> Iterable[bytes]:
    """Weights as bytes for `fingerprint`: each array's name, dtype and shape, then its data."""
    for name, array in named:
        array = np.ascontiguousarray(array)
        yield f"{name}:{array.dtype}:{array.shape}".encode()
        yield array.tobytes()


def declared_io(declared: IOSpec, samples: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> IOSpec:
    """The io of a model whose dynamic axes the host declared (a reference job's `io`): the arrays'
    own names and dtypes, their shapes with None on each declared axis (and on the batch axis, where
    there is one), the declaration's ranges by position and its batch axis. ValueError where the
    declaration does not fit the arrays."""
    return IOSpec(inputs=_declared_specs("input", declared.inputs, samples, declared.batch_axis),
                  outputs=_declared_specs("output", declared.outputs, outputs, declared.batch_axis),
                  batch_axis=declared.batch_axis)


def _declared_specs(kind: str, declared: list[TensorSpec], arrays: Mapping[str, np.ndarray],
                    batch_axis: Optional[int]) -> list[TensorSpec]:
    if len(declared) != len(arrays):
        raise ValueError(f"the host declares the dynamic axes of {len(declared)} {kind}s, "
                         f"but the model has {len(arrays)} ({', '.join(arrays) or 'none'})")
    specs = []
    for spec, (name, array) in zip(declared, arrays.items()):
        shape: list[Optional[int]] = list(array.shape)
        if batch_axis is not None and batch_axis < len(shape):
            shape[batch_axis] = None
        for r in spec.ranges:
            if not 0 <= r.axis < array.ndim:
                raise ValueError(f"{kind} {name!r}: the declared dynamic axis {r.axis} is outside its rank "
                                 f"{array.ndim} (shape {list(array.shape)})")
            if sum(other.axis == r.axis for other in spec.ranges) > 1:
                raise ValueError(f"{kind} {name!r}: axis {r.axis} is declared more than once")
            if not r.min <= r.typical <= r.max:
                raise ValueError(f"{kind} {name!r}: axis {r.axis} is declared with min {r.min}, typical "
                                 f"{r.typical}, max {r.max}; they must be in that order")
            size = array.shape[r.axis]
            if not r.min <= size <= r.max:
                raise ValueError(f"{kind} {name!r}: axis {r.axis} is {size} in the samples, outside its "
                                 f"declared sizes {r.min}..{r.max}")
            shape[r.axis] = None
        ranges = [AxisRange(r.axis, r.min, r.typical, r.max) for r in spec.ranges]
        specs.append(TensorSpec(name=name, dtype=str(array.dtype), shape=shape, ranges=ranges))
    return specs


def save_reference(job: Job, samples: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                   io: Optional[IOSpec] = None, weights: Iterable[bytes] = ()) -> JobResult:
    """The reference job's end in every runner: refuse non-finite outputs, write the samples and
    outputs, describe them (as the runner knows them, else as the host declared them in `job.io`, else
    as sampled with a dynamic batch axis 0), fingerprint the model."""
    for name, array in outputs.items():
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"the source model's output {name!r} contains NaN or Inf; nothing to verify against")
    if io is None and job.io is not None:
        io = declared_io(job.io, samples, outputs)
    io = io or IOSpec(inputs=[tensor_spec(n, a) for n, a in samples.items()],
                      outputs=[tensor_spec(n, a) for n, a in outputs.items()])
    out = Path(job.output_dir)
    save_npz(out / NORMALIZED_SAMPLES, samples)
    save_npz(out / REFERENCE_OUTPUTS, outputs)
    return JobResult(job.id, job.kind, "ok", io=io, fingerprint=fingerprint(job, weights))
