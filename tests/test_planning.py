"""Planning a run (orchestrator/run/planning.py): the variants and the graph of steps, on CPUs and
on GPUs, without running anything."""
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.config import ModelRef, OptimizeConfig
from orchestrator.run.planning import (
    FUNCTION_VARIANT,
    Variant,
    compiled_skip_reason,
    layout_skip_reason,
    plan_steps,
    plan_variants,
    search_cut_reason,
    skip_reason,
    source_skip_reason,
)


def config(framework: str = "torch", **options) -> OptimizeConfig:
    form = "onnx" if framework == "onnx" else "factory"
    model = ModelRef(path=Path("/m/model.py"), form=form, factory="make", framework=framework)
    return OptimizeConfig(model=model, workspace=Path("/ws"), **options)


def names(variants) -> list[str]:
    return [v.name for v in variants]


def test_cpu_variants_are_the_frameworks_default_formats_in_fp32():
    assert names(plan_variants(config(), on_gpu=False)) == [
        "torchscript-trace-fp32", "torchscript-script-fp32", "onnx-fp32", "exported-program-fp32"]


def test_gpu_variants_take_every_precision_a_format_supports():
    variants = names(plan_variants(config(formats=["onnx", "torch-compile-cudagraphs"], memory_formats=["contiguous"]),
                                   on_gpu=True))
    assert variants == ["onnx-fp32", "onnx-fp16", "torch-compile-cudagraphs-fp32", "torch-compile-cudagraphs-fp16",
                        "torch-compile-cudagraphs-bf16"]  # ONNX Runtime has no bf16


def test_gpus_search_channels_last_for_the_torch_formats_whose_layout_the_runner_chooses():
    variants = plan_variants(config(formats=["onnx", "exported-program"], precisions=["fp16"]), on_gpu=True)
    assert names(variants) == ["onnx-fp16", "exported-program-fp16", "exported-program-fp16-channels-last"]
    assert [v.memory_format for v in variants] == ["contiguous", "contiguous", "channels_last"]
    assert names(plan_variants(config(formats=["exported-program"]), on_gpu=False)) == ["exported-program-fp32"]
    asked = plan_variants(config(formats=["torchscript-trace", "onnx"], memory_formats=["channels_last"]), on_gpu=False)
    # ONNX chooses its own layout: built once, as it is.
    assert names(asked) == ["torchscript-trace-fp32-channels-last", "onnx-fp32"]
    with pytest.raises(ValidationError, match="'nhwc' is not a memory format; choose from contiguous, channels_last"):
        config(memory_formats=["nhwc"])


def test_asked_for_formats_are_kept_even_where_the_device_cannot_run_them():
    variants = plan_variants(config(formats=["tensorrt"]), on_gpu=False)
    assert names(variants) == ["tensorrt-fp32"]
    assert skip_reason(variants[0], {"torch": "2.13"}, "nav-orch/pytorch:cpu", has_gpus=False) == \
        "TensorRT is not installed in nav-orch/pytorch:cpu"
    assert skip_reason(variants[0], {"tensorrt": "10.13"}, "image", has_gpus=False) == \
        "needs a GPU (this run has none: --gpus)"
    assert skip_reason(variants[0], {"tensorrt": "10.13", "torch": "2.9"}, "image", has_gpus=True) is None


def test_on_cpus_each_variant_builds_in_its_own_step_and_one_exclusive_step_profiles_all():
    variants = plan_variants(config(formats=["torchscript-trace", "onnx"]), on_gpu=False)
    steps = plan_steps(variants, on_gpu=False)
    assert [(s.name, s.action, s.needs, s.gpu, s.exclusive) for s in steps] == [
        ("build-torchscript-trace-fp32", "build", (), False, False),
        ("build-onnx-fp32", "build", (), False, False),
        ("profile", "profile", ("build-torchscript-trace-fp32", "build-onnx-fp32"), False, True),
    ]
    assert steps[-1].variants == tuple(variants)


