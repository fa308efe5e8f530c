"""Whether torch's experimental ahead-of-time compile (`torch.compile(...).aot_compile()`, saved with
`save_compiled_function`, loaded with `torch.compiler.load_compiled_function`) takes a warm reload of
the SD-1.5-sized UNet under the seconds Dynamo's tracing costs it (issue "Inplace pipelines that
never lose to the hand recipe", item 2: Dynamo's tracing is what keeps the warm reload at 20 s).

    python3 benchmarks/aot_compile_reload.py --folder /tmp/aot [--size sd15] [--modes reduce-overhead,default]
        [--out aot.json]

For each mode, in fresh processes: "save" builds the pipeline (fp16, the UNet in channels_last, as
nav-orch's in-process candidate runs it), compiles the UNet's forward ahead of time at the
pipeline's shapes (fullgraph) and saves it; "load", on an empty Inductor cache folder of its own,
builds the pipeline again, loads the function and calls it; then the same on the saving process's
cache folder; then, on that folder too, twice, the UNet compiled by torch.compile as nav-orch's
warm reload does today ("dynamo": Dynamo traces it again, Inductor's cache serves the rest). Records
the seconds of each step, the first three calls, the output against eager (max abs difference),
and the median call against eager's, alternated in one process. A mode that fails records its error.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inductor_compile_cache import caches_in  # noqa: E402 - a sibling script: the same cache folders


def pipeline_and_inputs(size: str, device: str):
    import torch

    from examples.pipelines import sd_style

    started = time.perf_counter()
    pipe = sd_style.build(size, device=device, dtype=torch.float16)
    unet = pipe.unet.to(memory_format=torch.channels_last)
    channels, height, width = pipe.latent_shape
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((2, channels, height, width), generator=generator).to(device, torch.float16)
    latents = latents.contiguous(memory_format=torch.channels_last)
    hidden = pipe.text_encoder.config.hidden_size
    embeddings = torch.randn((2, pipe.uncond_ids.shape[1], hidden), generator=generator).to(device, torch.float16)
    timestep = torch.tensor(999, device=device)
    arguments = ((unet, latents, timestep, embeddings), {})
    return unet, arguments, time.perf_counter() - started


def timed(call) -> tuple[object, float]:
    import torch

    started = time.perf_counter()
    result = call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def run_unet(unet, latents, timestep, embeddings):
    """What is compiled: a function of this file, which the loading process defines too (diffusers
    wraps UNet2DConditionModel.forward, which then cannot be saved by name)."""
    return unet(latents, timestep, encoder_hidden_states=embeddings, return_dict=False)[0]


def portable_guards(entries) -> list[bool]:
    """Keep the guards on the inputs' tensors and the global state only: guards on object identity
    (the module's attributes) cannot be saved, and the loading process builds the module again."""
    return [entry.guard_type in ("GLOBAL_STATE", "SHAPE_ENV")
            or (entry.guard_type == "TENSOR_MATCH" and not entry.is_global) for entry in entries]


def save(size: str, device: str, mode: str, path: str) -> dict:
    import torch

    unet, arguments, build_s = pipeline_and_inputs(size, device)
    torch._dynamo.config.enable_aot_compile = True  # off by default before torch 2.13
    with torch.inference_mode():
        options = {**torch._inductor.list_mode_options(mode), "guard_filter_fn": portable_guards}
        compiled, compile_s = timed(lambda: torch.compile(run_unet, fullgraph=True, options=options)
                                    .aot_compile(arguments))
        _, first_s = timed(lambda: compiled(*arguments[0], **arguments[1]))
    compiled.save_compiled_function(path)
    return {"build_s": round(build_s, 2), "aot_compile_s": round(compile_s, 2), "first_call_s": round(first_s, 2),
            "artifact_bytes": os.path.getsize(path)}


def load(size: str, device: str, mode: str, path: Optional[str]) -> dict:
    """The saved function loaded from `path`, or where None, the UNet compiled by torch.compile as
    nav-orch's warm reload does today (Dynamo traces it again; Inductor's cache serves the rest)."""
    import torch

    started = time.perf_counter()
    unet, arguments, build_s = pipeline_and_inputs(size, device)
    args, kwargs = arguments
    with torch.inference_mode():
        if path is None:
            options = torch._inductor.list_mode_options(mode)
            compiled, load_s = timed(lambda: torch.compile(run_unet, fullgraph=True, options=options))
        else:
            with open(path, "rb") as artifact:
                compiled, load_s = timed(lambda: torch.compiler.load_compiled_function(artifact))
        calls = [round(timed(lambda: compiled(*args, **kwargs))[1], 3) for _ in range(3)]
        to_fast_s = time.perf_counter() - started
        got = compiled(*args, **kwargs).float()
        expected = run_unet(*args).float()
        difference = (got - expected).abs().max().item()
        rounds: dict[str, list[float]] = {"compiled": [], "eager": []}
        for _ in range(10):  # alternated: compiled, eager, compiled, eager ...
            rounds["compiled"].append(timed(lambda: [compiled(*args, **kwargs) for _ in range(5)])[1] / 5)
            rounds["eager"].append(timed(lambda: [run_unet(*args) for _ in range(5)])[1] / 5)
    ratios = [e / a for a, e in zip(rounds["compiled"], rounds["eager"])]
    return {"build_s": round(build_s, 2), "load_s": round(load_s, 2), "first_calls_s": calls,
            "to_first_fast_call_s": round(to_fast_s, 2), "max_abs_difference": difference,
            "compiled_ms": round(statistics.median(rounds["compiled"]) * 1e3, 3),
            "eager_ms": round(statistics.median(rounds["eager"]) * 1e3, 3),
            "speedup_over_eager": {"median": round(statistics.median(ratios), 3),
                                   "range": [round(min(ratios), 3), round(max(ratios), 3)]}}


def in_fresh_process(step: list[str], cache: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *step], env=caches_in(cache), capture_output=True, text=True)
    wall = round(time.perf_counter() - started, 2)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return {"error": lines[-1] if lines else f"exit {done.returncode}", "process_wall_s": wall}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True)
    parser.add_argument("--size", default="sd15")
    parser.add_argument("--modes", default="reduce-overhead,default")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (--size tiny)")
    parser.add_argument("--out")
    parser.add_argument("--step", choices=("save", "load", "dynamo"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    folder = Path(arguments.folder)
    artifact = str(folder / f"unet-{arguments.mode}.aot")
    if arguments.step == "save":
        print(json.dumps(save(arguments.size, arguments.device, arguments.mode, artifact)))
        return
    if arguments.step in ("load", "dynamo"):
        path = artifact if arguments.step == "load" else None
        print(json.dumps(load(arguments.size, arguments.device, arguments.mode, path)))
        return
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if arguments.device == "cuda" else "cpu"
    record: dict = {"torch": torch.__version__, "device": device, "size": arguments.size,
                    "has_aot_compile": hasattr(torch.compiler, "load_compiled_function"), "modes": {}}
    for mode in arguments.modes.split(","):
        common = ["--folder", str(folder), "--size", arguments.size, "--device", arguments.device, "--mode", mode]
        with tempfile.TemporaryDirectory() as saving, tempfile.TemporaryDirectory() as loading:
            saved = in_fresh_process([*common, "--step", "save"], saving)
            loading_step, dynamo_step = [*common, "--step", "load"], [*common, "--step", "dynamo"]
            empty = in_fresh_process(loading_step, loading) if "error" not in saved else {}
            hot = in_fresh_process(loading_step, saving) if "error" not in saved else {}
            # Twice: the first may find nothing of its own there (aot_compile keys its graphs otherwise).
            dynamo = in_fresh_process(dynamo_step, saving)
            dynamo_again = in_fresh_process(dynamo_step, saving)
        record["modes"][mode] = {"save": saved, "load_on_empty_cache": empty, "load_on_saving_cache": hot,
                                 "dynamo_on_saving_cache": dynamo, "dynamo_again": dynamo_again}
        print(mode, json.dumps(record["modes"][mode]), flush=True)
    if arguments.out:
        Path(arguments.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
