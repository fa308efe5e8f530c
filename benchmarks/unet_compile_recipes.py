"""Which part of a torch.compile recipe makes the SD-1.5-sized UNet fast: channels_last, or compiling
the module itself rather than its ExportedProgram (what nav-orch's inplace capture hands the runners).

    python benchmarks/unet_compile_recipes.py [--steps 20] [--recipes a,b] [--out unet.json]

The UNet of examples/pipelines/sd_style.py (random weights) in float16, batch 2 (guidance), 64x64
latents, called `--steps` times as a denoising loop would; each recipe is timed as the median of
`--runs` such loops after `--warmup` loops (the first loop's time includes the compile). Prints a
table and writes the figures to `--out`. Timings are only meaningful on a GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# module-ro-cl last: it turns the module itself channels_last.
RECIPES = {
    "eager": "the module, eager",
    "module-ro": "the module, torch.compile(mode='reduce-overhead')",
    "program-nav": "its ExportedProgram's module(), freezing + CUDA graphs (nav-orch's torch-compile-cudagraphs)",
    "program-nav-cl": "the same, channels_last",
    "module-ro-cl": "the module, channels_last, torch.compile(mode='reduce-overhead') (the issue's recipe)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--size", default="sd15", help="tiny with --device cpu: a smoke test of this script")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    import torch

    from examples.pipelines import sd_style

    device, dtype = args.device, torch.float16 if args.device == "cuda" else torch.float32
    unet = sd_style.build(args.size, device=device, dtype=dtype).unet
    config = unet.config
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(2, config.in_channels, config.sample_size, config.sample_size, device=device, dtype=dtype,
                          generator=generator)
    embeddings = torch.randn(2, 77, config.cross_attention_dim, device=device, dtype=dtype, generator=generator)
    timesteps = [torch.tensor(t, device=device) for t in range(999, 0, -1000 // args.steps)][: args.steps]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    figures = {}
    for name in args.recipes.split(","):
        torch._dynamo.reset()
        model = recipe(torch, name, unet, latents, timesteps[0], embeddings)

        def loop(model=model) -> float:
            sync()
            start = time.perf_counter()
            with torch.inference_mode():
                for t in timesteps:
                    model(latents, t, embeddings)
            sync()
            return time.perf_counter() - start

        first = loop()
        for _ in range(max(args.warmup - 1, 0)):
            loop()
        times = [loop() for _ in range(args.runs)]
        figures[name] = {"loop_s": statistics.median(times), "first_loop_s": first, "times_s": times}
        print(f"{name:16} {figures[name]['loop_s']:.4f} s   first loop {first:7.1f} s   {RECIPES[name]}", flush=True)
        if args.out:
            device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
            args.out.write_text(json.dumps({"device": device_name, "torch": torch.__version__, "steps": args.steps,
                                            "recipes": figures}, indent=1))


def recipe(torch, name: str, unet, latents, timestep, embeddings):
    def forward(module):
        return lambda sample, t, hidden: module(sample, t, encoder_hidden_states=hidden, return_dict=False)[0]

    if name == "eager":
        return forward(unet)
    if name.startswith("module-"):
        module = unet.to(memory_format=torch.channels_last) if name.endswith("-cl") else unet
        return forward(torch.compile(module, mode="reduce-overhead"))
    program = torch.export.export(unet, (latents, timestep), {"encoder_hidden_states": embeddings,
                                                              "return_dict": False}, strict=False)
    module = program.module()
    if name.endswith("-cl"):
        module = module.to(memory_format=torch.channels_last)
    compiled = torch.compile(module, options={"freezing": True, "triton.cudagraphs": True})
    return lambda sample, t, hidden: compiled(sample, t, encoder_hidden_states=hidden, return_dict=False)[0]


if __name__ == "__main__":
    main()
