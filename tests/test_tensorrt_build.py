"""The TensorRT build decisions that need no TensorRT (runners/toolchains/tensorrt_build.py)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import pytest

from runners.contract.protocol import AxisRange, IOSpec, TensorSpec
from runners.harness.common import Skip
from runners.toolchains.tensorrt_build import (
    CALIBRATION_STEP,
    GIB,
    MAX_WORKSPACE,
    MIN_WORKSPACE,
    TRACE_BATCH,
    BatchRange,
    PrecisionFlags,
    ProgramDim,
    ShapeRange,
    attach_timing_cache,
    batch_range,
    builder_precision,
    calibration_shapes,
    declared_ranges,
    example_batch,
    input_shapes,
    merge_into_file,
    modelopt_settings,
    network_flags,
    onnx_export_precision,
    plan_precision_source,
    precision_flags,
    precision_source,
    profile_shapes,
    program_dims,
    timing_cache_path,
    workspace_limit,
)

FLAGS_10 = {"FP16", "BF16", "TF32", "INT8", "REFIT"}
# TensorRT 11 removed every weak-typing flag (NVIDIA's "Removed Python APIs and Replacements").
FLAGS_11 = {"TF32", "REFIT", "DEBUG", "SPARSE_WEIGHTS"}
CREATION_FLAGS = {"EXPLICIT_BATCH", "STRONGLY_TYPED"}


def test_batch_range_covers_the_samples_and_every_profiled_size_and_tunes_for_the_largest():
    assert batch_range(8, [1, 8, 64]) == BatchRange(min=1, opt=64, max=64)
    # Verification runs the samples' own batch, outside the profiled sizes here.
    assert batch_range(3, [4, 16]) == BatchRange(min=3, opt=16, max=16)
    assert batch_range(128, [1, 8]) == BatchRange(min=1, opt=8, max=128)
    assert batch_range(5, []) == BatchRange(min=5, opt=5, max=5)


def test_profile_shapes_vary_only_the_batch_axis():
    shapes = profile_shapes([-1, 3, 224, 224], (8, 3, 224, 224), BatchRange(1, 64, 64))
    assert shapes == ShapeRange(min=(1, 3, 224, 224), opt=(64, 3, 224, 224), max=(64, 3, 224, 224))


def test_dynamic_axes_beyond_the_batch_take_the_samples_size():
    shapes = profile_shapes([-1, -1], (4, 128), BatchRange(1, 8, 16))
    assert shapes == ShapeRange(min=(1, 128), opt=(8, 128), max=(16, 128))


def test_a_static_input_needs_no_profile_and_a_fixed_batch_stays_fixed():
    assert profile_shapes([8, 16], (8, 16), BatchRange(1, 8, 8)) is None
    assert profile_shapes([1, -1], (1, 7), BatchRange(1, 1, 1)) == ShapeRange((1, 7), (1, 7), (1, 7))


@pytest.mark.parametrize("dims, shape, message", [
    ([-1, 16], (4, 16, 1), "rank 2"),
    ([-1, 16], (4, 32), "axis 1 is 16 in the network, 32 in the samples"),
])
def test_profile_shapes_say_where_the_samples_do_not_fit(dims, shape, message):
    with pytest.raises(ValueError, match=message):
        profile_shapes(dims, shape, BatchRange(1, 4, 4), name="x")


TOKENS = AxisRange(axis=1, min=1, typical=8, max=64)


def test_a_declared_axis_spans_its_range_and_tunes_for_its_typical_size():
    # A decoder without a batch axis, called with 1 to 64 tokens (the samples hold 12).
    shapes = profile_shapes([1, -1], (1, 12), None, "ids", batch_axis=None, ranges=[TOKENS])
    assert shapes == ShapeRange(min=(1, 1), opt=(1, 8), max=(1, 64))


def test_without_a_batch_axis_an_undeclared_dynamic_axis_takes_the_samples_size():
    shapes = profile_shapes([-1, -1, 512], (1, 12, 512), None, "hidden", batch_axis=None, ranges=[TOKENS])
    assert shapes == ShapeRange(min=(1, 1, 512), opt=(1, 8, 512), max=(1, 64, 512))
    # The samples' size, never a batch range: axis 0 is no batch here, whatever `batches` says.
    assert profile_shapes([-1, 4], (2, 4), BatchRange(1, 64, 64), batch_axis=None) == ShapeRange((2, 4), (2, 4), (2, 4))


def test_a_unet_called_with_a_static_batch_of_2_needs_no_profile():
    assert profile_shapes([2, 4, 64, 64], (2, 4, 64, 64), None, "latent", batch_axis=None) is None
    assert input_shapes([2, 4, 64, 64], (2, 4, 64, 64), None, batch_axis=None) == ShapeRange(
        (2, 4, 64, 64), (2, 4, 64, 64), (2, 4, 64, 64))


def test_a_batch_model_may_declare_further_dynamic_axes():
    shapes = profile_shapes([-1, -1], (4, 12), BatchRange(1, 8, 16), ranges=[TOKENS])
    assert shapes == ShapeRange(min=(1, 1), opt=(8, 8), max=(16, 64))


@pytest.mark.parametrize("dims, shape, ranges, batch_axis, message", [
    ([1, 12], (1, 12), [TOKENS], None, "axis 1 is fixed at 12 in the network, but declared dynamic over 1..64"),
    ([1, -1], (1, 12), [AxisRange(2, 1, 8, 64)], None, "declared dynamic axis 2 is outside its rank 2"),
    ([2, -1], (3, 4), [], None, "axis 0 is 2 in the network, 3 in the samples"),
])
def test_a_declaration_the_network_cannot_take_is_an_error(dims, shape, ranges, batch_axis, message):
    with pytest.raises(ValueError, match=message):
        profile_shapes(dims, shape, None, "x", batch_axis=batch_axis, ranges=ranges)


def test_input_shapes_make_the_same_decision_from_the_references_shapes():
    # Torch-TensorRT: the reference's shape (None where dynamic) stands for the network's dims.
    assert input_shapes([None, 3, 224, 224], (8, 3, 224, 224), BatchRange(1, 64, 64)) == profile_shapes(
        [-1, 3, 224, 224], (8, 3, 224, 224), BatchRange(1, 64, 64))
    assert input_shapes([1, None], (1, 12), None, [TOKENS], None) == ShapeRange((1, 1), (1, 8), (1, 64))
    # A static input of a batch model (a scalar, say) keeps its shape.
    assert input_shapes([], (), BatchRange(1, 8, 8)) == ShapeRange((), (), ())


def test_declared_ranges_match_network_inputs_by_name_else_in_order():
    specs = [TensorSpec("ids", "int64", [1, None], [TOKENS]), TensorSpec("mask", "bool", [1, None], [TOKENS])]
    assert declared_ranges(specs, ["mask", "ids"]) == {"mask": [TOKENS], "ids": [TOKENS]}
    assert declared_ranges(specs[:1] + [TensorSpec("past", "float32", [4])], ["input_0", "input_1"]) == {
        "input_0": [TOKENS], "input_1": []}
    with pytest.raises(ValueError, match=r"network's inputs \(tokens\) do not match the reference's \(ids, mask\)"):
        declared_ranges(specs, ["tokens"])
    # Nothing declared (a batch model): no ranges, however the network names its inputs.
    assert declared_ranges([TensorSpec("x", "float32", [None, 4])], ["a", "b"]) == {"a": [], "b": []}


def test_fp32_turns_tf32_off_and_sets_nothing():
    flags = precision_flags("fp32", FLAGS_10, True, (9, 0), "10.13.3")
    assert flags.set == () and flags.clear == ("TF32",)


def test_half_precisions_set_their_builder_flag():
    assert precision_flags("fp16", FLAGS_10, True, (9, 0), "10.13.3").set == ("FP16",)
    assert precision_flags("bf16", FLAGS_10, None, (8, 0), "10.13.3").set == ("BF16",)


@pytest.mark.parametrize("precision, available, fast_fp16, capability, reason", [
    ("fp16", FLAGS_10, False, (6, 1), "no fast fp16"),
    ("bf16", FLAGS_10, None, (7, 5), "compute capability 8.0 or later; this one is 7.5"),
    ("fp16", {"TF32"}, None, (9, 0), "TensorRT 11.0.0 has no FP16 builder flag"),
    ("bf16", {"FP16", "TF32"}, True, (9, 0), "no BF16 builder flag"),
])
def test_unsupported_precisions_are_skipped_with_the_reason(precision, available, fast_fp16, capability, reason):
    with pytest.raises(Skip, match=reason):
        precision_flags(precision, available, fast_fp16, capability, "11.0.0")


def test_workspace_is_half_the_free_memory_within_bounds():
    assert workspace_limit(80 * GIB) == MAX_WORKSPACE
    assert workspace_limit(4 * GIB) == 2 * GIB
    assert workspace_limit(100 << 20) == MIN_WORKSPACE


def test_timing_cache_lives_in_the_run_cache_per_version_and_gpu_else_beside_the_engine():
    path = timing_cache_path("/nav/cache/tensorrt", "/nav/io/3", "10.13.3.9", "NVIDIA H100 80GB HBM3")
    assert str(path) == "/nav/cache/tensorrt/timing-10.13.3.9-NVIDIA-H100-80GB-HBM3.cache"
    assert str(timing_cache_path(None, "/nav/io/3", "10.13.3.9", "NVIDIA H100")) == "/nav/io/3/timing.cache"


def test_the_batch_range_follows_the_models_batch_axis_and_none_without_one():
    from runners.contract.protocol import IOSpec
    from runners.toolchains.tensorrt_build import BatchRange, batch_range_of

    assert batch_range_of(None, (4, 3), [1, 8]) == BatchRange(1, 8, 8)
    assert batch_range_of(IOSpec(inputs=[], outputs=[], batch_axis=1), (3, 2), [16]) == BatchRange(2, 16, 16)
    assert batch_range_of(IOSpec(inputs=[], outputs=[], batch_axis=None), (2, 4, 8, 8), [1]) is None


# --- the TensorRT API generation: where a plan's precision comes from ------------------------------

def test_the_pinned_tensorrt_sets_half_precision_with_builder_flags_on_an_fp32_export():
    # NGC 25.10 ships TensorRT 10.13.3: this decision changes only with a deliberate bump.
    assert precision_source("10.13.3.9", FLAGS_10) == "builder-flags"
    assert onnx_export_precision("fp16", "builder-flags") == "fp32"
    assert onnx_export_precision("bf16", "builder-flags") == "fp32"


@pytest.mark.parametrize("version, flags", [
    ("11.0.0.114", FLAGS_11),
    ("11.4.1", FLAGS_10),  # the version alone decides: 11 has no weak typing, whatever is listed
    ("10.13.3", FLAGS_11),  # no FP16 flag (TensorRT-RTX): no weak typing either
    ("unknown", FLAGS_11),
])
def test_without_the_half_precision_flags_the_networks_types_decide(version, flags):
    assert precision_source(version, flags) == "network-types"
    assert onnx_export_precision("fp16", "network-types") == "fp16"
    assert onnx_export_precision("bf16", "network-types") == "bf16"


def test_an_unreadable_version_with_the_flags_keeps_builder_flags():
    assert precision_source("unknown", FLAGS_10) == "builder-flags"


@pytest.mark.parametrize("version, source, expected", [
    ("8.6.1", "builder-flags", ("EXPLICIT_BATCH",)),
    ("10.13.3", "builder-flags", ()),
    ("10.13.3", "network-types", ("STRONGLY_TYPED",)),  # 10.x opts in to strong typing
    ("11.0.0", "network-types", ()),  # 11 is strongly typed whatever it is given
])
def test_network_creation_flags_follow_the_version_and_the_precision_source(version, source, expected):
    assert network_flags(version, source, CREATION_FLAGS) == expected
    assert network_flags(version, source, set()) == ()


def test_a_strongly_typed_build_sets_no_precision_flag_where_the_export_holds_the_precision():
    assert builder_precision("fp16", "network-types", FLAGS_11, {"FLOAT", "HALF", "INT64"}, None, (9, 0),
                             "11.0.0") == PrecisionFlags()
    assert builder_precision("bf16", "network-types", FLAGS_11, {"BF16"}, None, (8, 0), "11.0.0") == PrecisionFlags()
    assert builder_precision("fp32", "network-types", FLAGS_11, {"FLOAT"}, None, (9, 0), "11.0.0") == PrecisionFlags(
        clear=("TF32",))


@pytest.mark.parametrize("precision, types, capability, reason", [
    # An fp32 export built strongly typed would be an fp32 plan under an fp16 name: skipped, said why.
    ("fp16", {"FLOAT", "INT64"}, (9, 0), "strongly typed networks only .* fp16 plan needs an ONNX export in fp16"),
    ("bf16", {"FLOAT", "HALF"}, (9, 0), "no BF16 builder flag.* bf16 plan needs an ONNX export in bf16"),
    ("bf16", {"BF16"}, (7, 5), "compute capability 8.0 or later; this one is 7.5"),
])
def test_a_strongly_typed_half_precision_plan_without_its_type_is_skipped_with_the_reason(
        precision, types, capability, reason):
    with pytest.raises(Skip, match=reason):
        builder_precision(precision, "network-types", FLAGS_11, types, None, capability, "11.0.0")


def test_builder_flags_are_the_weak_typing_decision():
    assert builder_precision("fp16", "builder-flags", FLAGS_10, (), True, (9, 0), "10.13.3") == PrecisionFlags(
        set=("FP16",))
    # The network's types do not matter there: TensorRT lowers the fp32 network itself.
    assert builder_precision("bf16", "builder-flags", FLAGS_10, {"FLOAT"}, None, (8, 0), "10.13.3") == PrecisionFlags(
        set=("BF16",))


# --- int8 and fp8: explicit quantization (Q/DQ) -----------------------------------------------------

@pytest.mark.parametrize("version, flags", [
    ("10.13.3.9", FLAGS_10 | {"FP8"}),  # NGC 25.10: TensorRT 10 still has INT8 and FP8 flags, unused here
    ("11.0.0.114", FLAGS_11),
])
@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_a_quantized_plan_is_strongly_typed_on_the_pinned_tensorrt_and_the_next(version, flags, precision):
    """Pinned: on TensorRT 10 a Q/DQ model is built strongly typed, with no INT8/FP8 builder flag
    (TensorRT's explicit-quantization guide; NVIDIA/TensorRT#3987), as TensorRT 11 requires."""
    source = plan_precision_source(precision, version, flags)
    assert source == "network-types"
    assert network_flags(version, source, CREATION_FLAGS) == (("STRONGLY_TYPED",) if version.startswith("10.") else ())
    # The Q/DQ model is made from the fp32 export: ModelOpt quantizes it and sets its float layers.
    assert onnx_export_precision(precision, "builder-flags") == "fp32"
    network = {"FLOAT", "HALF", "INT64", "INT8" if precision == "int8" else "FP8"}
    assert builder_precision(precision, source, flags, network, True, (9, 0), version) == PrecisionFlags()


def test_float_plans_keep_the_api_generations_decision():
    assert plan_precision_source("fp16", "10.13.3.9", FLAGS_10) == "builder-flags"
    assert plan_precision_source("fp16", "11.0.0", FLAGS_11) == "network-types"


@pytest.mark.parametrize("precision, types, capability, reason", [
    ("fp8", {"FLOAT", "HALF", "FP8"}, (8, 0), "compute capability 8.9 or later .*; this one is 8.0"),
    ("int8", {"FLOAT", "HALF"}, (9, 0), "holds no int8 tensor: TensorRT Model Optimizer quantized none"),
    ("fp8", {"FLOAT", "INT8"}, (9, 0), "holds no fp8 tensor"),
])
def test_a_quantized_plan_that_cannot_be_built_is_skipped_with_the_reason(precision, types, capability, reason):
    with pytest.raises(Skip, match=reason):
        builder_precision(precision, "network-types", FLAGS_10, types, True, capability, "10.13.3")


def test_int8_needs_no_fp8_tensor_cores():
    assert builder_precision("int8", "network-types", FLAGS_10, {"INT8"}, True, (7, 5), "10.13.3") == PrecisionFlags()


def test_modelopt_quantizes_to_the_precision_with_fp16_float_layers_calibrating_on_the_jobs_gpu():
    assert modelopt_settings("int8", "cuda") == {"quantize_mode": "int8", "high_precision_dtype": "fp16",
                                                 "calibration_eps": ["cuda:0", "cpu"]}
    assert modelopt_settings("fp8", "cuda:1")["calibration_eps"] == ["cuda:1", "cpu"]
    with pytest.raises(ValueError, match="int8 or fp8"):
        modelopt_settings("fp16", "cuda")


def test_calibration_steps_take_a_few_samples_of_a_batch_model_and_all_of_any_other():
    shapes = {"input_ids": (64, 384), "mask": (64, 384)}
    assert calibration_shapes(shapes, 0) == f"input_ids:{CALIBRATION_STEP}x384,mask:{CALIBRATION_STEP}x384"
    assert calibration_shapes({"x": (8, 3, 224, 224)}, 0) == "x:8x3x224x224"  # fewer samples than a step
    # Without a batch axis on 0, ModelOpt's split along axis 0 would cut the tensors: one step, whole.
    assert calibration_shapes({"x": (1, 12, 512)}, None) == "x:1x12x512"
    assert calibration_shapes({"x": (3, 2)}, 1) == "x:3x2"
    assert calibration_shapes({"x": (8, 4), "scale": ()}, 0, step=2) == "x:2x4"  # a scalar: from the model


# --- Torch-TensorRT's exported program ------------------------------------------------------------

def test_an_engines_program_is_traced_at_the_largest_profiled_batch_any_other_at_2():
    # Torch-TensorRT 2.9 takes the engine's opt from the traced size: the batch tuned for is the largest profiled.
    batches = batch_range(sample_batch=4, batch_sizes=[1, 8, 64])
    assert example_batch(batches, engine_program=True) == 64
    assert example_batch(batches, engine_program=False) == TRACE_BATCH == 2
    # Never 1, which exporters specialize; no batch axis: the samples as they are (the batch is not used).
    assert example_batch(batch_range(1, [1]), engine_program=True) == 2
    assert example_batch(None, engine_program=True) == 2


def test_an_engines_program_bounds_its_batch_to_the_engines_range_and_the_traced_batch():
    io = IOSpec(inputs=[TensorSpec("x", "float32", [None, 4]), TensorSpec("m", "float32", [None, 4])],
                outputs=[TensorSpec("y", "float32", [None, 3])])
    batch = ProgramDim("batch", 1, 64)
    assert program_dims(io, [(64, 4), (64, 4)], BatchRange(1, 64, 64), bounded=True) == [{0: batch}, {0: batch}]
    # The range holds the traced batch where the profiled sizes do not (batch sizes [1]: traced at 2).
    assert program_dims(io, [(2, 4), (2, 4)], BatchRange(1, 1, 1), bounded=True)[0] == {0: ProgramDim("batch", 1, 2)}
    with pytest.raises(ValueError, match="needs the batch range"):
        program_dims(io, [(2, 4), (2, 4)], None, bounded=True)


def test_an_inplace_decoders_declared_lengths_are_bounded_dims_of_their_recorded_sizes():
    # An inplace capture: no batch axis; tokens and mask recorded alike (one length), positions apart.
    length = AxisRange(axis=1, min=3, typical=9, max=40)
    io = IOSpec(inputs=[TensorSpec("input_ids", "int64", [1, None], ranges=[length]),
                        TensorSpec("attention_mask", "int64", [1, None], ranges=[length]),
                        TensorSpec("cache.0", "float32", [1, 8, None, 64], ranges=[AxisRange(2, 0, 8, 39)]),
                        TensorSpec("scale", "float32", [1])],
                outputs=[TensorSpec("logits", "float32", [1, None, 100])], batch_axis=None)
    dims = program_dims(io, [(1, 9), (1, 9), (1, 8, 8, 64), (1,)], None, bounded=True)
    tokens = ProgramDim("input_ids_1", 3, 40)
    assert dims == [{1: tokens}, {1: tokens}, {2: ProgramDim("cache_0_2", 0, 39)}, None]
    # Recorded alike but traced at different sizes: not one length.
    apart = program_dims(io, [(1, 9), (1, 7), (1, 8, 8, 64), (1,)], None, bounded=True)
    assert apart[0] != apart[1] and apart[1] == {1: ProgramDim("attention_mask_1", 3, 40)}


def test_a_batch_model_bounds_its_further_declared_axes_too():
    io = IOSpec(inputs=[TensorSpec("x", "float32", [None, None, 16], ranges=[AxisRange(1, 4, 32, 128)])],
                outputs=[TensorSpec("y", "float32", [None, None, 16])])
    assert program_dims(io, [(8, 32, 16)], BatchRange(1, 8, 8), bounded=True) == [
        {0: ProgramDim("batch", 1, 8), 1: ProgramDim("x_1", 4, 128)}]


def test_an_unbounded_program_keeps_any_batch_and_leaves_declared_axes_to_the_exporter():
    batch_io = IOSpec(inputs=[TensorSpec("x", "float32", [None, 4])], outputs=[TensorSpec("y", "float32", [None, 3])])
    assert program_dims(batch_io, [(2, 4)], BatchRange(1, 8, 8), bounded=False) == [{0: ProgramDim("batch")}]
    decoder = IOSpec(inputs=[TensorSpec("ids", "int64", [1, None], ranges=[AxisRange(1, 3, 9, 40)]),
                             TensorSpec("scale", "float32", [1])],
                     outputs=[TensorSpec("y", "float32", [1, None])], batch_axis=None)
    assert program_dims(decoder, [(1, 9), (1,)], None, bounded=False) == [{1: ProgramDim(None)}, None]


# --- the shared timing cache -----------------------------------------------------------------------

def test_merge_into_file_hands_over_what_the_file_holds_and_writes_the_result(tmp_path):
    path = tmp_path / "cache" / "timing.cache"
    seen = []

    def merge(on_disk: bytes) -> bytes:
        seen.append(on_disk)
        return on_disk + b"entry;"

    merge_into_file(path, merge)
    merge_into_file(path, merge)
    assert seen == [b"", b"entry;"]
    assert path.read_bytes() == b"entry;entry;"
    assert sorted(p.name for p in path.parent.iterdir()) == ["timing.cache", "timing.cache.lock"]


def test_builds_that_finish_together_each_keep_their_entries(tmp_path):
    path = tmp_path / "timing.cache"

    def build(entry: bytes) -> None:
        def merge(on_disk: bytes) -> bytes:
            time.sleep(0.02)  # a slow combine: an unlocked read-combine-write would lose entries
            return on_disk + entry

        merge_into_file(path, merge)

    threads = [threading.Thread(target=build, args=(f"{i};".encode(),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(path.read_bytes().decode().split(";")[:-1]) == [str(i) for i in range(8)]


@dataclass
class FakeBuilderConfig:
    """trt.IBuilderConfig's timing-cache methods as TensorRT 10 answers a corrupt blob: `reads` says what
    create_timing_cache does with a non-empty one ("ok", "none": returns no cache, "raise"), `accepts`
    what set_timing_cache answers for it."""

    reads: str = "ok"
    accepts: bool = True
    attached: list = field(default_factory=list)

    def create_timing_cache(self, serialized_timing_cache: bytes) -> Optional[tuple[str, bytes]]:
        if serialized_timing_cache and self.reads == "raise":
            raise RuntimeError("Error Code 2: Internal Error (bad timing cache)\nstack")
        if serialized_timing_cache and self.reads == "none":
            return None
        return ("cache", serialized_timing_cache)

    def set_timing_cache(self, cache: tuple[str, bytes], ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False  # named for its TensorRT and GPU: a mismatch is never wanted
        if cache[1] and not self.accepts:
            return False
        self.attached.append(cache)
        return True


def test_a_readable_timing_cache_is_attached_as_it_is():
    config, lines = FakeBuilderConfig(), []
    assert attach_timing_cache(config, b"timings", "timing.cache", lines.append) == ("cache", b"timings")
    assert config.attached == [("cache", b"timings")] and lines == []


def test_no_timing_cache_yet_starts_an_empty_one_quietly():
    config, lines = FakeBuilderConfig(), []
    assert attach_timing_cache(config, b"", "timing.cache", lines.append) == ("cache", b"")
    assert config.attached == [("cache", b"")] and lines == []


@pytest.mark.parametrize("reads, accepts, why", [
    ("none", True, "TensorRT read no cache from it"),
    ("ok", False, "TensorRT refused it"),
    ("raise", True, "RuntimeError: Error Code 2: Internal Error (bad timing cache)"),
])
def test_a_corrupt_timing_cache_starts_the_build_from_an_empty_one_and_says_so(reads, accepts, why):
    config, lines = FakeBuilderConfig(reads=reads, accepts=accepts), []
    assert attach_timing_cache(config, b"\x00garbage", "timing-10.13.3.9-H100.cache", lines.append) == ("cache", b"")
    assert config.attached == [("cache", b"")]
    (line,) = lines
    assert f"timing-10.13.3.9-H100.cache could not be used ({why})" in line
    assert "starts from an empty timing cache" in line
