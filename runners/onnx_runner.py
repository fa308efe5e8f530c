"""ONNX runner: verifies and profiles ONNX variants in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from runners.main import load_npz
from runners.measure import batch_of, time_calls, verification_result, verify_outputs
from runners.protocol import Job, JobResult


def versions() -> dict[str, str]:
    return {"onnxruntime": ort.__version__}


def session(job: Job) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CUDAExecutionProvider"] if job.device.startswith("cuda") else []
    return ort.InferenceSession(job.inputs["artifact"], options, providers=providers + ["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = sess.get_inputs()
    if len(inputs) != len(samples):
        raise ValueError(f"the ONNX model takes {len(inputs)} inputs, the samples hold {len(samples)}")
    return {spec.name: array for spec, array in zip(inputs, samples.values())}


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
