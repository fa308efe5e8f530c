"""runners/serving/triton_python_model.py outside Triton: a stand-in for triton_python_backend_utils and a
stand-in loader check how requests the dynamic batcher merged are run and answered."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from runners.serving import triton_python_model


class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def start(monkeypatch, max_batch_size: int, parameters: dict[str, str]):
    """The model as the Python backend starts it, with a stand-in runtime that doubles its first
    input (and records the shapes it was given)."""
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor, pb.InferenceResponse, pb.TritonError = Tensor, Response, str
    pb.triton_string_to_numpy = lambda name: {"TYPE_FP32": np.float32}[name]
    pb.get_input_tensor_by_name = lambda request, name: Tensor(name, request[name])
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    calls = []

    def arrays_in(loader, path, device, precision, input_names):
        assert (loader, path.endswith("1/model.onnx"), device, precision) == ("onnxruntime", True, "cpu", "fp32")

        def run(arrays):
            calls.append([a.shape for a in arrays])
            if np.isnan(arrays[0]).any():
                raise ValueError("NaN in")
            return [arrays[0].astype(np.float64) * 2]
        return run

    monkeypatch.setattr(triton_python_model, "arrays_in", arrays_in)
    instance = triton_python_model.TritonPythonModel()
    parameters = {"artifact": "model.onnx", "loader": "onnxruntime", "precision": "fp32", **parameters}
    config = {"name": "m", "max_batch_size": max_batch_size,
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["3"]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32"}],
              "parameters": {key: {"string_value": value} for key, value in parameters.items()}}
    instance.initialize({"model_config": json.dumps(config), "model_repository": "/models/m", "model_version": "1",
                         "model_instance_kind": "CPU"})
    return instance, calls


@pytest.fixture
def model(monkeypatch):
    return start(monkeypatch, 8, {})


def test_merged_requests_run_as_one_batch_and_are_split_back(model):
    instance, calls = model
    requests = [{"x": np.full((n, 3), n, dtype=np.float32)} for n in (1, 2, 3)]
    responses = instance.execute(requests)
    assert calls == [[(6, 3)]]
    for n, response in zip((1, 2, 3), responses):
        (tensor,) = response.output_tensors
        assert tensor.name == "y" and tensor.array.dtype == np.float32
        np.testing.assert_array_equal(tensor.array, np.full((n, 3), 2 * n))


def test_a_failing_request_gets_its_error_and_the_others_their_answers(model):
    instance, calls = model
    bad = np.full((1, 3), np.nan, dtype=np.float32)
    responses = instance.execute([{"x": np.ones((1, 3), np.float32)}, {"x": bad}])
    assert len(calls) == 3  # the merged run failed: each request on its own
    assert responses[0].error is None and responses[0].output_tensors[0].array.shape == (1, 3)
    assert responses[1].error == "ValueError: NaN in" and responses[1].output_tensors == []


def test_split_rows():
    rows = triton_python_model.split_rows([np.arange(6)], [1, 2, 3])
    assert [r[0].tolist() for r in rows] == [[0], [1, 2], [3, 4, 5]]


def test_an_unbatched_scalar_reaches_the_model_as_a_scalar_and_leaves_as_one_value(monkeypatch):
    instance, calls = start(monkeypatch, 0, {"scalars": '["x"]'})
    (response,) = instance.execute([{"x": np.array([1.5], dtype=np.float32)}])
    assert calls == [[()]]
    (tensor,) = response.output_tensors
    assert tensor.array.shape == (1,) and tensor.array.tolist() == [3.0]


def test_a_compiled_variant_stacks_requests_only_into_the_batch_sizes_it_was_warmed_at(monkeypatch):
    # A compiled graph compiles again at each batch size it has not seen: seconds a request on a GPU.
    monkeypatch.setattr(triton_python_model, "warm_up", lambda run, inputs, sizes: sizes)
    instance, calls = start(monkeypatch, 8, {"warmup": "[1, 4]"})
    four = instance.execute([{"x": np.ones((1, 3), np.float32)} for _ in range(4)])
    assert calls == [[(4, 3)]] and [r.output_tensors[0].array.shape for r in four] == [(1, 3)] * 4
    calls.clear()
    two = instance.execute([{"x": np.ones((1, 3), np.float32)} for _ in range(2)])
    assert calls == [[(1, 3)], [(1, 3)]] and all(r.error is None for r in two)
