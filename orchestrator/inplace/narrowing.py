"""What inplace.optimize leaves out of a module's runner search before it starts (issue 30, item 3).
Pure decisions; each cut is recorded in pipeline.json (ModuleResult.cuts) with its reason.

The compiled formats (torch-compile, torch-compile-cudagraphs) move into the user's process. In the
runners they compile the module's capture, and the user's process then compiles that capture again
to run it, while the module itself compiled in the user's process ran faster on an H100: the UNet's
20 steps in fp16 took 0.134 s against 0.196-0.213 s for its capture compiled
(benchmarks/unet_compile_recipes.py, 2026-11-25), and Whisper-small's pipeline 0.142 s against
0.273 s (issue 30, 2026-12-06). Their torch.compile modes go to the module compiled here, which
takes its precision and layout from the best variant torch ran in the runners, so a precision or
layout that lost there is never compiled. `exhaustive` keeps the compiled formats in the runners.

On GPUs, where a compiled format is asked for, torch's uncompiled formats (exported-program,
TorchScript) go too: the module compiled here beat the exported program in every module measured,
by 2.3x to 6.4x on the recorded calls (Whisper-small's encoder and decoder, and SD-1.5's text encoder,
UNet and VAE decoder in fp16, H100, 2026-12-06, docs/performance.md). Their runner runs took most of
inplace.optimize's time (44 s of 156 s for Whisper's decoder) and only fixed the precision and layout,
which the module compiled here then takes from the defaults (fp16 where searched; channels_last for
a module with 2-D convolutions, candidate.py `in_process_options`). ONNX Runtime and TensorRT stay.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from runners.contract.formats import FORMATS, default_formats
from runners.contract.protocol import FormatName


@dataclass(frozen=True)
class RunnerSearch:
    """The formats a module's optimize runs search, the torch.compile modes handed to the module
    compiled here, and each format cut with why."""

    formats: list[FormatName]
    compile_modes: tuple[str, ...]
    cuts: dict[str, str] = field(default_factory=dict)


def runner_search(asked: Optional[Sequence[FormatName]], on_gpu: bool, exhaustive: bool) -> RunnerSearch:
    """The runner search for a module: `asked` (None: the defaults for torch on the device) without
    its compiled formats and, on GPUs, torch's uncompiled ones, where a compiled format is among
    them and the search is not `exhaustive`."""
    formats = list(asked) if asked is not None else default_formats("torch", on_gpu)
    compiled = [name for name in formats if FORMATS[name].compile_mode is not None]
    modes = tuple(dict.fromkeys(FORMATS[name].compile_mode or "" for name in compiled))
    if exhaustive or not compiled:
        return RunnerSearch(formats, modes)
    cuts: dict[str, str] = {
        name: f"compiled in the user's process instead (the module itself, mode {FORMATS[name].compile_mode}): "
              "its capture compiled in a runner ran slower on an H100"
        for name in compiled}
    if on_gpu:
        uncompiled = [name for name in formats if FORMATS[name].runner == "torch" and not FORMATS[name].compiled
                      and FORMATS[name].engine_of is None]
        cuts.update({name: "the module compiled in the user's process beat it in every module measured on an H100 "
                           "(2.3x to 6.4x)" for name in uncompiled})
    return RunnerSearch([name for name in formats if name not in cuts], modes, cuts)
