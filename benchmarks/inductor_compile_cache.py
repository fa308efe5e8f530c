"""Seconds torch.compile (mode="reduce-overhead", freezing, static shapes: what nav-orch's
torch-compile-cudagraphs variant does) spends on ResNet-50 fp16 per batch shape, on a GPU.

    python3 benchmarks/inductor_compile_cache.py 8,1,64     # prints {"sizes": {batch: seconds}}

Each figure is the first three calls at that shape (compile, CUDA-graph warm-up and recording).
Run it with TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR set, cold and again with the caches
another process filled, to see what warming Inductor's caches in parallel processes would save
(docs/performance.md).
"""
import json
import sys
import time

import torch
import torchvision

torch._dynamo.config.automatic_dynamic_shapes = False
torch._inductor.config.freezing = True


def main() -> None:
    sizes = [int(size) for size in sys.argv[1].split(",")]
    model = torchvision.models.resnet50().eval().half().cuda()
    compiled = torch.compile(model, mode="reduce-overhead", backend="inductor")
    seconds = {}
    with torch.inference_mode():
        for batch in sizes:
            x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half)
            start = time.perf_counter()
            for _ in range(3):
                compiled(x)
            torch.cuda.synchronize()
            seconds[batch] = round(time.perf_counter() - start, 2)
    print(json.dumps({"sizes": seconds}))


if __name__ == "__main__":
    main()
