"""Reading and writing .npz files: the runners' inputs, the user's samples, the reference a runner wrote.

numpy and the standard library only: it runs inside every image and on the host.
"""
from __future__ import annotations

import os
import zipfile
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
    """Write the arrays by name, as np.savez does and load_npz reads them back (".npz" is added to
    a name without it). Written here rather than by np.savez, whose keywords differ between numpy 1
    and 2 and would take an array named like one of them for it."""
    path = os.fspath(target)
    if not path.endswith(".npz"):
        path += ".npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
