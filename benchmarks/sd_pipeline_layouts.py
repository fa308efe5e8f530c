"""The SD-1.5-sized pipeline's UNet loop, compiled in channels_last or not, in a float16 pipeline or a
float32 one whose modules run in float16 behind casts (as inplace runs a user's float32 pipeline), on a
GPU:

    python benchmarks/sd_pipeline_layouts.py --pairs 9 --out sd-layouts.json

Pipelines (random weights, examples/pipelines/sd_style.py, 20 steps), the UNet compiled with
torch.compile(mode="reduce-overhead") in each but the last, timed in one process, one call each per
round, the order reversed every other round; per pipeline the median time and the median (min-max)
of its time over the first's per round:
  fp16-cl         the hand recipe: a float16 pipeline, its UNet in channels_last
  fp16            the same, the UNet contiguous
  fp32+casts      a float32 pipeline; its UNet, text encoder and VAE decoder float16 copies, their
                  inputs cast to float16 and outputs back to float32 (the UNet's cloned first: CUDA
                  graph memory), the UNet contiguous
  fp32+casts-cl   the same, the UNet in channels_last
  eager-fp16      a float16 pipeline, nothing compiled
Needs torch with CUDA, diffusers and transformers.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=9, help="alternated rounds (default 9)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    from examples.pipelines import sd_style

    sample = sd_style.samples("sd15", count=1)[0]

    def half(value: Any) -> Any:
        return value.half() if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    class Cast(torch.nn.Module):
        """A float16 module in a float32 pipeline: inputs cast in, the first output cast back."""

        def __init__(self, inner: Any, as_tuple: bool = True, clone: bool = False) -> None:
            super().__init__()
            self.inner, self.as_tuple, self.clone = inner, as_tuple, clone

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            out = self.inner(*[half(a) for a in args], **{k: half(v) for k, v in kwargs.items()})
            first = out if isinstance(out, torch.Tensor) else out[0]
            first = (first.clone() if self.clone else first).float()
            return (first,) if self.as_tuple else first

    def build(dtype: Any) -> Any:
        return sd_style.build("sd15", "cuda", dtype, steps=args.steps)

    def unet(pipe: Any, channels_last: bool) -> Any:
        module = pipe.unet.to(memory_format=torch.channels_last) if channels_last else pipe.unet
        return torch.compile(module, mode="reduce-overhead")

    def fp16(channels_last: bool) -> Any:
        pipe = build(torch.float16)
        pipe.unet = unet(pipe, channels_last)
        return pipe

    def fp32_with_casts(channels_last: bool) -> Any:
        pipe, copies = build(torch.float32), build(torch.float16)
        pipe.unet = Cast(unet(copies, channels_last), clone=True)
        pipe.text_encoder = Cast(copies.text_encoder)
        pipe.vae.decoder = Cast(copies.vae.decoder, as_tuple=False)
        return pipe

    pipes = {"fp16-cl": fp16(True), "fp16": fp16(False), "fp32+casts": fp32_with_casts(False),
             "fp32+casts-cl": fp32_with_casts(True), "eager-fp16": build(torch.float16)}

    def call(pipe: Any) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        pipe(sample)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    record: dict[str, Any] = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "steps": args.steps,
                              "warmup_s": {}, "times_s": {name: [] for name in pipes}}
    for name, pipe in pipes.items():
        record["warmup_s"][name] = sum(call(pipe) for _ in range(3))  # compiles, then records CUDA graphs
    for index in range(args.pairs):
        for name in list(pipes) if index % 2 == 0 else list(reversed(pipes)):
            record["times_s"][name].append(call(pipes[name]))
    first = record["times_s"]["fp16-cl"]
    print(f"{'pipeline':15} {'median ms':>10} {'over fp16-cl':>26}")
    for name, times in record["times_s"].items():
        ratios = [t / f for t, f in zip(times, first)]
        record.setdefault("over_fp16_cl", {})[name] = {"median": statistics.median(ratios), "min": min(ratios),
                                                       "max": max(ratios)}
        print(f"{name:15} {statistics.median(times) * 1e3:10.2f} {statistics.median(ratios):10.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f})")
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
