"""Triton model repositories: which backend serves a variant, and its config.pbtxt.

config.pbtxt is built as a `ModelConfig` protobuf message and printed with `text_format`, so
every field name and enum is checked by the schema the server itself parses, never by a string
template. The input/output description (names, dtypes, shapes) is the reference job's `io`,
handed in as data: a variant serves exactly the interface the source model was verified on.

Layout, one folder per served variant (the Triton model name is the variant name):
    MODEL_REPOSITORY/NAME/config.pbtxt
    MODEL_REPOSITORY/NAME/1/<artifact>   model.onnx, model.pt, model.plan, model.savedmodel/, ...
    MODEL_REPOSITORY/NAME/1/model.py     Python backend only: runners/serving/triton_python_model.py
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TypeVar

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from orchestrator.errors import NavOrchError
from orchestrator.results import VariantResult
from orchestrator.run import untrusted
from orchestrator.triton.config_search import ServingConfig
from runners import RUNNERS_DIR
from runners.contract.formats import FORMATS, TritonServing
from runners.contract.protocol import COMPILED_PROGRAM, FormatName, IOSpec, TensorSpec

# The Python backend's model.py, and the loader it runs beside it (with how it names outputs): the
# served model needs nothing else of nav-orch.
PYTHON_MODEL_FILES = {"model.py": RUNNERS_DIR / "serving" / "triton_python_model.py",
                      "variant_loader.py": RUNNERS_DIR / "serving" / "variant_loader.py",
                      "structure.py": RUNNERS_DIR / "contract" / "structure.py"}
CONFIG_FILE = "config.pbtxt"
VERSION = "1"
Tensor = TypeVar("Tensor", mc.ModelInput, mc.ModelOutput)


TRITON_DTYPES = {
    "bool": mc.TYPE_BOOL, "uint8": mc.TYPE_UINT8, "uint16": mc.TYPE_UINT16, "uint32": mc.TYPE_UINT32,
    "uint64": mc.TYPE_UINT64, "int8": mc.TYPE_INT8, "int16": mc.TYPE_INT16, "int32": mc.TYPE_INT32,
    "int64": mc.TYPE_INT64, "float16": mc.TYPE_FP16, "float32": mc.TYPE_FP32, "float64": mc.TYPE_FP64,
    "bfloat16": mc.TYPE_BF16,
}


class NotServable(NavOrchError):
    """The variant cannot be served by this Triton image (one line says why)."""


@dataclass(frozen=True)
class Deployment:
    """How one variant is served."""

    model: str  # Triton model name (the variant's name)
    variant: str
    format: FormatName
    backend: str  # the format's native backend (runners/contract/formats.py), or "python"
    precision: str
    artifact: Path  # the variant's artifact in the workspace
    workspace: Path  # the workspace's root: the artifact is runner output, read as untrusted data
    # A compiled variant compiles at each batch size's first call: the server calls these before it is ready.
    warmup: tuple[int, ...] = ()

    @property
    def serving(self) -> TritonServing:
        serving = FORMATS[self.format].triton
        assert serving is not None, "deployment_for only deploys servable formats"
        return serving

    @property
    def file(self) -> str:
        if self.backend == "python":
            return self.artifact.name
        return self.serving.file or self.artifact.name


def deployment_for(variant: VariantResult, workspace_root: Path, backends: set[str]) -> Deployment:
    """The format's native backend where the server image has it, else the Python backend where
    triton_python_model.py can load the artifact; NotServable otherwise."""
    entry = FORMATS[variant.format]
    serving = entry.triton
    if serving is None:
        raise NotServable(f"{variant.name}: format {variant.format} is not served by Triton")
    if not variant.artifact:
        raise NotServable(f"{variant.name} has no artifact")
    try:
        artifact = workspace_root / untrusted.relative_inside(variant.artifact)
    except untrusted.UntrustedOutput as error:
        raise NotServable(f"{variant.name}: {error}") from None
    if not os.path.lexists(artifact):
        raise NotServable(f"{variant.name}: its artifact {variant.artifact} is missing from the workspace")
    try:
        untrusted.check_tree(workspace_root, artifact)
    except untrusted.UntrustedOutput as error:
        raise NotServable(f"{variant.name}: {error}") from None
    if entry.compile_mode and not (artifact / COMPILED_PROGRAM).is_file():
        raise NotServable(f"{variant.name}: compiled from its source where it runs (a quantized variant, or a model "
                          "torch.export cannot capture): no program a server could compile")
    if serving.backend is not None and serving.backend in backends:
        backend = serving.backend
    elif serving.python_backend and "python" in backends:
        backend = "python"
    else:
        wanted = serving.backend or "python"
        raise NotServable(f"{variant.name}: the server image has no {wanted} backend for {variant.format} "
                          f"(it has: {', '.join(sorted(backends)) or 'none'})")
    warmup = tuple(sorted({point.batch_size for point in variant.profile})) if entry.compile_mode else ()
    return Deployment(model=variant.name, variant=variant.name, format=variant.format, backend=backend,
                      precision=variant.precision, artifact=artifact, workspace=workspace_root, warmup=warmup)


def triton_dtype(dtype: str) -> int:
    try:
        return TRITON_DTYPES[str(np.dtype(dtype)) if dtype != "bfloat16" else dtype]
    except (KeyError, TypeError):
        raise NotServable(f"dtype {dtype} has no Triton data type") from None


def api_datatype(data_type: int) -> str:
    """The datatype string of the KServe v2 protocol (TYPE_FP32 -> FP32, TYPE_STRING -> BYTES)."""
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def batchable(io: IOSpec) -> bool:
    """Whether Triton can batch the model: it batches along the first axis only, so every input
    and output needs a dynamic first axis that is the batch axis. Scalars, a fixed first axis (a
    fixed-shape ONNX graph) or a batch axis elsewhere: served unbatched, with their full shapes."""
    return io.batch_axis == 0 and all(spec.shape and spec.shape[0] is None for spec in [*io.inputs, *io.outputs])


def request_shape(shape: Sequence[int]) -> list[int]:
    """A tensor's shape as Triton's API takes it (per sample when batched): a model config's dims
    are never empty, so a scalar travels as [1]."""
    return list(shape) or [1]


def dims(spec: TensorSpec, batched: bool) -> list[int]:
    """Triton dims: -1 where dynamic, without the batch axis when Triton batches."""
    shape = [-1 if size is None else size for size in spec.shape]
    return request_shape(shape[1:] if batched else shape)


def tensor(kind: type[Tensor], name: str, spec: TensorSpec, batched: bool) -> Tensor:
    """One config input or output. Batched, a tensor of one value per sample gets dims [1] and
    `reshape: {shape: []}`, so the model still sees [batch]; unbatched, an empty reshape is
    invalid, and the Python backend drops the [1] of a scalar itself (parameter `scalars`)."""
    message = kind(name=name, data_type=triton_dtype(spec.dtype), dims=dims(spec, batched))
    if batched and len(spec.shape) == 1:
        message.reshape.SetInParent()
    return message


def tensor_names(deployment: Deployment, io: IOSpec) -> tuple[list[str], list[str]]:
    """Input and output names as the backend wants them. The PyTorch backend knows outputs only
    by position, spelled `NAME__INDEX`; everything else keeps the source model's names."""
    inputs = [spec.name for spec in io.inputs]
    outputs = [spec.name for spec in io.outputs]
    if deployment.backend == "pytorch":
        outputs = [f"{name}__{index}" for index, name in enumerate(outputs)]
    return inputs, outputs


