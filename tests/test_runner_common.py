"""What every runner shares (runners/common.py): numpy only, so it runs on the host too."""
from __future__ import annotations

import numpy as np
import pytest

from runners.common import key_by_names

A = np.zeros((2, 3), np.float32)
B = np.ones((2, 1), np.float32)


def test_samples_are_matched_by_name_whatever_their_order():
    keyed = key_by_names({"mask": B, "image": A}, ["image", "mask"], "the model")
    assert list(keyed) == ["image", "mask"] and keyed["image"] is A


def test_samples_with_other_names_are_taken_in_order():
    keyed = key_by_names({"a": A, "b": B}, ["x", "y"], "the engine")
    assert list(keyed) == ["x", "y"] and keyed["y"] is B


def test_a_model_that_names_no_inputs_keeps_the_samples_keys():
    assert list(key_by_names({"a": A}, None, "the model")) == ["a"]


def test_a_count_mismatch_is_one_clear_line():
    with pytest.raises(ValueError, match=r"the samples hold 2 arrays \(a, b\) but forward\(\) takes 1 \(x\)"):
        key_by_names({"a": A, "b": B}, ["x"], "forward()")
