"""Warm reloads (issue 30, item 2): the compile cache of the modules compiled in the user's process
(torch.compiler.save_cache_artifacts) kept in the workspace, and loaded by `load_optimized` in a
later process before anything compiles, so that the pipeline's first calls find their kernels built.

WORKSPACE/compile-cache/artifacts.bin    torch's serialized cache artifacts
WORKSPACE/compile-cache/artifacts.json   what they were built with (CacheStamp)

Artifacts built by another torch, on another device or from a module of other weights' shapes and
dtypes are ignored with a warning: the modules then compile as they would without them.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from orchestrator.config import Strict
from runners.contract.protocol import one_line, write_text_atomic

CACHE_FOLDER = "compile-cache"
ARTIFACTS = "artifacts.bin"
STAMP = "artifacts.json"


class CacheStamp(Strict):
    """What the cache artifacts were built with: torch's version, the device, and each module
    compiled here (its fingerprint)."""

    torch: str
    device: str
    modules: dict[str, str] = Field(default_factory=dict)


def fingerprint(module: Any, candidate: str) -> str:
    """The module's class, its weights' names, shapes and dtypes, and the candidate's name (its options)."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    text = "\n".join([type(module).__qualname__, candidate,
                      *(f"{name} {tuple(tensor.shape)} {tensor.dtype}" for name, tensor in tensors)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp_here(modules: Mapping[str, tuple[Any, str]], device: Any) -> CacheStamp:
    """The stamp of `modules` (name: the wrapped module and its candidate's name) on `device` in this process."""
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return CacheStamp(torch=torch.__version__, device=name,
                      modules={key: fingerprint(module, candidate) for key, (module, candidate) in modules.items()})


def mismatch(saved: CacheStamp, here: CacheStamp) -> Optional[str]:
    """Why artifacts stamped `saved` do not serve `here`; None where they do."""
    if saved.torch != here.torch:
        return f"they were built by torch {saved.torch}, this is {here.torch}"
    if saved.device != here.device:
        return f"they were built on {saved.device}, this is {here.device}"
    other = sorted(name for name, found in here.modules.items() if saved.modules.get(name) != found)
    if other:
        return f"module(s) {', '.join(other)} differ from those they were built for"
    return None


def save_cache(root: Path, modules: Mapping[str, tuple[Any, str]], device: Any) -> bool:
    """Save this process's compile cache artifacts with their stamp; False where torch has none."""
    import torch

    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return False
    folder = root / CACHE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARTIFACTS).write_bytes(saved[0])
    write_text_atomic(folder / STAMP, stamp_here(modules, device).model_dump_json(indent=2))
    return True


def load_cache(root: Path, modules: Mapping[str, tuple[Any, str]], device: Any) -> bool:
    """Load the workspace's compile cache artifacts where they match this process; else warn and
    return False (the modules compile without them)."""
    import torch

    folder = root / CACHE_FOLDER
    if not (folder / STAMP).is_file() or not modules:
        return False
    try:
        why = mismatch(CacheStamp.model_validate_json((folder / STAMP).read_text()), stamp_here(modules, device))
        if why is None:
            torch.compiler.load_cache_artifacts((folder / ARTIFACTS).read_bytes())
            return True
    except Exception as error:  # noqa: BLE001 - a broken or foreign cache must never stop the pipeline
        why = one_line(error)
    warnings.warn(f"inplace: the compile cache in {folder} is ignored ({why}); the modules compile anew",
                  RuntimeWarning, stacklevel=3)
    return False
