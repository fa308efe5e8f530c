"""The pure core of recording a pipeline module's calls (orchestrator/inplace): nested arguments and
outputs as named leaves and back, which calls are kept, and each input's dynamic axes."""
import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from orchestrator.inplace.shapes import CallLog
from orchestrator.inplace.structure import flatten, from_data, to_data, unflatten
from runners.protocol import AxisRange


@dataclass
class Output:  # a Hugging Face ModelOutput is a dataclass whose unused fields stay None
    logits: np.ndarray
    past: Optional[tuple] = None
    hidden: Optional[np.ndarray] = None


def is_array(value) -> bool:
    return isinstance(value, np.ndarray)


def test_nested_outputs_become_named_leaves_and_come_back():
    a, b, c, d = (np.full((2, i), i, dtype="float32") for i in range(1, 5))
    value = Output(logits=a, past=((b, c), [d, None, 3]))
    leaves, node = flatten(value, is_array, "out")
    assert list(leaves) == ["out.logits", "out.past.0.0", "out.past.0.1", "out.past.1.0"]
    assert leaves["out.past.1.0"] is d
    data = json.loads(json.dumps(to_data(node)))  # travels as plain data
    rebuilt = unflatten(from_data(data), leaves, resolve=lambda name: Output)
    assert isinstance(rebuilt, Output) and rebuilt.hidden is None
    assert rebuilt.logits is a and rebuilt.past[0] == (b, c)
    assert isinstance(rebuilt.past[1], list) and rebuilt.past[1][0] is d and rebuilt.past[1][1:] == [None, 3]


def test_keyword_arguments_keep_their_names():
    ids, mask = np.zeros((1, 7), "int64"), np.ones((1, 7), "int64")
    leaves, node = flatten({"input_ids": ids, "attention_mask": mask, "use_cache": True}, is_array, "kwargs")
    assert list(leaves) == ["kwargs.input_ids", "kwargs.attention_mask"]
    assert unflatten(node, leaves) == {"input_ids": ids, "attention_mask": mask, "use_cache": True}


def shapes(batch: int, length: int) -> dict:
    return {"args.0": (batch, length, 8), "kwargs.mask": (batch, length)}


def test_axes_that_change_are_dynamic_with_their_range_over_every_call_seen():
    log = CallLog(limit=2)
    for length in (5, 6, 6, 6, 9):  # a decoder: the sequence grows, most calls at 6
        log.record(shapes(2, length), f"call-{length}")
    axes = log.dynamic_axes()
    assert axes == {"args.0": [AxisRange(axis=1, min=5, typical=6, max=9)],
                    "kwargs.mask": [AxisRange(axis=1, min=5, typical=6, max=9)]}
    only_long = {key for key in log.seen if key[0][1][1] >= 6}
    assert log.dynamic_axes(within=only_long)["args.0"] == [AxisRange(axis=1, min=6, typical=6, max=9)]


def test_the_calls_kept_are_bounded_and_spread_over_the_shapes_seen():
    log = CallLog(limit=3)
    for index, length in enumerate((4, 4, 4, 5, 6, 6)):
        log.record(shapes(1, length), index)
    assert len(log.calls()) == 3
    kept_lengths = sorted({key[0][1][1] for key, _ in log.kept})
    assert kept_lengths == [4, 5, 6]  # the repeated first shape made room for later ones
    assert sum(log.seen.values()) == 6


def test_inputs_that_change_rank_or_come_and_go_are_errors():
    log = CallLog(limit=4)
    log.record({"x": (1, 3)}, 0)
    log.record({"x": (1, 3, 2)}, 1)
    with pytest.raises(ValueError, match="changed its number of dimensions"):
        log.dynamic_axes()
    log = CallLog(limit=4)
    log.record({"x": (1, 3), "y": (1,)}, 0)
    log.record({"x": (1, 4)}, 1)
    with pytest.raises(ValueError, match="'y' is missing from some calls"):
        log.dynamic_axes()