def test_on_gpus_exports_run_on_cpus_checks_per_runner_and_compiled_fp32_after_its_rivals():
    variants = plan_variants(config(formats=["torchscript-trace", "onnx", "torch-compile-cudagraphs"],
                                    precisions=["fp32", "fp16"], memory_formats=["contiguous"]), on_gpu=True)
    steps = {s.name: s for s in plan_steps(variants, on_gpu=True)}
    exports = [name for name in steps if name.startswith("export-")]
    assert exports == ["export-onnx-fp32", "export-onnx-fp16"]
    assert all(not steps[e].gpu and not steps[e].needs for e in exports)
    torch_check, onnx_check = steps["check-torch"], steps["check-onnx"]
    assert names(torch_check.variants) == ["torchscript-trace-fp32", "torchscript-trace-fp16"]
    # A trace records the device its tensors are made on: it is exported in the check session, on the GPU.
    assert "export-torchscript-trace-fp32" not in steps and torch_check.needs == ()
    assert names(onnx_check.variants) == ["onnx-fp32", "onnx-fp16"]
    # GPU sessions share their GPU (they take turns to time: orchestrator/run/turns.py).
    assert torch_check.gpu and not torch_check.exclusive and onnx_check.gpu
    compiled = steps["check-torch-compile-cudagraphs-fp32"]
    assert compiled.action == "check-compiled" and compiled.gpu and not compiled.exclusive
    # fp32 is built after the torch runner's other formats, whose winning precision decides whether it is.
    assert compiled.needs == ("check-torch",)
    assert compiled.rivals == torch_check.variants
    # A half precision is always built: it compiles while the exports run, on a GPU they leave idle.
    # Its export only fixes its options, so its session exports it: it waits for nothing.
    half = steps["check-torch-compile-cudagraphs-fp16"]
    assert half.needs == () and half.rivals == ()


def test_on_gpus_torch_tensorrt_is_exported_in_its_check_session_not_on_the_cpus():
    variants = plan_variants(config(formats=["torch-tensorrt", "tensorrt"], precisions=["fp16"],
                                    memory_formats=["contiguous"]), on_gpu=True)
    steps = {s.name: s for s in plan_steps(variants, on_gpu=True)}
    # The ONNX export of a TensorRT plan runs on the CPUs; Torch-TensorRT's program on the GPU that compiles it.
    assert [name for name in steps if name.startswith("export-")] == ["export-tensorrt-fp16"]
    assert names(steps["check-torch"].variants) == ["torch-tensorrt-fp16"] and steps["check-torch"].needs == ()
    assert steps["check-tensorrt"].needs == ("export-tensorrt-fp16",)


def test_a_compiled_variant_without_rivals_waits_for_nothing():
    variants = [Variant("torch-compile-cudagraphs-fp16", "torch-compile-cudagraphs", "fp16")]
    (compiled,) = plan_steps(variants, on_gpu=True)
    assert compiled.needs == () and compiled.rivals == ()


@pytest.mark.parametrize("on_gpu", [False, True])
def test_profile_of_a_function_is_one_exclusive_step(on_gpu):
    function = config()
    function = function.model_copy(update={"model": function.model.model_copy(update={"form": "function"})})
    variants = plan_variants(function, on_gpu)
    assert variants == [FUNCTION_VARIANT]
    (step,) = plan_steps(variants, on_gpu)
    assert (step.action, step.exclusive, step.gpu) == ("profile-function", True, on_gpu)


@pytest.mark.parametrize("precision, winner, capability, given, built", [
    ("fp16", "fp16", "9.0", False, True),
    ("bf16", "fp16", "9.0", False, True),   # every half precision the GPU runs fast, whatever eager said
    ("fp16", "fp32", "9.0", False, True),
    ("fp32", "fp16", "9.0", False, False),  # fp32 only where it won among the other formats
    ("fp32", "fp32", "9.0", False, True),
    ("fp32", None, "9.0", False, True),     # no rival verified: nothing to go by
    ("bf16", "bf16", "7.0", False, False),  # a V100 has no fast bf16
    ("bf16", "fp16", "7.0", True, True),    # asked for: built
    ("fp32", "fp16", "9.0", True, True),
])
def test_compiled_variants_are_built_in_each_fast_half_precision_and_in_fp32_where_it_wins(
        precision, winner, capability, given, built):
    variant = Variant(f"torch-compile-cudagraphs-{precision}", "torch-compile-cudagraphs", precision)
    reason = compiled_skip_reason(variant, winner, capability, given)
    assert (reason is None) == built
    if not built:
        assert reason.startswith("not built: ") and ("--precisions" in reason)


def test_on_several_gpus_each_runners_checks_are_dealt_out_one_session_per_gpu():
    variants = plan_variants(config(formats=["torchscript-script", "exported-program", "onnx",
                                             "torch-compile-cudagraphs"],
                                    precisions=["fp32", "fp16", "bf16"], memory_formats=["contiguous"]), on_gpu=True)
    steps = {s.name: s for s in plan_steps(variants, on_gpu=True, gpus=4)}
    torch_checks = [steps[f"check-torch-{i}"] for i in range(1, 5)]
    assert "check-torch" not in steps and all(s.gpu and not s.exclusive for s in torch_checks)
    assert sorted(v.name for s in torch_checks for v in s.variants) == sorted(
        f"{fmt}-{p}" for fmt in ("torchscript-script", "exported-program") for p in ("fp32", "fp16", "bf16"))
    assert [len(s.variants) for s in torch_checks] == [2, 2, 1, 1]
    assert all(s.needs == tuple(f"export-{v.name}" for v in s.variants) for s in torch_checks)
    # ONNX has two variants (no bf16): two sessions, not four.
    assert [names(steps[f"check-onnx-{i}"].variants) for i in (1, 2)] == [["onnx-fp32"], ["onnx-fp16"]]
    # The compiled fp32 variant waits for every torch session; the half precisions for none.
    assert steps["check-torch-compile-cudagraphs-fp32"].needs == tuple(s.name for s in torch_checks)
    assert steps["check-torch-compile-cudagraphs-bf16"].needs == ()


