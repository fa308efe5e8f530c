"""Inplace optimization of PyTorch pipelines: the one part of `orchestrator/` that runs in the
user's own process (it imports torch only inside its functions; the CLI never imports it).

Built so far: recording a module's calls. `module.Module` wraps a pipeline's module and records
its calls; structure.py turns nested arguments and outputs into named leaves and back; shapes.py
says which calls to keep and each input's dynamic axes. Capture, optimization through the runners
and swap-back come next (issue "Inplace optimization of PyTorch pipelines").
"""
