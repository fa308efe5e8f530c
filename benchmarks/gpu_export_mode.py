"""Why nav-orch's compiled program may lose to its module on a GPU (issue 29): ResNet-50 fp16 channels_last
at batch 64, compiled as nav-orch compiles a variant (variant_loader.compile_module, weights frozen),
from the module, from its program exported as torch_runner.export_compiled does (FlatOutputs, autograd
on), and from the same under inference_mode; alternated rounds, each result printed as it comes.

    python benchmarks/gpu_export_mode.py
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    import torch
    from gpu_aoti import build, timed_calls

    from runners.contract.protocol import IOSpec, TensorSpec
    from runners.serving import variant_loader
    from runners.toolchains import torch_runner

    model, make = build("resnet50", torch)
    io = IOSpec(inputs=[TensorSpec("x", "float16", [None, 3, 224, 224])],
                outputs=[TensorSpec("y", "float32", [None, 1000])])
    example = make(2)

    def program(inference: bool):
        path = Path(tempfile.mkdtemp()) / "program.pt2"
        started = time.perf_counter()
        if inference:
            with torch.inference_mode():
                torch.export.save(torch_runner.exported_program(model, example, io), str(path))
        else:
            torch.export.save(torch_runner.exported_program(model, example, io), str(path))
        print(f"exported (inference_mode={inference}) in {time.perf_counter() - started:.1f} s", flush=True)
        return variant_loader.load_exported_program(str(path), "cuda")

    variants = {"module": model, "program-grad": program(False), "program-inference": program(True)}
    compiled = {name: variant_loader.compile_module(module, "reduce-overhead", freezing=True,
                                                    automatic_dynamic_shapes=False)
                for name, module in variants.items()}
    inputs = make(64)
    with torch.inference_mode():
        for name, run in compiled.items():
            started = time.perf_counter()
            for _ in range(3):
                run(*inputs)
            torch.cuda.synchronize()
            print(f"{name} compiled in {time.perf_counter() - started:.1f} s: "
                  f"{timed_calls(torch, run, inputs, 50):.3f} ms per call", flush=True)
        times = {name: [] for name in compiled}
        for _ in range(6):
            for name, run in compiled.items():
                times[name].append(timed_calls(torch, run, inputs, 50))
        for name, values in times.items():
            ratios = [m / v for m, v in zip(times["module"], values)]
            print(f"{name:18} {statistics.median(values):.3f} ms; speed vs module {statistics.median(ratios):.3f} "
                  f"({min(ratios):.3f}-{max(ratios):.3f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
