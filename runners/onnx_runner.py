"""ONNX runner: verifies and profiles ONNX variants in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from runners.common import Skip, load_npz
from runners.measure import batch_of, time_calls, verification_result, verify_outputs
from runners.protocol import Job, JobResult


def versions() -> dict[str, str]:
    return {"onnxruntime": ort.__version__}


def session(job: Job) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if job.device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            # Timing a GPU run's variant on the CPU would mislead the selection.
            raise Skip(f"onnxruntime {ort.__version__} here has no CUDA execution provider")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(job.inputs["artifact"], options, providers=providers)


def cast_to_model(sess: ort.InferenceSession, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed half-precision variants half-precision inputs."""
    types = {"tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}
    return {spec.name: batch[spec.name].astype(types[spec.type]) if spec.type in types else batch[spec.name]
            for spec in sess.get_inputs()}


def feeds(sess: ort.InferenceSession, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = sess.get_inputs()
    if len(inputs) != len(samples):
        raise ValueError(f"the ONNX model takes {len(inputs)} inputs, the samples hold {len(samples)}")
    return cast_to_model(sess, {spec.name: array for spec, array in zip(inputs, samples.values())})


def verify(job: Job) -> JobResult:
    sess = session(job)
    reference_outputs = load_npz(job.inputs["reference"])
    outputs = sess.run(None, feeds(sess, load_npz(job.inputs["samples"])))
    if len(outputs) != len(reference_outputs):
        raise ValueError(f"the variant returned {len(outputs)} outputs, the source model {len(reference_outputs)}")
    return verification_result(job, verify_outputs(dict(zip(reference_outputs, outputs)), reference_outputs, job.tolerances))


def profile(job: Job) -> JobResult:
    sess = session(job)
    samples = load_npz(job.inputs["samples"])
    entries = []
    for batch_size in job.batch_sizes:
        batch = feeds(sess, batch_of(samples, batch_size))
        entries.append(time_calls(lambda: sess.run(None, batch), job.profiling, batch_size))
    return JobResult(job.id, job.kind, "ok", profile=entries)


HANDLERS = {"verify": verify, "profile": profile}
