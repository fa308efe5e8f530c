"""PyTriton serving without a server: what the host asks runners/serving/pytriton_server.py to serve (from the
Python-backend config of the Triton path), how its inference callable batches requests, and what
inplace.serve accepts. The real server is tested in test_e2e_pytriton.py and test_e2e_inplace.py."""
from __future__ import annotations

import numpy as np
import pytest

from orchestrator.errors import BadInput
from orchestrator.inplace.serve import Tensor, served
from orchestrator.results import VariantResult
from orchestrator.triton.pytriton import serve_spec
from orchestrator.triton.repository import deployment_for, model_config
from runners.contract.protocol import IOSpec, ServedModel, ServedTensor, TensorSpec
from runners.serving.pytriton_server import answer


def spec_for(tmp_path, io: IOSpec, max_batch_size: int):
    artifact = tmp_path / "variants" / "v" / "model.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"onnx")
    variant = VariantResult(name="onnx-fp32", format="onnx", precision="fp32", status="ok",
                            artifact="variants/v/model.onnx")
    config = model_config(deployment_for(variant, tmp_path, {"python"}), io, max_batch_size, [])
    return serve_spec(config, "/model/1/model.onnx", "cpu", "127.0.0.1")


def test_the_spec_follows_the_python_backend_config(tmp_path):
    io = IOSpec(inputs=[TensorSpec("image", "float32", [None, 3, None]), TensorSpec("step", "int64", [None])],
                outputs=[TensorSpec("logits", "float16", [None, 10])])
    spec = spec_for(tmp_path, io, 4)
    assert (spec.loader, spec.artifact, spec.precision, spec.device) == ("onnxruntime", "/model/1/model.onnx",
                                                                          "fp32", "cpu")
    assert spec.model.name == "onnx-fp32" and spec.model.max_batch_size == 4
    # Without the batch axis; a value per sample travels as [1] and reaches the model as [batch].
    assert spec.model.inputs == [ServedTensor("image", "float32", [3, -1]), ServedTensor("step", "int64", [1], [])]
    assert spec.model.outputs == [ServedTensor("logits", "float16", [10])]
    unbatched = spec_for(tmp_path / "u", IOSpec(inputs=[TensorSpec("t", "float32", [])],
                                                outputs=[TensorSpec("y", "float32", [5])], batch_axis=None), 4)
    assert unbatched.model.max_batch_size == 0
    assert unbatched.model.inputs == [ServedTensor("t", "float32", [1], [])]  # a scalar, as [1]


def model(max_batch_size: int, inputs: list[ServedTensor], outputs: list[ServedTensor]) -> ServedModel:
    return ServedModel("m", inputs, outputs, max_batch_size, "127.0.0.1", 1, 2)


def test_requests_that_arrive_together_run_as_one_batch_and_come_back_split():
    runs = []

    def run(arrays):
        runs.append([a.shape for a in arrays])
        x, step = arrays
        return [x * 2, step.astype(np.float32)]  # a per-sample value, as [batch]

    served_model = model(8, [ServedTensor("x", "float32", [3]), ServedTensor("step", "int64", [1], [])],
                         [ServedTensor("y", "float32", [3]), ServedTensor("s", "float32", [1])])
    infer = answer(run, served_model)
    requests = [{"x": np.ones((2, 3), np.float32), "step": np.array([[1], [2]])},
                {"x": np.full((1, 3), 5, np.float32), "step": np.array([[7]])}]
    first, second = infer(requests)
    assert runs == [[(3, 3), (3,)]]  # one run, and the [1] per sample reshaped away
    np.testing.assert_array_equal(first["y"], np.full((2, 3), 2))
    np.testing.assert_array_equal(second["y"], np.full((1, 3), 10))
    assert first["s"].shape == (2, 1) and second["s"].tolist() == [[7.0]]  # back in the declared dims
    assert first["y"].dtype == np.float32


def test_requests_of_different_shapes_run_one_by_one_and_a_wrong_output_count_is_an_error():
    runs = []

    def run(arrays):
        runs.append(arrays[0].shape)
        return [arrays[0].sum(axis=1)]

    infer = answer(run, model(8, [ServedTensor("x", "float32", [-1])], [ServedTensor("y", "float64", [1])]))
    answers = infer([{"x": np.ones((1, 2), np.float32)}, {"x": np.ones((1, 5), np.float32)}])
    assert runs == [(1, 2), (1, 5)] and [a["y"].tolist() for a in answers] == [[[2.0]], [[5.0]]]
    assert answers[0]["y"].dtype == np.float64
    infer = answer(lambda arrays: [arrays[0], arrays[0]], model(0, [ServedTensor("x", "float32", [2])],
                                                                [ServedTensor("y", "float32", [2])]))
    with pytest.raises(ValueError, match="the model returned 2 outputs, m declares 1"):
        infer([{"x": np.ones(2, np.float32)}])


def test_inplace_serve_tensors_are_checked():
    assert served(Tensor("ids", np.int64, (-1,))) == ServedTensor("ids", "int64", [-1])
    assert served(Tensor("scale", "float32", ())) == ServedTensor("scale", "float32", [1], [])
    with pytest.raises(BadInput, match="ids: 'words' is not a numpy dtype"):
        served(Tensor("ids", "words", (-1,)))
    with pytest.raises(BadInput, match=r"image: shape \(3, 0\) must hold sizes or -1"):
        served(Tensor("image", np.float32, (3, 0)))
