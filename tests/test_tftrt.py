"""The TF-TRT decisions that need no TensorFlow (runners/toolchains/tensorrt_build.py): which shapes get an
engine, and how a conversion or a call that would run plain TensorFlow shows."""
from __future__ import annotations

from runners.toolchains.tensorrt_build import (
    TFTRT_FALLBACK_MESSAGE,
    TFTRT_NATIVE_SEGMENT_ENV,
    tftrt_build_batches,
    tftrt_engine_problem,
    tftrt_fallback_reason,
)


def test_engines_are_built_for_the_verification_batch_and_every_profiled_size():
    # Samples of 3 rows, profiled at 1, 8 and 64: without 3, verification found no profile and
    # TF-TRT ran the segment in TensorFlow.
    assert tftrt_build_batches(3, [1, 8, 64]) == [3, 1, 8, 64]
    # Each shape once (one optimization profile each with the "Optimal" strategy).
    assert tftrt_build_batches(8, [1, 8, 64]) == [8, 1, 64]
    assert tftrt_build_batches(4, []) == [4]


def test_a_conversion_without_an_engine_op_is_no_tftrt_variant():
    assert tftrt_engine_problem(["Placeholder", "TRTEngineOp", "Identity"]) is None
    problem = tftrt_engine_problem(["Placeholder", "MatMul", "Identity"])
    assert problem is not None and "no TRTEngineOp" in problem
    assert tftrt_engine_problem([]) is not None


def test_a_call_that_would_fall_back_to_tensorflow_fails_with_the_inputs_it_was_given():
    # The names TF-TRT reads and writes (trt_engine_op.cc; TF's trt_convert_test sets the same).
    assert TFTRT_NATIVE_SEGMENT_ENV == "TF_TRT_ALLOW_ENGINE_NATIVE_SEGMENT_EXECUTION"
    message = f"{TFTRT_FALLBACK_MESSAGE} [Op:__inference_signature_wrapper_1234]"
    reason = tftrt_fallback_reason(message, {"x": (3, 16), "mask": (3, 16)})
    assert reason is not None
    assert "plain TensorFlow" in reason and "x [3, 16], mask [3, 16]" in reason
    profiled = tftrt_fallback_reason(message, {"x": (3, 16)}, [1, 8, 64])
    assert profiled is not None and "x [3, 16]; at batch sizes 1, 8, 64" in profiled


def test_other_failures_keep_their_own_message():
    assert tftrt_fallback_reason("Out of GPU memory for execution context", {"x": (3, 16)}) is None
