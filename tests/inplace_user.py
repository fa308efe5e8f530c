"""A user's process for the inplace tests (tests/test_e2e_inplace.py): it has torch, transformers and
diffusers (the `inplace-test` extra), which the host's own environment never has.

    python tests/inplace_user.py optimize PIPELINE WORKSPACE REPORT.json [--executor docker]
    python tests/inplace_user.py load PIPELINE WORKSPACE REPORT.json
    python tests/inplace_user.py edges toy WORKSPACE REPORT.json
    python tests/inplace_user.py serve sd WORKSPACE REPORT.json
    python tests/inplace_user.py as-diffusers sd WORKSPACE REPORT.json

`optimize` wraps the bundled pipeline's modules and runs inplace.optimize. `load` is a later
process: it builds the same pipeline, wraps the same modules, loads the chosen variants, runs the
samples, and reports what each module ran and how far the outputs lie from the eager pipeline's.
`serve` loads the same way, writes the eager pipeline's output for the first sample to REPORT.npz, and
serves the optimized pipeline through inplace.serve until a stop signal; then it reports how often each
module ran its variant. `edges` runs a toy pipeline through the cases a user gets wrong or that fall outside a capture
(with the local executor: no container is needed to show them). `as-diffusers` runs the SD-style
pipeline and diffusers' own StableDiffusionPipeline built from the same modules and scheduler, on the
same prompt embeddings and starting latents, and reports how far their images lie apart.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.pipelines import sd_style, whisper_style  # noqa: E402
from orchestrator import inplace  # noqa: E402

PIPELINES = {"sd": sd_style, "whisper": whisper_style}


def said(caught: list) -> list[str]:
    """What nav-orch warned about (torch warns of its own deprecations too)."""
    return [str(warning.message) for warning in caught if str(warning.message).startswith("inplace module")]


class Cache:
    """Stands for a generation cache object: neither a tensor nor a plain constant."""


class Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.head = torch.nn.Linear(8, 20)

    def forward(self, ids: torch.Tensor, cache: object = None) -> tuple[torch.Tensor]:
        return (self.head(torch.tanh(self.embed(ids))).cumsum(1),)


class Toy:
    """Greedy generation: the decoder is called once per new token, on the whole sequence."""

    def __init__(self, length: int, cache: object = None) -> None:
        torch.manual_seed(0)
        self.decoder: torch.nn.Module = Decoder().eval()
        self.length, self.cache = length, cache

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        for _ in range(self.length):
            logits = self.decoder(ids, cache=self.cache)[0]
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], 1)
        return ids


def toy(length: int, cache: object = None) -> Toy:
    pipe = Toy(length, cache)
    pipe.decoder = inplace.Module(pipe.decoder, name="decoder")
    return pipe


def edges(workspace: Path) -> dict:
    """What a user sees: each case's error or outcome."""
    from orchestrator.errors import BadInput

    found: dict = {}
    options = {"executor": "local", "images": "cpu", "gpus": "none", "formats": ["exported-program"],
               "profiling": PROFILING}
    start = [torch.zeros(1, 2, dtype=torch.int64), torch.ones(1, 3, dtype=torch.int64)]
    try:
        inplace.optimize(Toy(3), start, workspace=workspace / "none", **options)
    except BadInput as error:
        found["no_module"] = str(error)
    noisy = toy(3)
    try:
        inplace.optimize(lambda ids: noisy(ids) + torch.randint(0, 1000, (1,)), start,
                         modules=[noisy.decoder], workspace=workspace / "noisy", **options)
    except BadInput as error:
        found["nondeterministic"] = str(error)
    cached = toy(3, cache=Cache())
    results = inplace.optimize(cached, start, workspace=workspace / "cached", **options)
    found["cache_object"] = results.modules["decoder"].model_dump()
    short = toy(3)
    # torch-compile asked for: compiled here, not in a runner (orchestrator/inplace/narrowing.py).
    results = inplace.optimize(short, start, workspace=workspace / "short", keep_if_slower=True,
                               **{**options, "formats": ["exported-program", "torch-compile"]})
    found["short"] = results.model_dump(mode="json")
    found["short_running"] = inplace.load_optimized(short, workspace=workspace / "short")
    longer = torch.zeros(1, 9, dtype=torch.int64)  # recorded lengths were 2..5: this call runs eager
    with torch.inference_mode():
        want = short.decoder.wrapped(longer)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.inference_mode():
            got = [short.decoder(longer, cache=None)[0], short.decoder(longer, cache=None)[0],
                   short.decoder(start[1], cache=None)[0], short.decoder(start[1])[0]]
    found["outside"] = {"warnings": said(caught),
                        "equal": bool(torch.equal(got[0], want) and torch.equal(got[1], want)),
                        "eager_calls": short.decoder.nav_variant.eager_calls,
                        "calls": short.decoder.nav_variant.calls}
    return found
