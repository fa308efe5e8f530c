"""Triton Python-backend model that serves one nav-orch variant in its own runtime.

nav-orch copies this file as `MODEL/1/model.py` into a Triton model repository when the server
image lacks the variant's native backend (the CPU Triton image has only the Python backend).
It runs inside tritonserver's Python backend stub, next to the other runner code in spirit:
standard library, numpy and the variant's framework only; `triton_python_backend_utils` exists
only inside the stub, so it is imported there.

The model's config.pbtxt says what to load, as string parameters:
  artifact   file name of the variant, next to this file
  runtime    onnxruntime | torchscript | exported-program
  precision  fp32 | fp16 | bf16: floating inputs are cast to it for torch (as the runner did when
             it verified the variant); outputs go back to the dtypes the config declares.
  scalars    unbatched models only: a JSON list of the inputs the model takes as scalars. Triton's
             dims are never empty, so they arrive as [1]; scalar outputs leave as [1] likewise.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

Run = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def load_onnxruntime(path: str, device: str, precision: str, input_names: list[str]) -> Run:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    gpu = [("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)})]
    providers = (gpu if device.startswith("cuda") else []) + ["CPUExecutionProvider"]
    session = ort.InferenceSession(path, options, providers=providers)
    specs = session.get_inputs()
    if len(specs) != len(input_names):
        raise ValueError(f"{os.path.basename(path)} takes {len(specs)} inputs, the config declares {len(input_names)}")
    # Feed by name where the names agree (they do for nav-orch's exports), else by position.
    by_name = {spec.name: spec for spec in specs}
    ordered = [by_name[name] for name in input_names] if set(by_name) == set(input_names) else list(specs)
    kinds = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        feeds = {}
        for spec, array in zip(ordered, arrays):
            wanted = kinds.get(spec.type)
            feeds[spec.name] = array.astype(wanted) if wanted is not None and array.dtype != wanted else array
        return session.run(None, feeds)

    return run


def load_torch(path: str, device: str, precision: str, runtime: str) -> Run:
    import torch

    if runtime == "exported-program":
        module = torch.export.load(path).module()
        if device != "cpu":
            module = module.to(device)
    else:
        module = torch.jit.load(path, map_location=device).eval()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

    def flatten(outputs) -> list:
        if isinstance(outputs, torch.Tensor):
            return [outputs]
        if isinstance(outputs, dict):
            return list(outputs.values())
        if isinstance(outputs, (tuple, list)):
            return list(outputs)
        raise TypeError(f"the model returned {type(outputs).__name__}; expected tensors")

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        tensors = []
        for array in arrays:
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
            tensors.append(tensor.to(dtype) if tensor.dtype.is_floating_point else tensor)
        with torch.inference_mode():
            outputs = flatten(module(*tensors))
        # numpy has no bfloat16: floating outputs leave as float32, cast to the config's dtype later.
        return [t.detach().float().cpu().numpy() if t.dtype.is_floating_point else t.detach().cpu().numpy()
                for t in outputs]

    return run


def load(runtime: str, path: str, device: str, precision: str, input_names: list[str]) -> Run:
    if runtime == "onnxruntime":
        return load_onnxruntime(path, device, precision, input_names)
    if runtime in ("torchscript", "exported-program"):
        return load_torch(path, device, precision, runtime)
    raise ValueError(f"unknown runtime {runtime!r} (onnxruntime, torchscript, exported-program)")


def split_rows(arrays: list[np.ndarray], sizes: list[int]) -> list[list[np.ndarray]]:
    """Cut a batched run's outputs back into the requests that were stacked into it."""
    bounds = np.cumsum([0, *sizes])
    return [[array[bounds[i]:bounds[i + 1]] for array in arrays] for i in range(len(sizes))]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        # The instance's device as Triton placed it (instance_group): "cpu" or "cuda:N".
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu"
        self.batched = config.get("max_batch_size", 0) > 0
        self.input_names = [spec["name"] for spec in config["input"]]
        self.scalars = set(json.loads(parameters.get("scalars", "[]")))
        self.outputs = [(spec["name"], pb_utils.triton_string_to_numpy(spec["data_type"])) for spec in config["output"]]
        self.run = load(parameters["runtime"], os.path.join(folder, parameters["artifact"]), device,
                        parameters.get("precision", "fp32"), self.input_names)

    def _respond(self, outputs: list[np.ndarray]):
        if len(outputs) != len(self.outputs):
            raise ValueError(f"the model returned {len(outputs)} outputs, the config declares {len(self.outputs)}")
        # atleast_1d: a scalar output leaves as [1], the dims its config declares (never empty).
        tensors = [self.pb.Tensor(name, np.ascontiguousarray(np.atleast_1d(array.astype(dtype, copy=False))))
                   for (name, dtype), array in zip(self.outputs, outputs)]
        return self.pb.InferenceResponse(output_tensors=tensors)

    def input(self, request, name: str) -> np.ndarray:
        """A request's input as the model takes it (a scalar arrives as [1])."""
        array = self.pb.get_input_tensor_by_name(request, name).as_numpy()
        return array.reshape(()) if name in self.scalars else array

    def execute(self, requests: list) -> list:
        inputs = [[self.input(request, name) for name in self.input_names] for request in requests]
        # The dynamic batcher hands over several requests at once: run them as one batch (what
        # batching is for) when their shapes allow, each on its own otherwise.
        if self.batched and len(requests) > 1 and all(
                a.shape[1:] == b.shape[1:] for request in inputs for a, b in zip(request, inputs[0])):
            try:
                stacked = [np.concatenate(column) for column in zip(*inputs)]
                sizes = [request[0].shape[0] for request in inputs]
                return [self._respond(rows) for rows in split_rows(self.run(stacked), sizes)]
            except Exception:  # noqa: BLE001 - fall back to one run per request, which reports errors
                pass
        responses = []
        for arrays in inputs:
            try:
                responses.append(self._respond(self.run(arrays)))
            except Exception as error:  # noqa: BLE001 - an error answers its request, the server goes on
                responses.append(self.pb.InferenceResponse(
                    output_tensors=[], error=self.pb.TritonError(f"{type(error).__name__}: {error}")))
        return responses

    def finalize(self) -> None:
        del self.run  # the model goes at unload
