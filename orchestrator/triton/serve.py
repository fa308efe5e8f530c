"""`nav-orch serve WORKSPACE`: serve a variant of an optimized workspace from Triton until Ctrl-C.

It reuses the workspace's model repository (writing the variant's model folder when it is not
there yet, e.g. for another variant than the one optimize served), prints the endpoints and a
ready-to-copy request built from the workspace's own samples, and removes the server on Ctrl-C,
SIGTERM or SIGHUP (the CLI turns each into KeyboardInterrupt: orchestrator/signals.py).
"""
from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from orchestrator.containers import engine
from orchestrator.containers.gpus import host_gpus, select_gpus
from orchestrator.containers.images import CPU_RELEASE
from orchestrator.errors import BadInput
from orchestrator.results import JOB_RESULT, RunResults, VariantResult
from orchestrator.run import untrusted
from orchestrator.run.planning import REFERENCE
from orchestrator.run.workspace import Workspace
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
from orchestrator.triton.server import TritonServer, check_port_free, image_backends
from orchestrator.triton.stage import gpu_request, load_samples, release_of, require_image, triton_images
from orchestrator.triton.tensorrt_guard import builder_tensorrt, check_engine
from runners.protocol import RESULT_FILE, IOSpec

Echo = Callable[[str], None]
DEFAULT_MAX_BATCH_SIZE = 8


def read_results(workspace: Workspace) -> RunResults:
    if not workspace.results_path.is_file():
        raise BadInput(f"{workspace.root} has no results.json: run `nav-orch optimize ... --workspace "
                       f"{workspace.root}` first")
    try:
        return RunResults.model_validate_json(workspace.results_path.read_text())
    except ValidationError as error:
        raise BadInput(f"{workspace.results_path} is not a nav-orch results file: {error.errors()[0]['msg']}") from None


def reference_io(workspace: Workspace) -> IOSpec:
    """The input/output description the reference job reported (jobs/reference/result.json)."""
    path = workspace.jobs / REFERENCE / RESULT_FILE
    try:
        result = JOB_RESULT.validate_json(untrusted.read_bytes(workspace.root, path, untrusted.RESULT_MAX_BYTES))
    except (OSError, ValidationError, untrusted.UntrustedOutput):
        result = None
    if result is None or result.io is None:
        raise BadInput(f"{path} holds no input/output description: run `nav-orch optimize` on this workspace again")
    return result.io


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
          out: Echo, err: Echo, ready_timeout_s: float = 180.0) -> None:
    """Serve until Ctrl-C or SIGTERM (a normal end); ServerFailed when Triton fails or stops."""
    workspace = Workspace(workspace_path)
    results = read_results(workspace)
    variant = pick_variant(results, variant_name)
    io = reference_io(workspace)
    for port, option in ((http_port, "--http-port"), (grpc_port, "--grpc-port")):
        if port:
            check_port_free(port, option)
    release = release_of(results)
    server_image, _ = triton_images(release)
    available = host_gpus()
    if release == CPU_RELEASE or (gpus == "auto" and not available):
        gpu_indices: list[str] = []
    else:
        gpu_indices = select_gpus("all" if gpus == "auto" else gpus, available)
    client = engine.connect()
    server_info = require_image(client, server_image)
    run_id = uuid.uuid4().hex[:12]
    repository = workspace.model_repository
    try:
        config = read_config(repository, variant.name)
        if config is None or not (repository / variant.name / VERSION).is_dir():
            backends = image_backends(client, server_image, run_id)
            deployment = deployment_for(variant, workspace.root, backends)
            if deployment.format == "tensorrt":
                check_engine(variant.name, builder_tensorrt(results.environment), server_image, server_info.labels)
            max_batch_size = max((e.batch_size for e in variant.profile), default=DEFAULT_MAX_BATCH_SIZE)
            err(f"writing {variant.name} into {repository}")
            repository.mkdir(parents=True, exist_ok=True)
            folder = write_model(repository, deployment, io, max_batch_size, gpu_indices)
            config = parse_config((folder / CONFIG_FILE).read_text())
        request = workspace.triton / f"request-{variant.name}.json"
        request.write_text(json.dumps(request_body(load_samples(workspace), config)))
        server = TritonServer(client, server_image, repository, [variant.name], run_id,
                              workspace.triton / "serve.log", gpu_request(gpu_indices),
                              ready_timeout_s=ready_timeout_s, http_port=http_port, grpc_port=grpc_port)
        err(f"starting {server_image} with {variant.name}")
        with server:
            out(f"model  {variant.name} ({config.backend or config.platform} backend)")
            out(f"http   {server.http_url}")
            out(f"grpc   {server.grpc_url}")
            out(shlex.join(["curl", "-s", "-X", "POST", f"{server.http_url}/v2/models/{variant.name}/infer",
                            "-H", "Content-Type: application/json", "-d", f"@{request}"]))
            err("serving; Ctrl-C stops and removes the server")
            try:
                while True:
                    time.sleep(0.5)
                    server.check_running()
            except KeyboardInterrupt:
                err("stopping")
    finally:
        engine.remove_labelled(client, run_id)
