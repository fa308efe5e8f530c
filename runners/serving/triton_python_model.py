"""Triton Python-backend model that serves one nav-orch variant through its format's loader.

nav-orch copies this file as `MODEL/1/model.py` into a Triton model repository when the server
image lacks the variant's native backend (the CPU Triton image has only the Python backend), with
variant_loader.py beside it: the same loader that verified and profiled the variant. It runs inside
tritonserver's Python backend stub: standard library, numpy and the variant's framework only;
`triton_python_backend_utils` exists only inside the stub, so it is imported there.

The model's config.pbtxt says what to load, as string parameters:
  artifact   file name of the variant, next to this file
  loader     the format's loader (runners/contract/formats.py Loader): onnxruntime, torchscript, ...
  precision  fp32 | fp16 | bf16: floating inputs are cast to it for torch (as the runner did when
             it verified the variant); outputs go back to the dtypes the config declares.
  scalars    unbatched models only: a JSON list of the inputs the model takes as scalars. Triton's
             dims are never empty, so they arrive as [1]; scalar outputs leave as [1] likewise.
  warmup     a compiled variant's batch sizes (JSON list), each called once before the model is
             ready: it compiles at each size's first call.
"""
from __future__ import annotations

import json
import locale
import os
import time

import numpy as np

try:  # in nav-orch (the PyTriton server, the tests)
    from runners.serving.variant_loader import arrays_in, warm_up
except ImportError:  # in a Triton model folder, where variant_loader.py lies beside this file
    from variant_loader import arrays_in, warm_up  # type: ignore[import-not-found,no-redef]


def split_rows(arrays: list[np.ndarray], sizes: list[int]) -> list[list[np.ndarray]]:
    """Cut a batched run's outputs back into the requests that were stacked into it."""
    bounds = np.cumsum([0, *sizes])
    return [[array[bounds[i]:bounds[i + 1]] for array in arrays] for i in range(len(sizes))]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        # The stub embeds Python in the C locale of the server's container, whose files then read as
        # ASCII; inductor (a compiled variant compiles here) reads its UTF-8 kernel templates. The stub
        # serves this model alone.
        try:
            locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        except locale.Error:
            pass

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
        self.run = arrays_in(parameters["loader"], os.path.join(folder, parameters["artifact"]), device,
                             parameters.get("precision", "fp32"), self.input_names)
        sizes = json.loads(parameters.get("warmup", "[]"))
        self.warm_sizes = {int(size) for size in sizes}
        if sizes:
            started = time.monotonic()
            inputs = [([int(size) for size in spec["dims"]], pb_utils.triton_string_to_numpy(spec["data_type"]))
                      for spec in config["input"]]
            warmed = warm_up(self.run, inputs, sizes)
            print(f"nav-orch: {config['name']} warmed at batch sizes {warmed or 'none (dynamic axes)'} in "
                  f"{time.monotonic() - started:.1f} s", flush=True)

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
        # batching is for) when their shapes allow, each on its own otherwise. A compiled variant
        # compiles again at every batch size it has not seen (seconds each, on an H100): it stacks
        # only into the sizes it was warmed at.
        total = sum(request[0].shape[0] for request in inputs) if self.batched and inputs[0] else 0
        if self.batched and len(requests) > 1 and (not self.warm_sizes or total in self.warm_sizes) and all(
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
