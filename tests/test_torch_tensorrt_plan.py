"""Torch-TensorRT's conversion without TensorRT (issue 19, item 1; issue 34, item 2): the exported
program carries a bounded batch range, traced at the engine's opt batch, and bounded Dims for an
inplace decoder's declared lengths; the conversion hands the program itself to the API for exported
programs (`torch_tensorrt.dynamo.compile`) with each input's min/opt/max. Real torch on the CPU, in the
inplace tests' Python (the host's has no framework); a recording stand-in for torch_tensorrt."""
from __future__ import annotations

import json
import subprocess

SCRIPT = r'''
import json, sys, tempfile, types
from pathlib import Path
import torch
from runners.toolchains import torch_runner
from runners.contract.protocol import AxisRange, IOSpec, TensorSpec
from runners.toolchains.tensorrt_build import BatchRange, example_batch

def traced(program):
    """Each input's traced sizes: Torch-TensorRT 2.9's opt for its dynamic axes."""
    users = set(program.graph_signature.user_inputs)
    return [[int(d.node.hint) if isinstance(d, torch.SymInt) else int(d) for d in node.meta["val"].shape]
            for node in program.graph.nodes if node.op == "placeholder" and node.name in users]

model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
batches = BatchRange(min=1, opt=8, max=64)
example = (torch.randn(example_batch(batches, engine_program=True), 4),)
io = IOSpec(inputs=[TensorSpec("x", "float32", [None, 4])], outputs=[TensorSpec("y", "float32", [None, 3])])
target = Path(tempfile.mkdtemp()) / "model.pt2"
torch_runner.EXPORTERS["torch-tensorrt"](model, example, io, target, batches)
program = torch.export.load(str(target))
ranges = [[int(r.lower), int(r.upper)] for r in program.range_constraints.values()]

class Decoder(torch.nn.Module):
    def forward(self, ids, mask):
        return ids.float() * mask.float()

length = AxisRange(axis=1, min=3, typical=9, max=40)
decoder_io = IOSpec(inputs=[TensorSpec("input_ids", "int64", [1, None], ranges=[length]),
                            TensorSpec("attention_mask", "int64", [1, None], ranges=[length])],
                    outputs=[TensorSpec("y", "float32", [1, None])], batch_axis=None)
decoder = Path(tempfile.mkdtemp()) / "model.pt2"
torch_runner.EXPORTERS["torch-tensorrt"](Decoder(), (torch.ones(1, 9, dtype=torch.long),
                                         torch.ones(1, 9, dtype=torch.long)), decoder_io, decoder, None)
decoder_program = torch.export.load(str(decoder))
decoder_ranges = [[int(r.lower), int(r.upper)] for r in decoder_program.range_constraints.values()]

calls = []
class Input:
    def __init__(self, **shapes):
        self.shapes = {k: list(v) if isinstance(v, tuple) else str(v) for k, v in shapes.items()}
fake = types.SimpleNamespace(Input=Input, dynamo=types.SimpleNamespace(
    compile=lambda program, **kw: calls.append((type(program).__name__, kw)) or "engine"))
samples = [torch.randn(8, 4)]
out = torch_runner.compile_program(fake, program, io, samples, BatchRange(min=1, opt=8, max=64), "fp16")
(kind, kw), = calls
print(json.dumps({"ranges": ranges, "traced": traced(program), "decoder_ranges": decoder_ranges,
                  "decoder_traced": traced(decoder_program), "program": kind, "out": out,
                  "inputs": [i.shapes for i in kw["arg_inputs"]],
                  "precisions": sorted(str(p) for p in kw["enabled_precisions"])}))
'''


def test_the_program_is_bounded_and_compiled_through_the_exported_program_api(user_python):
    run = subprocess.run([user_python, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                         cwd=__import__("pathlib").Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["ranges"] == [[1, 64]]  # bounded: 2.9's range extraction cannot take an unbounded one
    assert found["traced"] == [[8, 4]]  # 2.9's opt: the largest profiled batch, not the exporters' usual 2
    # One bounded length for the tokens and their mask (recorded alike), traced at the samples' (typical) size.
    assert found["decoder_ranges"] == [[3, 40]]
    assert found["decoder_traced"] == [[1, 9], [1, 9]]
    assert found["program"] == "ExportedProgram" and found["out"] == "engine"
    assert found["inputs"] == [{"min_shape": [1, 4], "opt_shape": [8, 4], "max_shape": [64, 4],
                                "dtype": "torch.float32"}]
    assert found["precisions"] == ["torch.float16"]