def model_config(deployment: Deployment, io: IOSpec, max_batch_size: int, gpus: list[str]) -> mc.ModelConfig:
    """The variant's config; `gpus`: the host GPUs the server is given, none for the CPU."""
    batched = max_batch_size > 0 and batchable(io)
    config = mc.ModelConfig(name=deployment.model, max_batch_size=max_batch_size if batched else 0)
    if deployment.backend == "python":
        config.backend = "python"
        parameters = {"artifact": deployment.artifact.name, "loader": FORMATS[deployment.format].loader.name,
                      "precision": deployment.precision, "variant": deployment.variant}
        scalars = [spec.name for spec in io.inputs if not spec.shape]
        if scalars and not batched:
            parameters["scalars"] = json.dumps(scalars)
        if deployment.warmup and batched:
            parameters["warmup"] = json.dumps(list(deployment.warmup))
        for key, value in parameters.items():
            config.parameters[key].string_value = value
    else:
        config.platform, config.backend = str(deployment.serving.platform), str(deployment.serving.backend)
    input_names, output_names = tensor_names(deployment, io)
    config.input.extend(tensor(mc.ModelInput, name, spec, batched) for name, spec in zip(input_names, io.inputs))
    config.output.extend(tensor(mc.ModelOutput, name, spec, batched) for name, spec in zip(output_names, io.outputs))
    if batched:
        config.dynamic_batching.SetInParent()
    if gpus:
        # No `gpus` list: the server's container sees only the GPUs it was given, numbered from 0
        # (host GPUs 0 and 2 are its 0 and 1), and Triton places `count` instances on each GPU it
        # sees. A host index would name a GPU the server cannot see, and a config that names none
        # stays right when `nav-orch serve` reuses it with other GPUs.
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    else:
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return config


