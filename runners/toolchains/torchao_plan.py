"""How a compiled torch variant (torch-compile, torch-compile-cudagraphs) is quantized with torchao,
as plain decisions that need neither torch nor torchao: which torchao config each quantized precision
takes, the dtype the quantized module computes in, the torch.compile and inductor settings, and why
a variant cannot run (no CUDA, fp8 below compute capability 8.9, a torchao that does not support this
torch, no Linear layers to quantize). torch_runner.py applies them; tests/test_torchao_plan.py checks
them where neither is installed."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from runners.contract.formats import TORCHAO_QUANTIZERS
from runners.contract.protocol import QUANTIZED

Version = tuple[int, ...]

# What a quantized module keeps in floating point (what torchao leaves unquantized, its activations
# before and after each quantized matmul) and the dtype of its float inputs: bf16 (the registry's
# torchao quantizers say so), which torchao's float8 rowwise path requires (torch._scaled_mm's rowwise
# scales give bf16 only) and which its int8 recipe is documented with.
COMPUTE_PRECISION = TORCHAO_QUANTIZERS[0].quantizes
# FP8 tensor cores: Ada and Hopper on (torchao checks the same, `is_sm_at_least_89`).
FP8_MIN_CAPABILITY = (8, 9)
# torchao's release/torch compatibility table (pytorch/ao#2919), read at the level of torch's
# major.minor: each torchao release (the patch named there or a later one of the same minor), and
# the torch releases its Python API supports (its C++ kernels are built against the first).
TORCHAO_TORCH: tuple[tuple[Version, tuple[Version, ...]], ...] = (
    ((0, 13, 0), ((2, 8), (2, 7), (2, 6))),
    ((0, 14, 1), ((2, 9), (2, 8), (2, 7))),  # the image's pin: NGC 25.10 carries torch 2.9.0a0
    ((0, 15, 0), ((2, 9), (2, 8), (2, 7))),
    ((0, 16, 0), ((2, 10), (2, 9), (2, 8))),
)
# From 0.17 on torchao is ABI stable and the table is gone (pytorch/ao#4154, the 0.17.0 release
# notes): its Python API supports torch 2.9 and later (its own kernels want 2.11 or later, and the
# two configs used here need none of them).
ABI_STABLE_TORCHAO: Version = (0, 17, 0)
ABI_STABLE_MIN_TORCH: Version = (2, 9)


@dataclass(frozen=True)
class Recipe:
    """A torchao config, by its class name in torchao.quantization, and whether it takes one scale
    per row (granularity=PerRow()) rather than one per tensor."""

    config: str
    per_row: bool = False


def recipe(precision: str) -> Recipe:
    """int8: dynamic per-token int8 activations with per-channel int8 weights; fp8: dynamic float8
    (e4m3) activations and weights with rowwise scales, the accurate one of torchao's two float8
    granularities and the one its inference docs lead with."""
    if precision == "int8":
        return Recipe("Int8DynamicActivationInt8WeightConfig")
    if precision == "fp8":
        return Recipe("Float8DynamicActivationFloat8WeightConfig", per_row=True)
    raise ValueError(f"torchao quantizes to int8 or fp8, not {precision!r}")


def compute_precision(precision: str) -> str:
    """The precision a compiled variant's module and float inputs are cast to before torch.compile."""
    return COMPUTE_PRECISION if precision in QUANTIZED else precision


def inductor_settings(precision: str) -> dict[str, bool]:
    """The inductor settings torchao recommends for quantized models (its
    recommended_inductor_config_setter, which its configs apply process-wide unless
    set_inductor_config=False), set for each variant instead: on for a quantized one, off for the
    others, so a float variant compiled later in the same runner process does not inherit them. Its
    torch.set_float32_matmul_precision("high") is left out: it would turn on TF32 for fp32 variants."""
    quantized = precision in QUANTIZED
    return {"coordinate_descent_tuning": quantized, "coordinate_descent_check_all_directions": quantized,
            "force_fuse_int_mm_with_mul": quantized}