def test_int8_is_planned_once_per_way_a_format_quantizes_and_only_where_asked_for():
    asked = plan_variants(config(formats=["torchscript-trace", "onnx", "torch-compile"],
                                 precisions=["fp32", "int8"]), on_gpu=False)
    assert names(asked) == ["torchscript-trace-fp32", "onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static",
                            "torch-compile-fp32", "torch-compile-int8-dynamic"]
    assert [(v.precision, v.quantization) for v in asked if v.format == "onnx"] == [
        ("fp32", ""), ("int8", "dynamic"), ("int8", "static")]
    # Never by default: a quantized variant changes the numbers the model gives.
    assert not [v for v in plan_variants(config(formats=["onnx"]), on_gpu=True) if v.quantization]
    # torchao's variants need a GPU and torchao; ONNX Runtime quantizes with what the image has.
    compiled = asked[-1]
    assert skip_reason(compiled, {"torchao": "0.14.0"}, "nav-orch/pytorch:cpu", has_gpus=False) == (
        "int8 torch-compile needs a GPU (this run has none: --gpus)")
    assert skip_reason(compiled, {}, "nav-orch/pytorch:25.10", has_gpus=True) == (
        "int8 needs torchao, which is not installed in nav-orch/pytorch:25.10")
    assert skip_reason(asked[3], {}, "nav-orch/pytorch:cpu", has_gpus=False) is None


def test_fp8_needs_compute_capability_8_9_even_when_asked_for():
    fp8 = Variant("torch-compile-cudagraphs-fp8-dynamic", "torch-compile-cudagraphs", "fp8", quantization="dynamic")
    assert "8.9 or later" in compiled_skip_reason(fp8, None, "8.0", precisions_given=True)
    assert compiled_skip_reason(fp8, None, "9.0", precisions_given=True) is None


def test_tensorrt_plans_are_skipped_where_the_image_has_no_torch_for_the_runners_buffers():
    variant = Variant("tensorrt-fp16", "tensorrt", "fp16")
    tensorflow_image = {"tensorflow": "2.17.0", "tensorrt": "10.3.0"}  # TF-TRT's TensorRT, but no torch
    reason = skip_reason(variant, tensorflow_image, "nav-orch/tensorflow:25.02", has_gpus=True)
    assert reason is not None
    assert reason.startswith("its runner (tensorrt) needs torch, which nav-orch/tensorflow:25.02")
    assert skip_reason(variant, {"torch": "2.9.0", "tensorrt": "10.13.3"}, "nav-orch/pytorch:25.10",
                       has_gpus=True) is None


def test_onnx_runs_on_gpus_only_where_the_runners_onnxruntime_has_its_cuda_provider():
    variant = Variant("onnx-fp16", "onnx", "fp16")
    plain = {"onnx": "1.19.0"}  # plain onnxruntime: the reference reports no CUDA provider
    assert skip_reason(variant, plain, "the runners' Python (python3)", has_gpus=True) == (
        "runs on GPUs only with ONNX Runtime's CUDA execution provider (onnxruntime-gpu), which the runners' "
        "Python (python3) lacks")
    assert skip_reason(variant, plain, "nav-orch/pytorch:cpu", has_gpus=False) is None
    gpu_image = {**plain, "onnxruntime+cuda": "1.23.2"}
    assert skip_reason(variant, gpu_image, "nav-orch/pytorch:25.10", has_gpus=True) is None


def test_a_layout_the_reference_found_changes_nothing_is_skipped_and_one_it_did_not_say_is_left_to_the_runner():
    channels_last = Variant("torchscript-trace-fp16-channels-last", "torchscript-trace", "fp16", "channels_last")
    assert layout_skip_reason(channels_last, ("contiguous",)) == (
        "channels_last changes nothing here: the model has no 4-D convolution weights")
    assert layout_skip_reason(channels_last, ("contiguous", "channels_last")) is None
    assert layout_skip_reason(channels_last, None) is None
    assert layout_skip_reason(Variant("onnx-fp16", "onnx", "fp16"), ("contiguous",)) is None


