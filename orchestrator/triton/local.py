"""Triton without Docker, for the local executor: a `tritonserver` of this machine (the one the
nvidia-pytriton wheel carries, or an install such as /opt/tritonserver) serving the workspace's
model repository through its Python backend, the same model folders the Triton image serves.

The Python backend runs each model in a stub that embeds the runners' Python, so the stub must be
built for that Python's version, and the model's imports (numpy, torch, ...) come from that
Python's paths. PyTriton's wheel ships one stub per Python version beside its backend; a backend
folder in the workspace puts the matching one in place (the wheel's own folder is left alone).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator.containers import engine
from orchestrator.errors import EnvironmentProblem
from orchestrator.results import LOCAL_SERVER_PREFIX
from orchestrator.triton.server import HOST, LocalProcess, Running, TritonServer

PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"
# The Python backend keeps each stub's tensors in /dev/shm, growing its region by this much at a
# time: the default (1 MiB) makes a batch of images grow it dozens of times on its first request.
SHM_GROWTH_BYTES = 64 * 1024 * 1024
FIX = "install nvidia-pytriton (it carries tritonserver) into that Python, or give --tritonserver PATH"

# Asked of the runners' Python: its version, its executable, numpy's version and where
# nvidia-pytriton lies, without importing it (it starts nothing on import, but may be broken).
_PROBE = """
import importlib.util, json, sys
spec = importlib.util.find_spec("pytriton")
numpy = importlib.util.find_spec("numpy")
version = None
if numpy is not None:
    import numpy as np
    version = np.__version__
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "executable": sys.executable,
                  "pytriton": list(spec.submodule_search_locations) if spec else [], "numpy": version}))