def parse_version(version: str) -> Optional[Version]:
    """The leading numbers of a version string ("2.9.0a0+145a3a7bda.nv25.10" -> (2, 9, 0)); None where
    it starts with none."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if not match:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def supported_torch(torchao: Version) -> Optional[tuple[Version, ...]]:
    """The torch releases (major, minor) the torchao release supports; None where the table has no
    row for it (before 0.13, from 0.17 on, or a patch release older than the one the table names)."""
    for release, torches in TORCHAO_TORCH:
        if torchao[:2] == release[:2] and torchao >= release:
            return torches
    return None


def version_reason(torchao_version: Optional[str], torch_version: str) -> Optional[str]:
    """Why this torchao cannot quantize for this torch (None: it can): not installed, or a pair that
    torchao's compatibility table does not list."""
    if torchao_version is None:
        return "torchao is not installed in this runner's Python (int8 and fp8 compiled variants need it)"
    torchao, torch = parse_version(torchao_version), parse_version(torch_version)
    if torchao is None or torch is None or len(torch) < 2:
        return f"cannot tell whether torchao {torchao_version} supports torch {torch_version} (unreadable version)"
    table = "torchao's compatibility table, pytorch/ao#2919"
    if torchao >= ABI_STABLE_TORCHAO:
        if torch[:2] >= ABI_STABLE_MIN_TORCH:
            return None
        return (f"torchao {torchao_version} supports torch {'.'.join(map(str, ABI_STABLE_MIN_TORCH))} or later, "
                f"not torch {torch_version}")
    torches = supported_torch(torchao)
    if torches is None:
        return (f"torchao {torchao_version} is not in {table} (0.13.0 to 0.16.x there, 0.17 and later for "
                f"torch 2.9 on): install the torchao that supports torch {torch_version}")
    if torch[:2] in torches:
        return None
    listed = ", ".join(".".join(map(str, t)) for t in torches)
    return (f"torchao {torchao_version} supports torch {listed} ({table}), not torch {torch_version}: "
            "install the torchao that matches")


def device_reason(precision: str, on_cuda: bool, capability: Optional[tuple[int, int]]) -> Optional[str]:
    """Why the variant cannot run on this device (None: it can): torchao's int8 and fp8 configs are
    CUDA paths here, and fp8 needs FP8 tensor cores."""
    recipe(precision)  # an unknown precision is an error, never a skip
    if not on_cuda:
        return f"torchao's {precision} compiled variants run on a CUDA GPU, and this job has none"
    if precision == "fp8" and capability is not None and capability < FP8_MIN_CAPABILITY:
        return (f"fp8 needs a GPU of compute capability {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or later "
                f"(FP8 tensor cores); this one is {capability[0]}.{capability[1]}")
    return None


# torch._int_mm, the int8 matrix product torchao's int8 path runs on CUDA (cuBLAS), refuses 16 rows
# or fewer, and inductor does not route around it (pytorch/ao#2376).
INT_MM_ROWS = re.compile(r"self\.size\(0\) needs to be greater than 16, but got (\d+)")


def int8_rows_hint(error: str) -> Optional[str]:
    """What to do about an int8 variant that failed for want of rows (None: it failed otherwise)."""
    match = INT_MM_ROWS.search(error)
    if match is None:
        return None
    return (f"torch._int_mm, torchao's int8 matrix product on CUDA, needs more than 16 rows and a Linear "
            f"layer got {match.group(1)} (a classifier head sees one row per sample): int8 needs batch sizes "
            "above 16 for such a model (--batch-sizes), or fp8")


def layers_reason(linear_layers: int) -> Optional[str]:
    """Why there is nothing to quantize (None: there is): torchao's configs replace the weights of
    torch.nn.Linear modules, and a model without one would be its bf16 variant under another name."""
    if linear_layers > 0:
        return None
    return ("the model has no torch.nn.Linear layers, the only ones torchao's int8/fp8 configs quantize "
            "(a TorchScript or ExportedProgram source keeps none as modules)")
