"""Samples a run feeds the model: a user's .npz, or seeded random arrays from `--input`."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from orchestrator.config import InputSpec
from orchestrator.errors import BadInput
from runners.contract.arrays import load_npz, save_npz


def parse_input_spec(text: str) -> InputSpec:
    """`NAME:SHAPE:DTYPE`, e.g. `x:8,64:float32` (batch first)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise BadInput(f"--input {text!r}: expected NAME:SHAPE:DTYPE, e.g. x:8,64:float32")
    name, shape_text, dtype = parts
    try:
        shape = [int(d) for d in shape_text.replace("x", ",").split(",") if d.strip()]
        np.dtype(dtype)
    except (ValueError, TypeError):
        raise BadInput(f"--input {text!r}: SHAPE must be integers like 8,64 and DTYPE a numpy dtype") from None
    if not shape or min(shape) < 1:
        raise BadInput(f"--input {text!r}: the shape needs at least the batch axis, all sizes >= 1")
    return InputSpec(name=name, shape=shape, dtype=dtype)


def random_samples(specs: list[InputSpec], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arrays[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype.kind in "iu":
            arrays[spec.name] = rng.integers(0, 10, size=spec.shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec.name] = rng.integers(0, 2, size=spec.shape).astype(bool)
        else:
            raise BadInput(f"--input {spec.name}: cannot make random samples of dtype {spec.dtype}")
    return arrays


def load_samples(path: Path, batched: bool = True, option: str = "--samples") -> dict[str, np.ndarray]:
    """The user's `--samples` (or `option`'s) file, checked: named arrays that share a batch size on
    axis 0 (unless the model has no batch axis: an inplace module's call, at its own shapes)."""
    if not Path(path).is_file():
        raise BadInput(f"{option} {path}: " + ("a folder, not an .npz file" if Path(path).is_dir() else "no such file"))
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle: say what the file should be instead
        raise BadInput(f"{option} {path}: not an .npz file; write one with numpy, an array per model input named "
                       "as the input: np.savez('samples.npz', input=array)")
    try:
        arrays = load_npz(path)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise BadInput(f"{option} {path}: not a readable .npz file ({error})") from None
    if not arrays:
        raise BadInput(f"{option} {path}: the file holds no arrays")
    batches = {name: a.shape[0] if a.ndim else 0 for name, a in arrays.items()}
    if batched and (min(batches.values()) < 1 or len(set(batches.values())) != 1):
        raise BadInput(f"{option} {path}: every array needs the same batch size on axis 0, got {batches}")
    return arrays


def load_calibration(path: Path, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The `--calibration` file: arrays named and shaped as the samples are, in any number of rows."""
    arrays = load_samples(path, option="--calibration")
    if set(arrays) != set(samples):
        raise BadInput(f"--calibration {path}: its arrays ({', '.join(sorted(arrays))}) are not the samples' "
                       f"({', '.join(sorted(samples))}); name them as the model's inputs")
    for name, array in arrays.items():
        if array.shape[1:] != samples[name].shape[1:] or array.dtype != samples[name].dtype:
            raise BadInput(f"--calibration {path}: {name} is {array.dtype}{list(array.shape)}, but the samples' "
                           f"is {samples[name].dtype}{list(samples[name].shape)} (rows may differ, nothing else)")
    return arrays


def write_samples(arrays: dict[str, np.ndarray], target: Path) -> Path:
    save_npz(target, arrays)
    return target
