"""Reading ONNX files and profile targets as MODEL (orchestrator/model_ref.py), and the fixed-batch check."""
from __future__ import annotations

import pytest

from orchestrator.containers.images import image_for
from orchestrator.errors import BadInput
from orchestrator.model_ref import parse_function, parse_model
from orchestrator.run.pipeline import check_fixed_batch
from runners.contract.protocol import IOSpec, TensorSpec


def test_an_onnx_file_is_framework_onnx_run_in_the_pytorch_image(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not checked on the host")
    ref = parse_model(str(model), [], None)
    assert (ref.form, ref.framework, ref.path) == ("onnx", "onnx", model.resolve())
    assert ref.source().file == "model.onnx"
    assert image_for(ref.framework, "cpu") == "nav-orch/pytorch:cpu"
    assert parse_model(str(model), [], "onnx").framework == "onnx"


def test_an_onnx_file_with_another_framework_or_model_args_is_refused(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    with pytest.raises(BadInput, match="run as framework onnx, not torch"):
        parse_model(str(model), [], "torch")
    with pytest.raises(BadInput, match="--model-arg"):
        parse_model(str(model), ["a=1"], None)


def test_unknown_suffix_names_onnx_among_the_accepted_files(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"")
    with pytest.raises(BadInput, match=r"an ONNX model \(\.onnx\)"):
        parse_model(str(weights), [], None)


def test_a_function_defaults_to_the_torch_image_and_framework_overrides(tmp_path):
    source = tmp_path / "fn.py"
    source.write_text("def predict(x):\n    return x\n")
    ref = parse_function(f"{source}:predict", None)
    assert (ref.form, ref.factory, ref.framework) == ("function", "predict", "torch")
    assert parse_function(f"{source}:predict", "onnx").framework == "onnx"


@pytest.mark.parametrize("text, message", [("fn.py", "expected file.py:function"),
                                           ("fn.py:1x", "expected file.py:function"),
                                           ("missing.py:f", "no such file")])
def test_bad_function_references_are_bad_input(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fn.py").write_text("def f(x):\n    return x\n")
    with pytest.raises(BadInput, match=message):
        parse_function(text, None)


def test_a_fixed_batch_axis_allows_only_its_own_batch_size():
    io = IOSpec(inputs=[TensorSpec("x", "float32", [1, 16])], outputs=[TensorSpec("y", "float32", [1, 4])])
    check_fixed_batch(io, [1])
    with pytest.raises(BadInput, match="fixed batch of 1 .* pass --batch-sizes 1"):
        check_fixed_batch(io, [1, 8])
    dynamic = IOSpec(inputs=[TensorSpec("x", "float32", [None, 16])], outputs=[])
    check_fixed_batch(dynamic, [1, 8, 64])