"""


@dataclass(frozen=True)
class ServingPython:
    """The runners' Python as the Python backend's stub needs to know it."""

    version: str  # "3.12"
    bin: str  # the folder of its executable: the stub finds its packages through python3 there
    numpy: Optional[str]
    pytriton: Optional[Path]  # the nvidia-pytriton package folder, if installed


@dataclass(frozen=True)
class LocalTriton:
    """A tritonserver of this machine and the Python backend it serves with."""

    binary: Path
    python_backend: Path  # holds libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for the runners' Python
    libraries: Optional[Path]  # the wheel's bundled shared libraries, for the stub and the backend

    def describe(self) -> str:
        return f"{LOCAL_SERVER_PREFIX}{self.binary}"


def probe_serving_python(python: str) -> ServingPython:
    try:
        probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120)
        found = json.loads(probe.stdout) if probe.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise EnvironmentProblem(f"--python {python} cannot be run ({error})") from None
    if found is None:
        raise EnvironmentProblem(f"--python {python} failed: {probe.stderr.strip()[-200:]}")
    package = Path(found["pytriton"][0]) if found["pytriton"] else None
    return ServingPython(version=found["version"], bin=str(Path(found["executable"]).parent), numpy=found["numpy"],
                         pytriton=package)


def find_local_triton(python: ServingPython, given: Optional[Path], on_path: Optional[str]) -> LocalTriton:
    """The tritonserver to serve with: `given` (--tritonserver), else nvidia-pytriton's in the runners'
    Python, else `on_path` (`tritonserver` on PATH). EnvironmentProblem names what is missing."""
    if given is not None and not given.is_file():
        raise EnvironmentProblem(f"--tritonserver {given}: no such file; give the tritonserver program's path")
    wheel = python.pytriton / "tritonserver" / "bin" / "tritonserver" if python.pytriton else None
    if given is None and wheel is not None and not wheel.is_file():
        raise EnvironmentProblem(f"the nvidia-pytriton of that Python has no {wheel}: reinstall it, or give "
                                 "--tritonserver PATH")
    binary = given or wheel or (Path(on_path) if on_path else None)
    if binary is None:
        raise EnvironmentProblem(f"no tritonserver for a Python {python.version} (in {python.bin}): {FIX}")
    root = binary.resolve().parent.parent  # .../tritonserver/{bin,backends}
    python_backend = root / "backends" / "python"
    wheel_stub = root / "python_backend_stubs" / python.version / STUB  # PyTriton's layout
    stub = wheel_stub if wheel_stub.is_file() else python_backend / STUB  # an install's own
    missing = [p for p in (*(python_backend / f for f in PYTHON_BACKEND_FILES), stub) if not p.is_file()]
    if missing:
        raise EnvironmentProblem(f"{binary} cannot serve Python {python.version} models: {missing[0]} is missing "
                                 "(the Python backend, with a stub for that Python)")
    libraries = root.parent.parent / "nvidia_pytriton.libs"
    return LocalTriton(binary=binary, python_backend=python_backend, stub=stub,
                       libraries=libraries if libraries.is_dir() else None)


def check_numpy(python: str, serving: ServingPython) -> None:
    """The stub hands tensors to the model as arrays of the numpy it was built against (numpy 1): under
    numpy 2 it answers malformed ones ("output tensor shape does not match size of output", seen on
    the H100 host)."""
    if serving.numpy is None:
        raise EnvironmentProblem(f"--python {python} has no numpy, which Triton's Python backend needs")
    if int(serving.numpy.split(".")[0]) >= 2:
        raise EnvironmentProblem(f"--python {python} has numpy {serving.numpy}; the local tritonserver's Python "
                                 "backend needs numpy<2: pip install 'numpy<2' into it, or name another Python "
                                 "for the served model")


def local_triton_for(python: str, given: Optional[Path]) -> tuple[LocalTriton, ServingPython]:
    """The tritonserver that serves without Docker, its models running in `python`, and what its
    Python backend needs to know of that Python; EnvironmentProblem when it cannot serve."""
    serving = probe_serving_python(python)
    triton = find_local_triton(serving, given, shutil.which("tritonserver"))
    check_numpy(python, serving)
    return triton, serving


def backend_directory(triton: LocalTriton, folder: Path) -> Path:
    """A --backend-directory holding the Python backend with the stub for the runners' Python
    (copies: the wheel's folder is not ours to change)."""
    python = folder / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in [*(triton.python_backend / f for f in PYTHON_BACKEND_FILES), triton.stub]:
        shutil.copy2(source, python / source.name)
    return folder


class LocalTritonServer(TritonServer):
    """tritonserver as a process of this machine, serving `repository` with the Python backend in
    `backends`; supervised like the container (readiness, log scan, removal)."""

    def __init__(self, triton: LocalTriton, backends: Path, serving: ServingPython, gpu_indices: list[str],
                 repository: Path, models: list[str], run_id: str, log_path: Path, gpus: str, shm_size: str,
                 ready_timeout_s: float, http_port: int = 0, grpc_port: int = 0, host: str = HOST):
        super().__init__(None, triton.describe(), repository, models, run_id, log_path, gpus=gpus,
                         shm_size=shm_size, ready_timeout_s=ready_timeout_s, http_port=http_port,
                         grpc_port=grpc_port, host=host)
        self.triton = triton
        self.backends = backends
        self.serving = serving
        self.gpu_indices = gpu_indices

    def command(self) -> list[str]:
        return [str(self.triton.binary), f"--model-repository={self.repository}", *self.options(),
                f"--backend-directory={self.backends}",
                f"--backend-config=python,shm-growth-byte-size={SHM_GROWTH_BYTES}"]

    def launch(self, spec: engine.ContainerSpec) -> Running:
        # Docker shows a container only its GPUs; a process sees them all unless told.
        # The stub's embedded Python takes its prefix (a venv's site-packages with it) from the first
        # python3 on PATH, as it would for a program started from there; it ignores PYTHONPATH.
        environment = {"PATH": os.pathsep.join([self.serving.bin, os.environ.get("PATH", os.defpath)]),
                       "PYTHONUNBUFFERED": "1",
                       "CUDA_VISIBLE_DEVICES": ",".join(self.gpu_indices), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        if self.triton.libraries is not None:
            environment["LD_LIBRARY_PATH"] = os.pathsep.join(
                [str(self.triton.libraries), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])
        return LocalProcess(spec.command, environment, self.log_path.with_suffix(".live.log"))
