"""What every runner shares (runners/harness/common.py; numpy only, so it runs on the host too), and
how a runner process ends (runners/harness/main.py `leave`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from runners.contract.protocol import NORMALIZED_SAMPLES, AxisRange, IOSpec, Job, JobInputs, ModelSource, TensorSpec
from runners.harness.common import LastLoaded, key_by_names, load_npz, save_reference

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


# --- save_reference: the io of a model whose dynamic axes the host declared ----------------------

TOKENS = AxisRange(axis=1, min=1, typical=8, max=64)


def reference_job(tmp_path: Path, io: Optional[IOSpec]) -> Job:
    (tmp_path / "out").mkdir(exist_ok=True)
    return Job(id="reference", kind="reference", runner="torch", output_dir=str(tmp_path / "out"),
               inputs=JobInputs(model=str(tmp_path)), io=io,
               model=ModelSource(form="factory", file="model.py", factory="make"))


def placeholder(*ranges: AxisRange) -> TensorSpec:
    """A declared tensor: only its ranges count."""
    return TensorSpec("", "", [], list(ranges))


def decoder_declaration() -> IOSpec:
    return IOSpec(inputs=[placeholder(TOKENS), placeholder(TOKENS)], outputs=[placeholder(TOKENS)], batch_axis=None)


def test_a_declared_io_takes_the_arrays_names_dtypes_and_shapes_with_the_declared_axes_dynamic(tmp_path):
    samples = {"ids": np.zeros((1, 12), np.int64), "mask": np.ones((1, 12), bool)}
    outputs = {"logits": np.zeros((1, 12, 100), np.float32)}
    result = save_reference(reference_job(tmp_path, decoder_declaration()), samples, outputs)
    assert result.io == IOSpec(
        inputs=[TensorSpec("ids", "int64", [1, None], [TOKENS]), TensorSpec("mask", "bool", [1, None], [TOKENS])],
        outputs=[TensorSpec("logits", "float32", [1, None, 100], [TOKENS])], batch_axis=None)
    assert list(load_npz(tmp_path / "out" / NORMALIZED_SAMPLES)) == ["ids", "mask"]


def test_a_declared_io_without_dynamic_axes_keeps_every_shape_as_sampled(tmp_path):
    # A UNet always called with a batch of 2: no batch axis, nothing dynamic.
    declared = IOSpec(inputs=[placeholder(), placeholder()], outputs=[placeholder()], batch_axis=None)
    samples = {"latent": np.zeros((2, 4, 8, 8), np.float32), "t": np.zeros((2,), np.int64)}
    result = save_reference(reference_job(tmp_path, declared), samples, {"noise": np.zeros((2, 4, 8, 8), np.float32)})
    assert result.io is not None and result.io.batch_axis is None
    assert [spec.shape for spec in result.io.inputs] == [[2, 4, 8, 8], [2]]
    assert result.io.outputs[0].shape == [2, 4, 8, 8] and result.io.outputs[0].ranges == []


def test_without_a_declaration_the_batch_axis_0_is_the_dynamic_axis(tmp_path):
    result = save_reference(reference_job(tmp_path, None), {"x": A}, {"y": B})
    assert result.io == IOSpec(inputs=[TensorSpec("x", "float32", [None, 3])],
                               outputs=[TensorSpec("y", "float32", [None, 1])], batch_axis=0)


def test_a_runners_own_io_wins_over_the_declaration(tmp_path):
    own = IOSpec(inputs=[TensorSpec("x", "float32", [1, 3])], outputs=[TensorSpec("y", "float32", [1, 1])])
    result = save_reference(reference_job(tmp_path, decoder_declaration()), {"x": A}, {"y": B}, io=own)
    assert result.io is own


@pytest.mark.parametrize("declared, message", [
    (IOSpec([placeholder(TOKENS)], [placeholder(TOKENS)], None),
     r"declares the dynamic axes of 1 inputs, but the model has 2 \(ids, mask\)"),
    (IOSpec([placeholder(TOKENS), placeholder(AxisRange(2, 1, 8, 64))], [placeholder(TOKENS)], None),
     r"input 'mask': the declared dynamic axis 2 is outside its rank 2"),
    (IOSpec([placeholder(TOKENS), placeholder(AxisRange(1, 1, 8, 10))], [placeholder(TOKENS)], None),
     r"input 'mask': axis 1 is 12 in the samples, outside its declared sizes 1\.\.10"),
    (IOSpec([placeholder(TOKENS), placeholder(TOKENS)], [placeholder(AxisRange(1, 16, 8, 64))], None),
     r"output 'logits': axis 1 is declared with min 16, typical 8, max 64"),
    (IOSpec([placeholder(TOKENS, TOKENS), placeholder(TOKENS)], [placeholder(TOKENS)], None),
     r"input 'ids': axis 1 is declared more than once"),
])
def test_a_declaration_that_does_not_fit_the_arrays_is_one_clear_error(tmp_path, declared, message):
    samples = {"ids": np.zeros((1, 12), np.int64), "mask": np.ones((1, 12), bool)}
    with pytest.raises(ValueError, match=message):
        save_reference(reference_job(tmp_path, declared), samples, {"logits": np.zeros((1, 12, 100), np.float32)})
    assert not (tmp_path / "out" / NORMALIZED_SAMPLES).exists()


def test_a_programs_device_is_its_weights_and_cpu_without_any():
    from types import SimpleNamespace

    from runners.serving.variant_loader import program_device

    tensor = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    assert program_device(SimpleNamespace(state_dict={"w": tensor}, constants={})) == "cuda"
    assert program_device(SimpleNamespace(state_dict={}, constants={"c": tensor})) == "cuda"
    assert program_device(SimpleNamespace(state_dict={}, constants={"script_object": object()})) == "cpu"


def test_variants_loaded_under_the_budget_stay_loaded_and_the_rest_replace_each_other():
    in_use = [0]
    loads: list[str] = []

    def load(name: str, size: int):
        def loader() -> str:
            loads.append(name)
            in_use[0] += size
            return name
        return loader

    loaded = LastLoaded(lambda: in_use[0], keep_bytes=100)
    assert loaded.get(("a",), load("a", 40)) == "a" and loaded.get(("b",), load("b", 40)) == "b"
    assert loaded.get(("c",), load("c", 40)) == "c"  # 120 in use: c is only the last one loaded
    assert loaded.get(("d",), load("d", 0)) == "d"  # replaces c
    assert [loaded.get((name,), load(name, 0)) for name in "abdc"] == list("abdc")
    assert loads == ["a", "b", "c", "d", "c"]  # a and b were kept; c was loaded again
    # The default keeps one variant, as before.
    single = LastLoaded()
    for name in "aba":
        single.get((name,), load(name, 0))
    assert loads[-3:] == ["a", "b", "a"]


def test_a_runner_leaves_with_its_code_after_its_exit_handlers_ran():
    """runners/harness/main.py `leave`: the interpreter's teardown is skipped, a model's cleanup is not."""
    script = ("import atexit; from runners.harness.main import leave; "
              "atexit.register(lambda: print('cleaned up', flush=True)); print('result written'); leave(3)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 3
    assert done.stdout.splitlines() == ["result written", "cleaned up"]