def with_serving(config: mc.ModelConfig, serving: ServingConfig) -> mc.ModelConfig:
    """A copy of `config` with a searched serving configuration: its instance count and, for a
    batched model, its largest batch and the dynamic batcher's queue delay and preferred sizes."""
    changed = mc.ModelConfig()
    changed.CopyFrom(config)
    for group in changed.instance_group:
        group.count = serving.instances
    if changed.max_batch_size > 0:
        changed.max_batch_size = serving.max_batch_size
        changed.dynamic_batching.max_queue_delay_microseconds = serving.max_queue_delay_us
        del changed.dynamic_batching.preferred_batch_size[:]
        changed.dynamic_batching.preferred_batch_size.extend(serving.preferred_batch_sizes)
    return changed


def config_text(config: mc.ModelConfig) -> str:
    text = text_format.MessageToString(config)
    # text_format leaves out a field at its default, so an unbatched model's config would say
    # nothing about batching at all; written out (as PyTriton does), the file says it.
    return text if config.max_batch_size else text + "max_batch_size: 0\n"


def parse_config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def read_config(repository: Path, model: str) -> Optional[mc.ModelConfig]:
    path = repository / model / CONFIG_FILE
    return parse_config(path.read_text()) if path.is_file() else None


def write_model(repository: Path, deployment: Deployment, io: IOSpec, max_batch_size: int,
                gpus: list[str]) -> Path:
    """(Re)write one model folder; returns it. Everything is world-readable: the server runs as
    an unprivileged user and sees the repository through a read-only mount."""
    folder = repository / deployment.model
    if folder.exists():
        shutil.rmtree(folder)
    version = folder / VERSION
    version.mkdir(parents=True)
    # A copy, never a link: a hard link would share the runner-written file, and links are
    # never followed (orchestrator/run/untrusted.py).
    untrusted.copy_tree(deployment.workspace, deployment.artifact, version / deployment.file)
    if deployment.backend == "python":
        for name, source in PYTHON_MODEL_FILES.items():
            shutil.copyfile(source, version / name)
    (folder / CONFIG_FILE).write_text(config_text(model_config(deployment, io, max_batch_size, gpus)))
    for root, _dirnames, filenames in os.walk(folder):
        os.chmod(root, 0o755)
        for name in filenames:
            os.chmod(os.path.join(root, name), 0o644)
    # The repository itself is the mount point; the folders above it need no permissions.
    repository.chmod(repository.stat().st_mode | 0o055)
    return folder
