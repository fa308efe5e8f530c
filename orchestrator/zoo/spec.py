"""The zoo file: a TOML list of models, each with optimize's options, and defaults shared by all.

    [defaults]
    images = "cpu"
    gpus = "none"
    batch_sizes = [1, 8]

    [[model]]
    name = "resnet50"
    model = "models/resnet50.py:make"
    samples = "data/resnet50.npz"
    formats = ["onnx", "torchscript-trace"]

    [[model]]
    name = "bert"
    model = "models/bert.py:make"
    requirements = ["models/bert-requirements.txt"]

Paths are relative to the file. Each model's options become an OptimizeConfig, the model that
validates optimize's command line and API too; an error names the model and the field.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.config import OptimizeConfig, TritonSettings, default_of, read_requirements
from orchestrator.containers.gpus import GpuRequest
from orchestrator.errors import BadInput, NavOrchError
from orchestrator.model_ref import parse_model
from orchestrator.samples import parse_input_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # the `tomli` dependency, tomllib's origin
    import tomli as tomllib  # type: ignore[import-not-found]

# Keys that are not OptimizeConfig fields as they are: how the model, its samples and its libraries are given.
MODEL_KEYS = {"name", "model", "framework", "model_args", "inputs", "samples", "calibration", "triton",
              "requirements", "find_links"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ZooModel:
    name: str
    config: OptimizeConfig  # its workspace: the zoo's folder / name
    gpus: int  # GPUs its run asks for (a Ray task requests as many)


def load_zoo(path: Path, workspace: Path) -> list[ZooModel]:
    """The models of the zoo file at `path`, each validated; BadInput (one line) for anything wrong."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"zoo file {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise BadInput(f"zoo file {path}: not readable TOML ({error})") from None
    unknown = sorted(set(data) - {"defaults", "model"})
    if unknown:
        raise BadInput(f"zoo file {path}: unknown table {unknown[0]!r}; use [defaults] and [[model]]")
    defaults, entries = data.get("defaults", {}), data.get("model", [])
    if not isinstance(defaults, dict) or not isinstance(entries, list) or not entries:
        raise BadInput(f"zoo file {path}: no [[model]] entries; give each model as a [[model]] table")
    models = [zoo_model(path.parent.resolve(), {**defaults, **entry}, index, workspace)
              for index, entry in enumerate(entries, 1)]
    names = [m.name for m in models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadInput(f"zoo file {path}: model name {repeated[0]!r} is used twice; names are workspace folders")
    return models


def zoo_model(folder: Path, entry: dict[str, Any], index: int, workspace: Path) -> ZooModel:
    name = entry.get("name")
    where = f"model {name!r}" if isinstance(name, str) else f"model #{index}"
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise BadInput(f"zoo {where}: name it with letters, digits, '.', '_' or '-' (it names its workspace)")
    if "workspace" in entry:
        raise BadInput(f"zoo {where}: leave out `workspace`: each model's is the zoo's --workspace folder / its name")
    if not isinstance(entry.get("model"), str):
        raise BadInput(f"zoo {where}: give `model`, as file.py:factory or a model file, relative to the zoo file")
    try:
        ref = parse_model(str(folder / entry["model"]), [f"{k}={v}" for k, v in entry.get("model_args", {}).items()],
                          entry.get("framework"))
        fields = {key: value for key, value in entry.items() if key not in MODEL_KEYS}
        # Files the entry leaves out keep the config's default.
        files = {key: folder / entry[key] for key in ("samples", "calibration", "find_links") if key in entry}
        if not isinstance(entry.get("requirements", []), list):
            raise BadInput(f"zoo {where}: requirements: give a list of requirements files, relative to the zoo file")
        # Read here, on the submitting host: the lines travel in the config to wherever the model runs.
        requirements = [line for name in entry.get("requirements", []) for line in read_requirements(folder / name)]
        config = OptimizeConfig(
            model=ref, workspace=workspace / name, **fields, **files, requirements=requirements,
            inputs=[parse_input_spec(text) for text in entry.get("inputs", [])],
            triton=TritonSettings(enabled=bool(entry.get("triton", default_of(TritonSettings, "enabled")))))
        return ZooModel(name=name, config=config, gpus=gpu_count(config.gpus))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise BadInput(f"zoo {where}: {field}: {first['msg']}") from None
    except NavOrchError as error:
        raise BadInput(f"zoo {where}: {error}") from None


def gpu_count(gpus: str) -> int:
    """How many GPUs a model's `gpus` asks for, as a count a cluster can schedule: `all` is no count."""
    if gpus == "auto":
        raise BadInput("gpus = \"auto\" says no count; give \"none\", a number or device=...")
    request = GpuRequest.parse(gpus)
    if request.all:
        raise BadInput("gpus = \"all\" says no count for a zoo (each node has its own); give a number")
    return len(request.devices) or request.count
