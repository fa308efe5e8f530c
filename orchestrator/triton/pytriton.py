"""PyTriton as the server of `nav-orch serve --server pytriton`: runners/serving/pytriton_server.py in a
container of the CPU Triton image, whose /opt/python-backend holds nvidia-pytriton. It serves the
model folder written for Triton's Python backend (the same artifact, loader, names, dtypes and
dims), and is supervised like tritonserver: the same ports, readiness, log scan and removal.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import triton_to_np_dtype

from orchestrator.config import TritonSettings, default_of
from orchestrator.containers import engine
from orchestrator.run.executor import CONTAINER_CODE
from orchestrator.triton.repository import CONFIG_FILE, VERSION, api_datatype, parse_config
from orchestrator.triton.server import LocalProcess, Running, TritonServer
from runners import RUNNERS_DIR
from runners.contract.protocol import SERVER_READY, ServedModel, ServedTensor, ServeSpec

MODEL_MOUNT = "/model"


def served(tensor: mc.ModelInput | mc.ModelOutput, scalar: bool = False) -> ServedTensor:
    """`scalar`: an unbatched input the model takes as a scalar (it travels as [1])."""
    reshape = list(tensor.reshape.shape) if tensor.HasField("reshape") else [] if scalar else None
    return ServedTensor(name=tensor.name, dtype=str(triton_to_np_dtype(api_datatype(tensor.data_type))().dtype),
                        dims=list(tensor.dims), reshape=reshape)


def serve_spec(config: mc.ModelConfig, artifact: str, device: str, host: str) -> ServeSpec:
    """What runners/serving/pytriton_server.py serves, from the Python-backend config written for the
    variant (repository.model_config); the ports are filled in when the server starts."""
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    scalars = set(json.loads(parameters.get("scalars", "[]")))
    model = ServedModel(name=config.name, inputs=[served(t, t.name in scalars) for t in config.input],
                        outputs=[served(t) for t in config.output], max_batch_size=config.max_batch_size,
                        host=host, http_port=0, grpc_port=0)
    return ServeSpec(model=model, loader=parameters["loader"], artifact=artifact,
                     precision=parameters.get("precision", "fp32"), device=device,
                     warmup=json.loads(parameters.get("warmup", "[]")))


class PyTritonServer(TritonServer):
    """runners/serving/pytriton_server.py serving one model folder (MODEL/config.pbtxt, MODEL/1/ARTIFACT): in
    a container of `image`, or with `python` given, as a process of that Python (the local
    executor's: it needs nvidia-pytriton, numpy<2 and the variant's framework)."""

    def __init__(self, client, image: str, folder: Path, run_id: str, log_path: Path, gpus: str, host: str,
                 http_port: int = 0, grpc_port: int = 0,
                 ready_timeout_s: float = default_of(TritonSettings, "ready_timeout_s"), python: Optional[str] = None,
                 gpu_indices: Sequence[str] = ()):
        super().__init__(client, image, folder, [folder.name], run_id, log_path, gpus=gpus, host=host,
                         http_port=http_port, grpc_port=grpc_port, ready_timeout_s=ready_timeout_s)
        self.python = python
        self.gpu_indices = list(gpu_indices)  # the host's (nvidia-smi's) indices, for a local process
        config = parse_config((folder / CONFIG_FILE).read_text())
        artifact = Path(VERSION) / config.parameters["artifact"].string_value
        place = self.repository if python else Path(MODEL_MOUNT)
        device = "cuda:0" if self.gpus != "none" else "cpu"
        self.spec = serve_spec(config, str(place / artifact), device, self.host)

    def command(self) -> list[str]:
        model = dataclasses.replace(self.spec.model, http_port=self.http_port, grpc_port=self.grpc_port)
        spec = dataclasses.replace(self.spec, model=model)
        return [self.python or "python3", "-m", "runners.serving.pytriton_server", json.dumps(dataclasses.asdict(spec))]

    def launch(self, spec: engine.ContainerSpec) -> Running:
        if self.python is None:
            return super().launch(spec)
        # The runners from this installation; the artifact where it lies (the spec names it).
        environment = {"PYTHONPATH": str(RUNNERS_DIR.parent), "PYTHONUNBUFFERED": "1"}
        # Docker shows a container only its GPUs; a process sees them all unless told.
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_indices) if self.gpus != "none" else ""
        environment["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # nvidia-smi's order, which the indices are in
        return LocalProcess(spec.command, environment, self.log_path.with_suffix(".live.log"))

    def ready(self) -> bool:
        # PyTriton's tritonserver is ready before PyTriton has loaded the model into it.
        return SERVER_READY in self.logs() and super().ready()

    def mounts(self) -> list[engine.Mount]:
        return [engine.Mount(source=RUNNERS_DIR, target=f"{CONTAINER_CODE}/runners", read_only=True),
                engine.Mount(source=self.repository, target=MODEL_MOUNT, read_only=True)]

    def environment(self) -> dict[str, str]:
        return {"PYTHONPATH": CONTAINER_CODE, "PYTHONUNBUFFERED": "1"}
