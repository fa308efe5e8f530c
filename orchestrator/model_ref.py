"""Reading the MODEL argument without importing the model (the host has no framework)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from orchestrator.errors import BadInput
from orchestrator.models import ModelRef

SUFFIX_KINDS = {".pt": "torchscript", ".ts": "torchscript", ".pt2": "exported_program"}
IMPORT_FRAMEWORKS = {"torch": "torch"}


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are JSON where they parse (numbers, lists), else strings."""
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise BadInput(f"--model-arg {pair!r}: expected key=value with a Python identifier as key")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def infer_framework(source: Path) -> Optional[str]:
    """The framework a factory file imports, read from its text."""
    imported = set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", source.read_text(errors="replace"), re.M))
    found = {IMPORT_FRAMEWORKS[name] for name in imported if name in IMPORT_FRAMEWORKS}
    return found.pop() if len(found) == 1 else None


def parse_model(text: str, model_args: list[str], framework: Optional[str]) -> ModelRef:
    path_text, factory = text, ""
    if ".py:" in text:
        path_text, _, factory = text.rpartition(":")
    path = Path(path_text).expanduser()
    if not path.exists():
        raise BadInput(f"model {path_text}: no such file")
    if not path.is_file():
        raise BadInput(f"model {path_text}: not a file")
    path = path.resolve()
    if path.suffix == ".py":
        if not factory.isidentifier():
            raise BadInput(f"model {text}: name the factory function, as in {path_text}:make_model")
        framework = framework or infer_framework(path)
        if framework is None:
            raise BadInput(f"model {text}: cannot tell its framework from its imports; pass --framework torch")
        return ModelRef(path=path, kind="factory", factory=factory, args=parse_model_args(model_args),
                        framework=framework)
    kind = SUFFIX_KINDS.get(path.suffix)
    if kind is None:
        raise BadInput(f"model {path_text}: expected file.py:factory, a TorchScript file (.pt, .ts) "
                       "or an ExportedProgram (.pt2)")
    if model_args:
        raise BadInput("--model-arg applies only to a file.py:factory model")
    return ModelRef(path=path, kind=kind, framework=framework or "torch")
