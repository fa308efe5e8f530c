"""`nav-orch serve WORKSPACE`: serve a variant of an optimized workspace from Triton until Ctrl-C.

It reuses the workspace's model repository (writing the variant's model folder when it is not
there yet, e.g. for another variant than the one optimize served), prints the endpoints and a
ready-to-copy request built from the workspace's own samples, and removes the server on Ctrl-C,
SIGTERM or SIGHUP (the CLI turns each into KeyboardInterrupt: orchestrator/signals.py).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from orchestrator.config import TritonSettings, default_of
from orchestrator.containers import engine
from orchestrator.containers.gpus import docker_gpus, host_gpus, select_gpus
from orchestrator.containers.images import CPU_RELEASE
from orchestrator.errors import BadInput, EnvironmentProblem
from orchestrator.results import RunResults, VariantResult
from orchestrator.run.runner_output import reference_io, reference_samples
from orchestrator.run.workspace import Workspace
from orchestrator.triton.local import LocalTritonServer, backend_directory, local_triton_for
from orchestrator.triton.pytriton import PyTritonServer
from orchestrator.triton.repository import (
    CONFIG_FILE,
    VERSION,
    api_datatype,
    deployment_for,
    parse_config,
    read_config,
    request_shape,
    write_model,
)
from orchestrator.triton.server import HOST, LOOPBACK, TritonServer, check_listen, image_backends
from orchestrator.triton.stage import image_tensorrt, release_of, require_image, triton_images
from orchestrator.triton.tensorrt_guard import builder_tensorrt, check_served_engine, serves_engines
from runners.contract.formats import FORMATS
from runners.contract.protocol import IOSpec

Echo = Callable[[str], None]
DEFAULT_MAX_BATCH_SIZE = 8
SERVERS = ("triton", "pytriton")


def pick_variant(results: RunResults, name: Optional[str]) -> VariantResult:
    verified = [v for v in results.variants if v.status == "ok"]
    name = name or results.best
    if name is None:
        raise BadInput("this workspace has no best variant: pass --variant NAME "
                       f"(verified: {', '.join(v.name for v in verified) or 'none'})")
    for variant in verified:
        if variant.name == name:
            return variant
    raise BadInput(f"--variant {name}: not a verified variant of this workspace "
                   f"(verified: {', '.join(v.name for v in verified) or 'none'})")


def request_body(samples: dict[str, np.ndarray], config: mc.ModelConfig) -> dict:
    """A KServe v2 JSON request for the first sample (all of the samples when the model is not
    batched), as the served model names and shapes its inputs."""
    batched = config.max_batch_size > 0
    inputs = []
    for spec, array in zip(config.input, samples.values()):
        value = array[:1] if batched else array
        shape = [1, *request_shape(value.shape[1:])] if batched else request_shape(value.shape)
        inputs.append({"name": spec.name, "shape": shape, "datatype": api_datatype(spec.data_type),
                       "data": value.reshape(-1).tolist()})
    return {"inputs": inputs}


def serve(workspace_path: Path, variant_name: Optional[str], http_port: int, grpc_port: int, gpus: str,
          out: Echo, err: Echo, server_kind: str = "triton", host: str = HOST, executor: str = "docker",
          python: Optional[str] = None, tritonserver: Optional[Path] = None,
          ready_timeout_s: float = default_of(TritonSettings, "ready_timeout_s")) -> None:
    """Serve until Ctrl-C or SIGTERM (a normal end); ServerFailed when the server fails or stops.
    `server_kind`: triton (tritonserver and the model repository) or pytriton (PyTriton serving
    the same variant through Triton's Python-backend model folder). `executor` local: the server as
    a process of this machine, without Docker: PyTriton in `python` (default: this one), or
    `tritonserver` (default: local.find_local_triton's) with its Python backend in `python`."""
    if server_kind not in SERVERS:
        raise BadInput(f"--server {server_kind}: choose {' or '.join(SERVERS)}")
    if executor not in ("docker", "local"):
        raise BadInput(f"--executor {executor}: choose docker or local")
    if tritonserver is not None and (executor, server_kind) != ("local", "triton"):
        raise BadInput("--tritonserver: for --executor local --server triton only (containers bring their own)")
    check_listen(host, {"--http-port": http_port, "--grpc-port": grpc_port})
    workspace = Workspace(workspace_path)
    results = workspace.read_results()
    variant = pick_variant(results, variant_name)
    io = reference_io(workspace)
    if host not in LOOPBACK:
        err(f"warning: --host {host} serves the model beyond this machine, without authentication")
    release = release_of(results)
    server_image, _ = triton_images(release)
    available = host_gpus()
    # GPUs as the run had them: its runners saw GPUs (a CUDA image, or the local executor on a GPU host).
    if not results.environment.gpus or (gpus == "auto" and not available):
        gpu_indices: list[str] = []
    else:
        gpu_indices = select_gpus("all" if gpus == "auto" else gpus, available)
    run_id = uuid.uuid4().hex[:12]
    gpu_option = docker_gpus(gpus, gpu_indices)
    # Its own repository: the workspace's may hold this variant for a native backend.
    pytriton_folder = workspace.triton / "pytriton"
    pytriton_log = workspace.triton / "pytriton-serve.log"
    if executor == "local" and server_kind == "triton":
        python = python or sys.executable
        triton, serving = local_triton_for(python, tritonserver)
        # Optimize's folder where it is for the Python backend (a local run's, with its searched
        # configuration); else one of its own: a local tritonserver has only the Python backend.
        config = read_config(workspace.model_repository, variant.name)
        if config is not None and config.backend == "python" and (
                workspace.model_repository / variant.name / VERSION).is_dir():
            repository, folder = workspace.model_repository, workspace.model_repository / variant.name
        else:
            repository = workspace.triton / "local-serve"
            folder = write_variant(repository, variant, workspace, io, {"python"}, gpu_indices, err)
        python_backend = backend_directory(triton, workspace.triton / "backends")
        server: TritonServer = LocalTritonServer(
            triton, python_backend, serving, gpu_indices, repository, [variant.name], run_id,
            workspace.triton / "serve.log", gpu_option, default_of(TritonSettings, "shm_size"), ready_timeout_s,
            http_port=http_port, grpc_port=grpc_port, host=host)
        run_serving(server, folder, variant.name, workspace, f"Triton ({triton.binary})", out, err)
        return
    if executor == "local":
        python = python or sys.executable
        check_serving_python(python, variant.format)
        folder = write_variant(pytriton_folder, variant, workspace, io, {"python"}, gpu_indices, err)
        server = PyTritonServer(None, server_image, folder, run_id, pytriton_log, gpu_option, host,
                                http_port, grpc_port, ready_timeout_s, python=python, gpu_indices=gpu_indices)
        run_serving(server, folder, variant.name, workspace, f"PyTriton (--python {python})", out, err)
        return
    if server_kind == "pytriton" and release != CPU_RELEASE:
        # NGC's Triton images carry no nvidia-pytriton, and PyTriton pins numpy<2.
        raise EnvironmentProblem(f"--server pytriton in a container needs the CPU flavor's Triton image; for this "
                                 f"{release} workspace use --executor local --python PY, a Python with "
                                 "nvidia-pytriton, numpy<2 and the variant's framework")
    client = engine.connect()
    require_image(client, server_image)
    try:
        if server_kind == "pytriton":
            folder = write_variant(pytriton_folder, variant, workspace, io, {"python"}, gpu_indices, err)
            server = PyTritonServer(client, server_image, folder, run_id, pytriton_log, gpu_option, host, http_port,
                                    grpc_port, ready_timeout_s)
        else:
            repository = workspace.model_repository
            folder = repository / variant.name
            if read_config(repository, variant.name) is None or not (folder / VERSION).is_dir():
                backends = image_backends(client, server_image, run_id)
                deployment = deployment_for(variant, workspace.root, backends)
                if serves_engines(FORMATS[deployment.format], deployment.workspace, deployment.artifact):
                    check_served_engine(variant.name, builder_tensorrt(results.environment), server_image,
                                        image_tensorrt(partial(engine.run_to_exit, client), server_image, run_id))
                folder = write_variant(repository, variant, workspace, io, backends, gpu_indices, err)
            server = TritonServer(client, server_image, repository, [variant.name], run_id,
                                  workspace.triton / "serve.log", gpus=gpu_option, ready_timeout_s=ready_timeout_s,
                                  http_port=http_port, grpc_port=grpc_port, host=host)
        what = f"PyTriton ({server_image})" if server_kind == "pytriton" else f"Triton ({server_image})"
        run_serving(server, folder, variant.name, workspace, what, out, err)
    finally:
        engine.remove_labelled(client, run_id)


def run_serving(server: TritonServer, folder: Path, model: str, workspace: Workspace, what: str, out: Echo,
                err: Echo) -> None:
    """Start the server, print its endpoints and a request, and serve until Ctrl-C."""
    config = parse_config((folder / CONFIG_FILE).read_text())
    request = workspace.triton / f"request-{model}.json"
    request.write_text(json.dumps(request_body(reference_samples(workspace), config)))
    err(f"starting {what} with {model}")
    with server:
        kind = "PyTriton" if isinstance(server, PyTritonServer) else f"{config.backend or config.platform} backend"
        out(f"model  {model} ({kind})")
        out(f"http   {server.http_url}")
        out(f"grpc   {server.grpc_url}")
        out(shlex.join(["curl", "-s", "-X", "POST", f"{server.http_url}/v2/models/{model}/infer",
                        "-H", "Content-Type: application/json", "-d", f"@{request}"]))
        err(f"ready in {server.ready_s:.1f} s; serving; Ctrl-C stops and removes the server")
        try:
            while True:
                time.sleep(0.5)
                server.check_running()
        except KeyboardInterrupt:
            err("stopping")


def check_serving_python(python: str, fmt: str) -> None:
    """The local Python can serve: PyTriton, numpy<2 (PyTriton's pin: its server's Python backend is
    built against numpy 1) and the variant's runtime."""
    package = FORMATS[fmt].loader.package
    probe = [python, "-c", f"import numpy, pytriton, {package}; print(numpy.__version__)"]
    try:
        found = subprocess.run(probe, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        raise EnvironmentProblem(f"--python {python} cannot be run ({error})") from None
    if found.returncode != 0:
        missing = found.stderr.strip().splitlines()[-1] if found.stderr.strip() else "it failed"
        raise EnvironmentProblem(f"--python {python} cannot serve {fmt} with PyTriton ({missing}): "
                                 f"pip install nvidia-pytriton {package} into it")
    if int(found.stdout.strip().split(".")[0]) >= 2:
        raise EnvironmentProblem(f"--python {python} has numpy {found.stdout.strip()}; PyTriton needs numpy<2 "
                                 "(its server answers empty tensors under numpy 2): pip install 'numpy<2' into it")


def write_variant(repository: Path, variant: VariantResult, workspace: Workspace, io: IOSpec, backends: set[str],
                  gpu_indices: list[str], err: Echo) -> Path:
    """Write the variant's model folder into `repository`; returns the folder."""
    deployment = deployment_for(variant, workspace.root, backends)
    max_batch_size = max((e.batch_size for e in variant.profile), default=DEFAULT_MAX_BATCH_SIZE)
    err(f"writing {variant.name} into {repository}")
    repository.mkdir(parents=True, exist_ok=True)
    return write_model(repository, deployment, io, max_batch_size, gpu_indices)
