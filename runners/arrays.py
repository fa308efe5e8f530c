"""Reading and writing .npz files: the runners' inputs, the user's samples, the reference a runner wrote.

numpy and the standard library only: it runs inside every image and on the host.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import BinaryIO, Union

import numpy as np


def load_npz(source: Union[str, os.PathLike, BinaryIO]) -> dict[str, np.ndarray]:
    """Every array of an .npz file (a path or an open binary file), by name, in the file's order.
    Pickled objects are refused (an .npz may come from anyone); a plain .npy is a ValueError."""
    data = np.load(source, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("a single .npy array, not an .npz archive of named arrays")
    with data:
        return {name: data[name] for name in data.files}


def save_npz(target: Union[str, os.PathLike], arrays: Mapping[str, np.ndarray]) -> None:
    """Write the arrays by name, as load_npz reads them back."""
    # allow_pickle by keyword (numpy's default): else an array named "allow_pickle" would be taken for it.
    np.savez(target, allow_pickle=True, **arrays)
