"""Inplace optimization of PyTorch pipelines: the one part of `orchestrator/` that runs in the
user's own process (it imports torch only inside its functions; the CLI never imports it).

Built so far: the pure core of recording a module's calls (structure.py: nested arguments and
outputs as named leaves and back; shapes.py: which calls to keep and each input's dynamic axes).
The `Module` wrapper, capture, optimization and swap-back come next (issue "Inplace optimization").
"""
