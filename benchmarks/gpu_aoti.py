"""AOTInductor on a GPU against today's winner, alternated in one process (issue 29).

    python benchmarks/gpu_aoti.py --models resnet50,bert-base --out aoti.json

For each model in fp16 (ResNet-50 channels_last), at batch 1 and batch 64:
  compiled   torch.compile(mode="reduce-overhead") of the module: nav-orch's GPU winner
             (torch-compile-cudagraphs), which no server can load;
  aoti       the ExportedProgram (dynamic batch) compiled by AOTInductor into a package and loaded
             back (torch-aoti): a file Triton's Python backend and PyTriton serve;
  aoti-graph the loaded package replayed from a CUDA graph per batch size
             (CudaGraphs here).
Each is timed in rounds of `--calls` back-to-back calls (CUDA events), A B C A B C ..., `--rounds`
times; the table gives each one's median per call, and the median and spread (min..max over rounds)
of its ratio to `compiled` in the same round. Also the package's compile, size and load times, and
the graph capture's. Writes the record (JSON) to --out. Needs torch with CUDA, torchvision and
transformers (no nav-orch dependencies: it imports only runners/serving/variant_loader.py).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def build(name: str, torch):
    """(module in fp16 on the GPU, memory format, a function of the batch size giving its inputs)."""
    if name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50().eval().cuda().half().to(memory_format=torch.channels_last)
        return model, lambda b: (torch.randn(b, 3, 224, 224, device="cuda", dtype=torch.half)
                                 .contiguous(memory_format=torch.channels_last),)
    if name == "bert-base":
        from transformers import BertConfig, BertModel

        class Hidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = BertModel(BertConfig())

            def forward(self, input_ids):
                return self.bert(input_ids=input_ids, return_dict=False)[0]

        return Hidden().eval().cuda().half(), lambda b: (torch.randint(0, 1000, (b, 128), device="cuda"),)
    raise SystemExit(f"unknown model {name}")


class CudaGraphs:
    """A torch variant on a GPU, replayed from a CUDA graph per input shapes and dtypes: the first call at
    new shapes warms it up on a side stream and captures one; a later call copies its inputs into the
    graph's own and replays it, with no kernel launched from Python. The outputs live in the graph's
    memory, which the next replay at those shapes overwrites: a caller that keeps them clones them."""

    def __init__(self, run: Callable[..., Any]):
        self.run = run
        self.graphs: dict[tuple, tuple[Any, list[Any], Any]] = {}

    def __call__(self, *tensors: Any) -> Any:
        import torch

        key = tuple((tuple(tensor.shape), tensor.dtype) for tensor in tensors)
        if key not in self.graphs:
            static = [tensor.clone() for tensor in tensors]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # what runs once (allocations, autotuning) runs before the capture
                    self.run(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self.run(*static)
            self.graphs[key] = (graph, static, outputs)
        graph, static, outputs = self.graphs[key]
        for buffer, tensor in zip(static, tensors):
            buffer.copy_(tensor)
        graph.replay()
        return outputs


def timed_calls(torch, run, inputs, calls: int) -> float:
    """Milliseconds per call over `calls` back-to-back calls, by CUDA events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        run(*inputs)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def measure(name: str, batch_sizes: list[int], rounds: int, calls: int, torch, loader) -> dict:
    model, make = build(name, torch)
    record: dict = {"model": name, "batches": {}}
    with torch.inference_mode():
        torch.manual_seed(0)
        example = make(2)
        batch = torch.export.Dim("batch", min=1, max=max(batch_sizes))
        program = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example))
        folder = Path(tempfile.mkdtemp())
        started = time.perf_counter()
        from torch import _inductor

        _inductor.aoti_compile_and_package(program, package_path=str(folder / "model.aoti.pt2"),
                                           inductor_configs={"freezing": True})
        record["aoti_compile_s"] = time.perf_counter() - started
        record["aoti_package_mb"] = (folder / "model.aoti.pt2").stat().st_size / 1e6
        started = time.perf_counter()
        aoti = loader.load_aoti(str(folder / "model.aoti.pt2"), "cuda:0")
        record["aoti_load_s"] = time.perf_counter() - started
        graphed = CudaGraphs(aoti)
        compiled = torch.compile(model, mode="reduce-overhead")
        for size in batch_sizes:
            inputs = make(size)
            entry: dict = {}
            started = time.perf_counter()
            reference = model(*inputs).float()
            for label, run in (("compiled", compiled), ("aoti", aoti), ("aoti-graph", graphed)):
                started = time.perf_counter()
                for _ in range(3):  # compiles (compiled), captures (aoti-graph), warms up
                    out = run(*inputs)
                torch.cuda.synchronize()
                entry[f"{label}_first_calls_s"] = time.perf_counter() - started
                out = out[0] if isinstance(out, (list, tuple)) else out
                entry[f"{label}_max_abs_diff"] = float((out.float() - reference).abs().max())
            times: dict[str, list[float]] = {"compiled": [], "aoti": [], "aoti-graph": []}
            for _ in range(rounds):
                for label, run in (("compiled", compiled), ("aoti", aoti), ("aoti-graph", graphed)):
                    times[label].append(timed_calls(torch, run, inputs, calls))
            for label, values in times.items():
                entry[f"{label}_ms"] = statistics.median(values)
                entry[f"{label}_ms_rounds"] = values
                if label != "compiled":
                    ratios = [c / v for c, v in zip(times["compiled"], values)]  # >1: faster than compiled
                    entry[f"{label}_speed_vs_compiled"] = {"median": statistics.median(ratios),
                                                          "min": min(ratios), "max": max(ratios)}
            record["batches"][str(size)] = entry
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,bert-base")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch

    sys.path.insert(0, str(ROOT))
    from runners.serving import variant_loader

    records = {"command": " ".join(sys.argv), "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
               "python": platform.python_version(), "models": []}
    for name in args.models.split(","):
        records["models"].append(measure(name, [int(b) for b in args.batch_sizes.split(",")], args.rounds,
                                         args.calls, torch, variant_loader))
        args.out.write_text(json.dumps(records, indent=2))
    print(f"{'model':10} {'batch':>5} {'compiled ms':>11} {'aoti ms':>9} {'aoti x':>16} {'aoti-graph ms':>13} "
          f"{'aoti-graph x':>16}")
    for record in records["models"]:
        for size, entry in record["batches"].items():
            spread = {k: entry[f"{k}_speed_vs_compiled"] for k in ("aoti", "aoti-graph")}
            print(f"{record['model']:10} {size:>5} {entry['compiled_ms']:11.3f} {entry['aoti_ms']:9.3f} "
                  f"{spread['aoti']['median']:6.3f} ({spread['aoti']['min']:.2f}-{spread['aoti']['max']:.2f}) "
                  f"{entry['aoti-graph_ms']:13.3f} {spread['aoti-graph']['median']:6.3f} "
                  f"({spread['aoti-graph']['min']:.2f}-{spread['aoti-graph']['max']:.2f})")
        print(f"{record['model']}: package compiled in {record['aoti_compile_s']:.1f} s, "
              f"{record['aoti_package_mb']:.0f} MB, loaded in {record['aoti_load_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
