"""The one .npz reader (runners/contract/arrays.py) and the loaders built on it: the user's samples and the
samples a runner wrote (no Docker)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from orchestrator.errors import BadInput
from orchestrator.run.runner_output import reference_samples
from orchestrator.run.untrusted import UntrustedOutput
from orchestrator.run.workspace import Workspace
from orchestrator.samples import load_samples
from runners.contract.arrays import load_npz
from runners.contract.protocol import NORMALIZED_SAMPLES

X = np.arange(6, dtype=np.float32).reshape(2, 3)
MASK = np.array([[True], [False]])


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_arrays_come_back_by_name_in_the_files_order(tmp_path):
    np.savez(tmp_path / "a.npz", x=X, mask=MASK)
    loaded = load_npz(tmp_path / "a.npz")
    assert list(loaded) == ["x", "mask"]
    assert loaded["x"].dtype == np.float32 and np.array_equal(loaded["x"], X)
    assert np.array_equal(load_npz(str(tmp_path / "a.npz"))["mask"], MASK)


def test_an_open_file_is_read_and_left_open():
    buffer = io.BytesIO()
    np.savez(buffer, x=X)
    buffer.seek(0)
    assert np.array_equal(load_npz(buffer)["x"], X)
    assert not buffer.closed  # whoever opened it closes it


def test_pickled_objects_and_plain_npy_are_refused(tmp_path):
    np.savez(tmp_path / "objects.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        load_npz(tmp_path / "objects.npz")
    np.save(tmp_path / "single.npy", X)
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_npz(tmp_path / "single.npy")


@pytest.mark.parametrize("make, message", [
    (lambda path: None, "no such file"),
    (lambda path: path.write_text("not a zip"), r"not an .npz file; write one with numpy.*np.savez\("),
    (lambda path: path.write_bytes(npy_bytes(X)), "not an .npz file"),
    (lambda path: np.savez(path, o=np.array([None], dtype=object)), "not a readable .npz file"),
    (lambda path: np.savez(path), "holds no arrays"),
    (lambda path: np.savez(path, a=np.zeros((2, 3)), b=np.zeros((3, 3))), "same batch size"),
    (lambda path: np.savez(path, a=np.float32(1)), "same batch size"),
])
def test_the_users_samples_fail_as_bad_input(tmp_path, make, message):
    path = tmp_path / "samples.npz"
    make(path)
    with pytest.raises(BadInput, match=message):
        load_samples(path)


def test_the_users_samples_load(tmp_path):
    np.savez(tmp_path / "samples.npz", x=X, mask=MASK)
    assert list(load_samples(tmp_path / "samples.npz")) == ["x", "mask"]


def test_runner_samples_are_read_as_untrusted_output(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    np.savez(workspace.reference / NORMALIZED_SAMPLES, x=X)
    assert np.array_equal(reference_samples(workspace)["x"], X)
    elsewhere = tmp_path / "elsewhere.npz"
    (workspace.reference / NORMALIZED_SAMPLES).rename(elsewhere)
    (workspace.reference / NORMALIZED_SAMPLES).symlink_to(elsewhere)
    with pytest.raises(UntrustedOutput, match="symbolic link"):
        reference_samples(workspace)
