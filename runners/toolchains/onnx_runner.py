"""ONNX runner: verifies and profiles ONNX variants in ONNX Runtime, and, for an ONNX file
as the source model, runs the reference and the exports (framework `onnx`)."""
from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime as ort

from runners.contract.formats import FORMATS
from runners.contract.protocol import IOSpec, Job, JobResult, TensorSpec
from runners.harness.common import Handlers, Skip, key_by_names, load_npz, save_reference
from runners.harness.measure import (
    Timing,
    inputs_at,
    profile_result,
    profile_source,
    verification_result,
    verify_outputs,
)
from runners.serving.variant_loader import ONNX_DTYPES, load_onnx, onnx_feeds
from runners.toolchains.onnx_quantize import quantize_model, quantized_onnx


def versions() -> dict[str, str]:
    return {"onnxruntime": ort.__version__}


def verify(job: Job) -> JobResult:
    variant = load_onnx(job.inputs.artifact, job.device)
    reference_outputs = load_npz(job.inputs.reference)
    outputs = variant.run(None, onnx_feeds(variant, load_npz(job.inputs.samples)))
    if len(outputs) != len(reference_outputs):
        raise ValueError(f"the variant returned {len(outputs)} outputs, the source model {len(reference_outputs)}")
    named = dict(zip(reference_outputs, outputs))
    return verification_result(job, verify_outputs(named, reference_outputs, job.tolerances, job.budgets))


def timed_call(variant: ort.InferenceSession, job: Job, samples: dict[str, np.ndarray],
               batch_size: int) -> Callable[[], object]:
    """The one call of `variant` at `batch_size` that a profile or a comparison times."""
    return partial(variant.run, None, onnx_feeds(variant, inputs_at(samples, job.io, batch_size)))


def profile(job: Job, timing: Timing) -> JobResult:
    return profile_result(job, partial(timed_call, load_onnx(job.inputs.artifact, job.device), job,
                                       load_npz(job.inputs.samples)), timing)


def timed_candidate(job: Job, samples: dict[str, np.ndarray], batch_size: int,
                    stack: ExitStack) -> Callable[[], object]:
    """A comparison's candidate (its profile `job`), loaded; its one call at `batch_size` (see the
    torch runner's)."""
    return timed_call(load_onnx(job.inputs.artifact, job.device), job, samples, batch_size)


# --- an ONNX file as the source model ----------------------------------------------------------

def source_session(job: Job) -> ort.InferenceSession:
    """The source as written: graph optimizations off, so the reference is the graph's own
    arithmetic and the ORT_ENABLE_ALL variant is measured against it."""
    path = Path(job.inputs.model) / job.source().file
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ORT raises its own types for unreadable files
        # ORT names the file by its path inside the container, which means nothing to the user.
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0].replace(str(path), path.name)
        raise ValueError(f"{path.name} is not a loadable ONNX model: {detail}") from None


def graph_dims(shape: list) -> list[Optional[int]]:
    """ONNX Runtime's dims (ints, symbolic names or None) with None for every dynamic one."""
    return [dim if isinstance(dim, int) and dim >= 0 else None for dim in shape]


def match_samples(model: ort.InferenceSession, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Key the samples by the graph's input names (by name where all match, else in order) and
    check each against the graph's dtype and fixed dims, so a mismatch is one clear line."""
    inputs = model.get_inputs()
    samples = key_by_names(samples, [spec.name for spec in inputs], "the ONNX model")
    for spec in inputs:
        array = samples[spec.name]
        expected = ONNX_DTYPES.get(spec.type)
        if expected is None:
            raise ValueError(f"input {spec.name!r} is {spec.type}, which nav-orch cannot feed from .npz samples")
        if array.dtype != np.dtype(expected):
            raise ValueError(f"input {spec.name!r}: the model takes {expected}, the samples hold {array.dtype}")
        dims = graph_dims(spec.shape)
        if len(dims) != array.ndim or any(d is not None and d != n for d, n in zip(dims, array.shape)):
            shown = ["?" if d is None else d for d in dims]
            raise ValueError(f"input {spec.name!r}: the model takes shape {shown}, "
                             f"the samples hold {list(array.shape)}")
    return samples


def reference(job: Job) -> JobResult:
    model = source_session(job)
    samples = match_samples(model, load_npz(job.inputs.samples))
    output_names = [spec.name for spec in model.get_outputs()]
    outputs = dict(zip(output_names, model.run(output_names, samples)))
    io = IOSpec(
        inputs=[TensorSpec(s.name, str(samples[s.name].dtype), graph_dims(s.shape)) for s in model.get_inputs()],
        outputs=[TensorSpec(s.name, str(outputs[s.name].dtype), graph_dims(s.shape)) for s in model.get_outputs()],
    )
    result = save_reference(job, samples, outputs, io)
    result.profile = profile_source(
        job, lambda size: partial(model.run, output_names, inputs_at(samples, result.io, size)))
    return result


def export(job: Job) -> JobResult:
    """The ONNX variant (ONNX Runtime with every graph optimization, see variant_loader.load_onnx) and the
    intermediate model.onnx of a TensorRT build are the source file itself; an fp16 ONNX
    variant is converted with onnxconverter-common where the image has it, an int8 one quantized
    by ONNX Runtime (runners/toolchains/onnx_quantize.py)."""
    if job.format not in ("onnx", "tensorrt"):
        raise Skip(f"an ONNX model cannot be exported to {job.format}")
    source = Path(job.inputs.model) / job.source().file
    target = Path(job.output_dir) / FORMATS[job.format].export_file
    check_single_file(source)
    # TensorRT lowers precision itself (builder flags) from the fp32 graph: its input is the source.
    if quantized_onnx(job):
        quantize_model(job, source, target)
    elif job.format == "onnx" and job.precision != "fp32":
        convert_precision(source, target, job.precision)
    else:
        shutil.copyfile(source, target)
    return JobResult(job.id, job.kind, "ok", artifact=target.name)


def check_single_file(source: Path) -> None:
    """A model whose weights lie in external data files is more than the one file that is
    copied: say so instead of handing on a model that cannot load."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(source), load_external_data=False)
    if any(uses_external_data(tensor) for tensor in model.graph.initializer):
        raise Skip(f"{source.name} keeps its weights in external data files, which nav-orch does not carry yet")


def convert_precision(source: Path, target: Path, precision: str) -> None:
    if precision != "fp16":
        raise Skip(f"ONNX Runtime has no {precision} kernels for most operators")
    if importlib.util.find_spec("onnxconverter_common") is None:
        raise Skip("an fp16 variant of an ONNX model needs onnxconverter-common, which this runner image lacks")
    import onnx
    from onnxconverter_common import float16

    # keep_io_types: fp32 in and out, as the samples and the reference are; fp16 inside.
    converted = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(converted, str(target))


def handlers(timing: Timing) -> Handlers:
    """This runner's jobs, for one runner process."""
    return {"reference": reference, "export": export, "verify": verify,
            "profile": partial(profile, timing=timing)}
