"""How compiled torch variants are quantized with torchao (runners/toolchains/torchao_plan.py), checked without
torch or torchao."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from runners.toolchains.torchao_plan import (
    ABI_STABLE_TORCHAO,
    FP8_MIN_CAPABILITY,
    TORCHAO_TORCH,
    Recipe,
    compute_precision,
    device_reason,
    inductor_settings,
    int8_rows_hint,
    layers_reason,
    parse_version,
    recipe,
    supported_torch,
    version_reason,
)

ROOT = Path(__file__).resolve().parent.parent
NGC_25_10_TORCH = "2.9.0a0+145a3a7bda.nv25.10"  # docker-bake.hcl NGC_TORCH_VERSION


def test_the_plan_imports_without_torch():
    """The decisions must be testable on the host, where no framework is installed."""
    code = ("import sys, runners.toolchains.torchao_plan; "
            "assert 'torch' not in sys.modules and 'torchao' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_each_precision_takes_its_torchao_config():
    assert recipe("int8") == Recipe("Int8DynamicActivationInt8WeightConfig", per_row=False)
    assert recipe("fp8") == Recipe("Float8DynamicActivationFloat8WeightConfig", per_row=True)
    with pytest.raises(ValueError, match="int8 or fp8, not 'bf16'"):
        recipe("bf16")


def test_a_quantized_module_computes_and_takes_its_float_inputs_in_bf16():
    assert compute_precision("int8") == compute_precision("fp8") == "bf16"
    assert [compute_precision(p) for p in ("fp32", "fp16", "bf16")] == ["fp32", "fp16", "bf16"]


def test_torchaos_inductor_settings_are_on_for_quantized_variants_and_off_for_the_others():
    assert set(inductor_settings("int8").values()) == set(inductor_settings("fp8").values()) == {True}
    assert set(inductor_settings("bf16").values()) == {False}
    assert inductor_settings("int8").keys() == inductor_settings("fp32").keys()
    # torchao's own setter also calls torch.set_float32_matmul_precision("high"): TF32 for fp32 variants.
    assert not any("float32" in name or "tf32" in name for name in inductor_settings("int8"))


@pytest.mark.parametrize("text, version", [
    (NGC_25_10_TORCH, (2, 9, 0)),
    ("0.14.1+cu130", (0, 14, 1)),
    ("0.16.0.dev20251201+cu130", (0, 16, 0)),
    ("2.13.0+cpu", (2, 13, 0)),
    ("2.9", (2, 9)),
    ("unknown", None),
])
def test_versions_are_read_by_their_leading_numbers(text, version):
    assert parse_version(text) == version


def test_the_pinned_torchao_supports_the_ngc_25_10_torch():
    assert version_reason("0.14.1", NGC_25_10_TORCH) is None


@pytest.mark.parametrize("torchao, torch", [
    ("0.13.0", "2.8.0"),
    ("0.14.1", "2.7.1"),
    ("0.15.0", "2.9.1+cu128"),
    ("0.16.0", "2.10.0"),
    ("0.17.0", "2.9.0"),  # ABI stable from 0.17 on: torch 2.9 and later
    ("0.18.0", "2.13.0+cu130"),
])
def test_pairs_in_torchaos_table_are_supported(torchao, torch):
    assert version_reason(torchao, torch) is None


@pytest.mark.parametrize("torchao, torch, reason", [
    ("0.13.0", NGC_25_10_TORCH, r"torchao 0.13.0 supports torch 2.8, 2.7, 2.6 \(torchao's compatibility table"),
    ("0.16.0", "2.11.0", "supports torch 2.10, 2.9, 2.8"),
    ("0.14.0", "2.9.0", "torchao 0.14.0 is not in torchao's compatibility table"),  # the table names 0.14.1
    ("0.12.0", "2.7.1", "not in torchao's compatibility table"),
    ("0.18.0", "2.8.0", "supports torch 2.9 or later, not torch 2.8.0"),
    ("0.14.1", "weird", "unreadable version"),
    (None, NGC_25_10_TORCH, "torchao is not installed"),
])
def test_other_pairs_are_skipped_with_the_reason(torchao, torch, reason):
    message = version_reason(torchao, torch)
    assert message is not None
    assert re.search(reason, message), message


def test_the_table_is_in_release_order_and_ends_before_the_abi_stable_releases():
    releases = [release for release, _ in TORCHAO_TORCH]
    assert releases == sorted(releases) and releases[-1] < ABI_STABLE_TORCHAO
    assert supported_torch((0, 15, 2)) == supported_torch((0, 15, 0))  # a later patch of a listed release


@pytest.mark.parametrize("precision, on_cuda, capability, reason", [
    ("int8", False, None, "run on a CUDA GPU, and this job has none"),
    ("fp8", True, (8, 6), r"compute capability 8.9 or later \(FP8 tensor cores\); this one is 8.6"),
])
def test_devices_that_cannot_run_the_variant_are_skipped_with_the_reason(precision, on_cuda, capability, reason):
    message = device_reason(precision, on_cuda, capability)
    assert message is not None
    assert re.search(reason, message), message


def test_gpus_that_can_run_the_variant_pass():
    assert device_reason("fp8", True, FP8_MIN_CAPABILITY) is None
    assert device_reason("fp8", True, (9, 0)) is None
    assert device_reason("int8", True, (7, 5)) is None  # int8 tensor cores since Turing
    with pytest.raises(ValueError):
        device_reason("fp16", True, (9, 0))


def test_a_model_without_linear_layers_has_nothing_to_quantize():
    reason = layers_reason(0)
    assert reason is not None and "torch.nn.Linear" in reason
    assert layers_reason(12) is None


def test_an_int8_matmul_on_too_few_rows_says_what_to_do():
    # The error torch._int_mm raises on CUDA (ViT-B/16's classifier at batch 1 on an H100).
    hint = int8_rows_hint("RuntimeError: self.size(0) needs to be greater than 16, but got 1")
    assert hint is not None and "needs more than 16 rows" in hint and "got 1" in hint
    assert "--batch-sizes" in hint and "fp8" in hint
    assert int8_rows_hint("CUDA out of memory") is None
