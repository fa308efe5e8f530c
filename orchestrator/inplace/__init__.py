"""Inplace optimization of PyTorch pipelines: the one part of `orchestrator/` that runs in the
user's own process. It imports torch only inside its functions; the CLI never imports it.

    pipe.unet = inplace.Module(pipe.unet, name="unet")
    inplace.optimize(pipe, samples, workspace="nav-pipeline")
    inplace.load_optimized(pipe, workspace="nav-pipeline")
    inplace.serve(fn, inputs=[inplace.Tensor("prompt_ids", np.int64, (-1,))], ...)   # through PyTriton

The stages, one module each: module.py wraps a pipeline's module (records its calls, runs a
swapped-in variant); structure.py and shapes.py turn calls into named leaves and dynamic axes;
capture.py exports a module as an artifact that loads without its source; optimize.py runs each
captured module through the normal optimize run, checks the pipeline and writes pipeline.json;
candidate.py compiles the module itself in this process, a candidate beside the runners' variants;
compile_cache.py keeps its compile cache in the workspace for a later process's warm start;
swap.py runs a chosen variant in place of its module; serve.py serves a function that calls the
optimized pipeline through PyTriton.
"""
from orchestrator.inplace.module import Module
from orchestrator.inplace.optimize import PipelineMismatch, load_optimized, optimize
from orchestrator.inplace.serve import Tensor, serve

__all__ = ["Module", "PipelineMismatch", "Tensor", "load_optimized", "optimize", "serve"]