@pytest.mark.parametrize(("searched", "on_gpu", "given", "cut"), [
    ({"exported-program", "torchscript-trace", "torch-compile-cudagraphs"}, True, False,
     "torchscript-trace and torch-compile-cudagraphs"),
    ({"exported-program", "torch-compile-cudagraphs"}, True, False, "torch-compile-cudagraphs"),
    ({"exported-program", "onnx"}, True, False, None),  # nothing searched that beat it
    ({"exported-program", "torchscript-trace"}, False, False, None),  # on CPUs it can win
    ({"exported-program", "torchscript-trace"}, True, True, None),  # asked for
])
def test_the_uncompiled_program_is_left_out_of_a_gpu_search_where_a_format_that_beat_it_is_searched(
        searched, on_gpu, given, cut):
    variant = Variant("exported-program-fp16", "exported-program", "fp16")
    reason = search_cut_reason(variant, searched, on_gpu, formats_given=given)
    assert reason == (None if cut is None else f"not built: on GPUs {cut} ran faster in every model measured "
                      "(--formats exported-program or --exhaustive builds it)")
    trace = Variant("torchscript-trace-fp16", "torchscript-trace", "fp16")
    assert search_cut_reason(trace, searched | {"torch-compile-cudagraphs"}, True, formats_given=False) is None


# What the registry allows, written out as the support matrix a user reads (docs/frameworks.md): per framework,
# each format's precisions (a quantized one with its method) and memory formats.
SUPPORTED = {
    "torch": {
        "torchscript-trace": ("fp32 fp16 bf16", "contiguous channels_last"),
        "torchscript-script": ("fp32 fp16 bf16", "contiguous channels_last"),
        "onnx": ("fp32 fp16 int8-dynamic int8-static", "contiguous"),
        "exported-program": ("fp32 fp16 bf16", "contiguous channels_last"),
        "torch-aoti": ("fp32 fp16 bf16", "contiguous channels_last"),
        "torch-compile": ("fp32 fp16 bf16 int8-dynamic fp8-dynamic", "contiguous channels_last"),
        "torch-compile-cudagraphs": ("fp32 fp16 bf16 int8-dynamic fp8-dynamic", "contiguous channels_last"),
        "torch-tensorrt": ("fp32 fp16 bf16", "contiguous"),
        "tensorrt": ("fp32 fp16 bf16 int8-static fp8-static", "contiguous"),
    },
    "tensorflow": {
        "savedmodel": ("fp32", "contiguous"),
        "onnx": ("fp32 int8-dynamic int8-static", "contiguous"),
        "tensorrt": ("fp32 fp16 bf16 int8-static fp8-static", "contiguous"),
        "tf-trt": ("fp32 fp16", "contiguous"),
    },
    "onnx": {
        "onnx": ("fp32 fp16 int8-dynamic int8-static", "contiguous"),
        "tensorrt": ("fp32 fp16 bf16 int8-static fp8-static", "contiguous"),
    },
}
SUPPORTED["jax"] = SUPPORTED["tensorflow"]


@pytest.mark.parametrize("framework", sorted(SUPPORTED))
def test_planning_emits_exactly_the_combinations_the_registry_allows(framework):
    expected = {(fmt, precision, layout) for fmt, (precisions, layouts) in SUPPORTED[framework].items()
                for precision in precisions.split() for layout in layouts.split()}
    everything = config(framework, formats=list(SUPPORTED[framework]),
                        precisions=["fp32", "fp16", "bf16", "int8", "fp8"],
                        memory_formats=["contiguous", "channels_last"])
    planned = {(v.format, v.precision + (f"-{v.quantization}" if v.quantization else ""), v.memory_format)
               for v in plan_variants(everything, on_gpu=True)}
    assert planned == expected
    with pytest.raises(ValidationError, match="is not a format of"):
        config(framework, formats=["no-such-format"])


def test_an_exported_program_source_keeps_its_precision_but_tensorrt_lowers_its_own():
    model = ModelRef(path=Path("/m/unet.pt2"), form="exported_program", precision="fp16")
    variants = {v.name: v for v in plan_variants(
        OptimizeConfig(model=model, workspace=Path("/ws"), formats=["exported-program", "onnx", "tensorrt"],
                       precisions=["fp32", "fp16", "int8"], memory_formats=["contiguous"]), on_gpu=True)}
    reasons = {name: source_skip_reason(v, model) for name, v in variants.items()}
    assert reasons["exported-program-fp16"] is None and reasons["onnx-fp16"] is None
    assert reasons["exported-program-fp32"] == (
        "the source is an ExportedProgram in fp16: its graph cannot be cast to fp32 (export it in fp32; inplace "
        "modules are captured per precision)")
    assert "cannot be cast to fp32" in reasons["onnx-int8-dynamic"]  # ONNX Runtime quantizes the fp32 graph
    assert reasons["tensorrt-fp32"] is None and reasons["tensorrt-int8-static"] is None
    factory = ModelRef(path=Path("/m/model.py"), form="factory", factory="make")
    assert all(source_skip_reason(v, factory) is None for v in variants.values())
