"""Warm reloads (issue 30, item 2): Inductor's cache folder, into which `inplace.optimize` compiles
the modules compiled in the user's process, kept in the workspace; `load_optimized` in a later
process copies it into torch's own cache before anything compiles, so that the pipeline's first
calls find their graphs and kernels built.

WORKSPACE/compile-cache/inductor/     Inductor's cache of those compiles (graphs, Triton and C++ kernels)
WORKSPACE/compile-cache/stamp.json    what it was built with (CacheStamp)

The folder, not torch.compiler.save_cache_artifacts (kept here until 2026-12-07): the artifacts do
not carry the built C++ kernels. The tiny SD pipeline's first call on a 2-core CPU host (torch 2.13,
its three modules compiled), in two pairs of runs: 44.2 s cold against 28.3 s with the artifacts,
and 48.5 s cold against 4.4 s with the folder copied to another path (docs/performance.md). Triton
kernels are in it unless TRITON_CACHE_DIR points elsewhere while optimizing.

A cache built by another torch, on another device or from a module of other weights' shapes and
dtypes is ignored with a warning: the modules then compile as they would without it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from orchestrator.config import Strict
from runners.contract.protocol import one_line, write_text_atomic

CACHE_FOLDER = "compile-cache"
INDUCTOR = "inductor"
STAMP = "stamp.json"


class CacheStamp(Strict):
    """What the cache was built with: torch's version, the device, and each module compiled here
    (its fingerprint)."""

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
    """Why a cache stamped `saved` does not serve `here`; None where it does."""
    if saved.torch != here.torch:
        return f"it was built by torch {saved.torch}, this is {here.torch}"
    if saved.device != here.device:
        return f"it was built on {saved.device}, this is {here.device}"
    other = sorted(name for name, found in here.modules.items() if saved.modules.get(name) != found)
    if other:
        return f"module(s) {', '.join(other)} differ from those it was built for"
    return None


@contextmanager
def compiling_into(root: Path) -> Iterator[None]:
    """Inductor's cache in the workspace's (emptied) compile-cache folder while the block runs, through
    torch's own switch, which also clears its in-memory caches on the way in and out. A torch without
    that switch compiles into its own cache: a later process then compiles anew."""
    folder = root / CACHE_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    (folder / INDUCTOR).mkdir(parents=True)
    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:
        yield
        return
    with temporary_cache_dir(str(folder / INDUCTOR)):
        yield


def save_stamp(root: Path, modules: Mapping[str, tuple[Any, str]], device: Any) -> None:
    """Stamp the cache the modules compiled into (compiling_into) with what built it."""
    write_text_atomic(root / CACHE_FOLDER / STAMP, stamp_here(modules, device).model_dump_json(indent=2))


def copy_new_files(source: Path, target: Path) -> int:
    """Copy the regular files under `source` that `target` lacks (never a link, never over a file: the
    cache's names are digests of what they hold); each appears whole (a temporary file renamed), as a
    compile in another process may read it meanwhile. Returns how many were copied."""
    copied = 0
    for top, _, files in os.walk(source):  # never into a linked folder
        here = Path(top)
        destination = target / here.relative_to(source)
        for name in files:
            path = here / name
            if name.endswith(".lock") or path.is_symlink() or not path.is_file() or (destination / name).exists():
                continue
            destination.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=destination, prefix=f".{name}.")
            os.close(handle)
            shutil.copyfile(path, temporary)
            os.replace(temporary, destination / name)
            copied += 1
    return copied


def load_cache(root: Path, modules: Mapping[str, tuple[Any, str]], device: Any) -> bool:
    """Copy the workspace's compile cache into torch's where it matches this process; else warn and
    return False (the modules compile without it)."""
    folder = root / CACHE_FOLDER
    if not (folder / STAMP).is_file() or not modules:
        return False
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        why = mismatch(CacheStamp.model_validate_json((folder / STAMP).read_text()), stamp_here(modules, device))
        if why is None:
            copy_new_files(folder / INDUCTOR, Path(cache_dir()))
            return True
    except Exception as error:  # noqa: BLE001 - a broken or foreign cache must never stop the pipeline
        why = one_line(error)
    warnings.warn(f"inplace: the compile cache in {folder} is ignored ({why}); the modules compile anew",
                  RuntimeWarning, stacklevel=3)
    return False
