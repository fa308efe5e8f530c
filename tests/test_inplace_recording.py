"""The pure core of recording a pipeline module's calls (orchestrator/inplace): nested arguments and
outputs as named leaves and back, which calls are kept, and each input's dynamic axes."""
import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest

from orchestrator.config import DeclaredAxes
from orchestrator.errors import BadInput
from orchestrator.inplace.capture import CaptureError, check_capturable, compare_leaves
from orchestrator.inplace.module import RecordedCall
from orchestrator.inplace.optimize import PipelineMismatch, differences, find_modules
from orchestrator.inplace.shapes import CallLog
from orchestrator.inplace.swap import shape_misfit
from orchestrator.results import CapturedModule
from orchestrator.run.jobs import declared_io
from runners.contract.protocol import AxisRange
from runners.contract.structure import flatten, from_data, to_data, unflatten


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


def test_a_decoder_growing_past_the_limit_keeps_calls_spread_from_its_first_length_to_its_last():
    # Whisper-small's decoder on the H100 kept its first 16 lengths of 64, so the captured range
    # ended at 16 and 48 of every 64 calls ran eager.
    log = CallLog(limit=16)
    for length in range(1, 65):
        log.record(shapes(1, length), length)
    kept = log.calls()
    assert 8 <= len(kept) <= 16
    assert kept[0] == 1 and kept[-1] == 64
    assert max(b - a for a, b in zip(kept, kept[1:])) <= 8  # no long stretch of lengths left out
    within = {key for key, _ in log.kept}
    assert log.dynamic_axes(within)["args.0"] == [AxisRange(axis=1, min=1, typical=64, max=64)]


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


# --- capture, swap-back and the pipeline check: the parts that need no torch ------------------------

def recorded(shapes_by_leaf: dict, constant=None) -> RecordedCall:
    inputs = {name: np.zeros(shape, "float32") for name, shape in shapes_by_leaf.items()}
    _, structure = flatten({"args": [inputs[name] for name in inputs], "kwargs": {"flag": constant}}, is_array, "in")
    outputs, outputs_structure = flatten((inputs[next(iter(inputs))],), is_array, "out")
    return RecordedCall(inputs, structure, outputs, outputs_structure)


def test_calls_that_pass_other_constants_or_objects_cannot_be_captured():
    check_capturable([recorded({"a": (1, 2)}), recorded({"a": (1, 3)})])  # shapes may differ
    with pytest.raises(CaptureError, match="differ in their arguments or in the constants"):
        check_capturable([recorded({"a": (1, 2)}, constant=True), recorded({"a": (1, 2)}, constant=False)])
    with pytest.raises(CaptureError, match="passed a object, which is neither a tensor nor a plain constant"):
        check_capturable([recorded({"a": (1, 2)}, constant=object())])


def captured_decoder() -> CapturedModule:
    return CapturedModule(precision="fp32", form="exported_program", file="model.pt2", inputs=["in.args.0"],
                          outputs=["out.0"], inputs_structure={}, outputs_structure={},
                          input_shapes={"in.args.0": [1, None]},
                          input_ranges={"in.args.0": [AxisRange(axis=1, min=2, typical=5, max=8)]},
                          output_ranges={}, output_dtypes={"out.0": "float32"}, calls_checked=4)


def test_a_call_fits_a_capture_where_static_axes_match_and_dynamic_ones_lie_in_range():
    capture = captured_decoder()
    assert shape_misfit(capture, {"in.args.0": (1, 2)}) is None
    assert shape_misfit(capture, {"in.args.0": (1, 8)}) is None
    assert shape_misfit(capture, {"in.args.0": (1, 9)}) == ("input in.args.0 has shape [1, 9], "
                                                           "outside the captured [1, 2..8]")
    assert "outside" in shape_misfit(capture, {"in.args.0": (2, 5)})  # the batch was never dynamic
    assert "outside" in shape_misfit(capture, {"in.args.0": (1, 5, 1)})


def test_recorded_outputs_compare_by_precision_and_integers_exactly():
    want = {"out.0": np.array([1.0, -2.0, 4.0], "float32"), "out.1": np.array([3, 4])}
    assert compare_leaves(dict(want), want, "fp32").passed
    near = {"out.0": want["out.0"] + np.float32(1e-2), "out.1": want["out.1"]}
    assert not compare_leaves(near, want, "fp32").passed and compare_leaves(near, want, "fp16").passed
    assert compare_leaves(near, want, "fp16").relative == pytest.approx(1e-2 / 4, rel=1e-3)
    assert not compare_leaves({"out.0": want["out.0"], "out.1": np.array([3, 5])}, want, "bf16").passed


def test_pipeline_outputs_differ_by_magnitude_for_floats_and_by_count_for_integers():
    eager = {"sample.0": np.array([[0.5, -2.0]], "float32"), "sample.1": np.array([1, 2, 3, 4])}
    optimized = {"sample.0": np.array([[0.5, -1.9]], "float32"), "sample.1": np.array([1, 2, 0, 4])}
    largest, relative, mismatched = differences(optimized, eager)
    assert largest == pytest.approx(0.1) and relative == pytest.approx(0.05) and mismatched == 0.25
    with pytest.raises(PipelineMismatch, match="returned outputs"):
        differences({"sample.0": eager["sample.0"]}, eager)


class FakeModule:
    """Stands for an inplace.Module (duck-typed: nav_name, swap, wrapped)."""

    def __init__(self, name: str):
        self.nav_name, self.wrapped = name, None

    def swap(self, variant) -> None:
        pass


def test_modules_are_found_in_attributes_closures_and_bound_methods():
    unet, encoder = FakeModule("unet"), FakeModule("text_encoder")

    class Pipe:
        def __init__(self):
            self.unet, self.parts = unet, type("Parts", (), {})()
            self.parts.encoder = encoder

        def generate(self, x):
            return x

    pipe = Pipe()
    assert find_modules(pipe) == {"unet": unet, "text_encoder": encoder}
    assert find_modules(pipe.generate) == {"unet": unet, "text_encoder": encoder}
    assert find_modules(lambda x: unet) == {"unet": unet}
    assert find_modules(pipe, given=[encoder]) == {"text_encoder": encoder}
    with pytest.raises(BadInput, match="two inplace.Modules are named 'unet'"):
        find_modules([unet], given=[unet, FakeModule("unet")])


def test_a_module_workspace_declares_its_dynamic_axes_to_the_reference_job():
    axes = DeclaredAxes(inputs=[[AxisRange(axis=1, min=1, typical=8, max=64)], []], outputs=[[]])
    io = declared_io(axes)
    assert io.batch_axis is None and [spec.ranges for spec in io.inputs] == axes.inputs
    assert declared_io(None) is None
