"""`inplace.Module` with real torch, in a user's process (.venv-inplace, the `inplace-test` extra):
the host's own environment has no torch."""
from __future__ import annotations

import subprocess
import textwrap

import pytest
from conftest import ROOT

# Marked docker with the other inplace tests: its user environment is as heavy to make.
pytestmark = [pytest.mark.docker]

SCRIPT = textwrap.dedent('''
    import dataclasses
    from typing import Optional

    import torch
    from orchestrator import inplace
    from orchestrator.inplace.module import Module
    from runners.contract.structure import unflatten

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor
        cache: Optional[tuple] = None

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 4)
            self.config = {"hidden": 8}

        def forward(self, x, mask=None):
            return Out(self.proj(x) * mask[..., None], (x.sum(-1),))

    torch.manual_seed(0)
    inner = Decoder().eval()
    wrapped = Module(inner, name="decoder", max_calls=2)
    assert isinstance(wrapped, torch.nn.Module)
    assert wrapped.config == {"hidden": 8} and wrapped.proj is inner.proj
    assert [n for n, _ in wrapped.named_parameters()] == ["wrapped.proj.weight", "wrapped.proj.bias"]
    wrapped.record()
    for length in (3, 4, 4, 5):
        x, mask = torch.randn(1, length, 8), torch.ones(1, length)
        got = wrapped(x, mask=mask)
        want = inner(x, mask=mask)
        assert isinstance(got, Out) and torch.equal(got.logits, want.logits)
    log = wrapped.stop_recording()
    assert wrapped.nav_log is None and sum(log.seen.values()) == 4
    calls = log.calls()
    assert len(calls) == 2
    assert sorted(calls[0].inputs) == ["in.args.0", "in.kwargs.mask"]
    assert sorted(calls[0].outputs) == ["out.cache.0", "out.logits"]
    rebuilt = unflatten(calls[-1].outputs_structure, calls[-1].outputs, resolve=lambda name: Out)
    assert rebuilt.logits.shape == (1, calls[-1].inputs["in.args.0"].shape[1], 4)
    axes = log.dynamic_axes()
    (length,) = axes["in.args.0"]  # the batch never changed: axis 1 alone is dynamic
    assert (length.axis, length.min, length.typical, length.max) == (1, 3, 4, 5)
    print("inplace-module-ok")
''')


def test_a_wrapped_module_behaves_as_its_own_and_records_its_calls(user_python):
    run = subprocess.run([user_python, "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("inplace-module-ok")


BF16 = textwrap.dedent('''
    import numpy as np
    import torch
    from orchestrator.inplace.module import Module

    torch.manual_seed(0)
    inner = torch.nn.Linear(8, 4).to(torch.bfloat16).eval()
    wrapped = Module(inner, name="proj")
    wrapped.record()
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    assert torch.equal(wrapped(x), inner(x))
    (call,) = wrapped.stop_recording().calls()
    recorded = call.inputs["in.args.0"]
    assert recorded.dtype == np.float32 and np.array_equal(recorded, x.float().numpy())
    assert call.outputs["out"].dtype == np.float32
    print("bf16-recorded")
''')


def test_a_bf16_module_is_recorded_its_floats_as_float32(user_python):
    # numpy has no bfloat16: the recording held tensor.numpy() and failed on a bf16 module's calls.
    run = subprocess.run([user_python, "-c", BF16], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("bf16-recorded")