# Short windows: the tests check outcomes, not figures.
PROFILING = {"warmup_calls": 2, "window_ms": 20, "min_window_calls": 3, "stable_windows": 2, "max_windows": 3}


def wrapped(kind: str) -> tuple[object, dict[str, object]]:
    module = PIPELINES[kind]
    pipe = module.build("tiny")
    found = {}
    for name, (parent, attribute) in module.modules(pipe).items():
        found[name] = inplace.Module(getattr(parent, attribute), name=name)
        setattr(parent, attribute, found[name])
    return pipe, found


def as_diffusers() -> dict:
    """The bundled SD-style loop against StableDiffusionPipeline, as a diffusers user calls it (its
    tokenizer, safety checker and image conversion aside: embeddings in, a tensor out)."""
    from diffusers import StableDiffusionPipeline

    pipe = sd_style.build("tiny", steps=3)
    ids = sd_style.samples("tiny", count=1)[0]
    ours = (pipe(ids) / 2 + 0.5).clamp(0, 1)  # as diffusers' image processor denormalizes
    theirs = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=None, unet=pipe.unet,
                                     scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
                                     requires_safety_checker=False)
    theirs.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        cond, uncond = pipe.text_encoder(ids)[0], pipe.text_encoder(pipe.uncond_ids)[0]
    latents = torch.randn((1, *pipe.latent_shape), generator=torch.Generator().manual_seed(pipe.latent_seed))
    image = theirs(prompt_embeds=cond, negative_prompt_embeds=uncond, latents=latents, num_inference_steps=3,
                   guidance_scale=pipe.guidance_scale, output_type="pt").images
    return {"shapes": [list(ours.shape), list(image.shape)], "max_abs_diff": float((image - ours).abs().max())}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["optimize", "load", "serve", "edges", "as-diffusers"])
    parser.add_argument("pipeline", choices=[*sorted(PIPELINES), "toy"])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("--executor", default="docker")
    args = parser.parse_args()
    if args.step in ("edges", "as-diffusers"):
        args.report.write_text(json.dumps(edges(args.workspace) if args.step == "edges" else as_diffusers()))
        return 0
    samples = PIPELINES[args.pipeline].samples("tiny", count=2)
    pipe, modules = wrapped(args.pipeline)
    if args.step == "optimize":
        # Tiny modules on two cores may leave the pipeline no faster: kept anyway, to load them later.
        results = inplace.optimize(pipe, samples, workspace=args.workspace, images="cpu", gpus="none",
                                   executor=args.executor, profiling=PROFILING, keep_if_slower=True)
        args.report.write_text(json.dumps({"state": results.state, "eager_after": [
            module.nav_variant is None for module in modules.values()]}))
        return 0
    eager = [pipe(sample) for sample in samples]
    if args.step == "serve":
        return serve(pipe, modules, samples[0], eager[0], args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        running = inplace.load_optimized(pipe, workspace=args.workspace)
        optimized = [pipe(sample) for sample in samples]
    report = {
        "running": running,
        "variant_calls": {name: module.nav_variant.calls if module.nav_variant else 0
                          for name, module in modules.items()},
        "eager_calls": {name: module.nav_variant.eager_calls if module.nav_variant else None
                        for name, module in modules.items()},
        "warnings": said(caught),
        "types": [type(output).__name__ for output in optimized],
        "max_abs_diff": max(float((a.float() - b.float()).abs().max()) for a, b in zip(optimized, eager)),
        "scale": max(float(b.float().abs().max()) for b in eager),
        "equal": all(torch.equal(a, b) for a, b in zip(optimized, eager)),
    }
    args.report.write_text(json.dumps(report))
    return 0


def serve(pipe, modules: dict, sample: torch.Tensor, expected: torch.Tensor, args: argparse.Namespace) -> int:
    import numpy as np

    np.savez(args.report.with_suffix(".npz"), prompt_ids=sample.numpy(), image=expected.numpy())
    inplace.load_optimized(pipe, workspace=args.workspace)

    def generate(prompt_ids: np.ndarray) -> dict:
        return {"image": pipe(torch.from_numpy(prompt_ids))}

    inplace.serve(generate, inputs=[inplace.Tensor("prompt_ids", np.int64, (-1,))],
                  outputs=[inplace.Tensor("image", np.float32, (3, -1, -1))], name="sd", max_batch_size=4,
                  echo=lambda line: print(line, file=sys.stderr, flush=True))
    args.report.write_text(json.dumps({"variant_calls": {name: module.nav_variant.calls
                                                         for name, module in modules.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
