"""The module itself as a candidate in the user's process (orchestrator/inplace/candidate.py): which
options it takes (a pure function, here), and, in a user's process with torch, that it is verified on
the recorded calls, timed against the best runner variant, recorded, and reinstated by load_optimized."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
from conftest import ROOT

from orchestrator.inplace.candidate import InProcessOptions, best_torch_variant, in_process_options
from orchestrator.inplace.compile_cache import CACHE_FOLDER, STAMP, CacheStamp, copy_new_files, mismatch
from orchestrator.inplace.narrowing import runner_search
from orchestrator.results import VariantResult


def variant(fmt: str, precision: str = "fp16", memory_format: str = "contiguous") -> VariantResult:
    return VariantResult.model_validate({"name": f"{fmt}-{precision}", "format": fmt, "precision": precision,
                                         "memory_format": memory_format, "status": "ok"})


def test_on_a_cpu_the_module_compiles_in_fp32_with_the_default_mode():
    assert in_process_options(variant("torch-compile-cudagraphs"), False, ["fp32"]) == InProcessOptions(
        "fp32", "default")
    assert in_process_options(None, False, ["fp32"]).name == "module-compiled-fp32"


def test_on_a_gpu_it_takes_the_best_compiled_variants_options():
    best = variant("torch-compile", "bf16", "channels_last")
    options = in_process_options(best, True, ["fp32", "fp16", "bf16"])
    assert options == InProcessOptions("bf16", "default", "channels_last")
    assert options.name == "module-compiled-bf16-channels_last"
    cudagraphs = in_process_options(variant("torch-compile-cudagraphs", "fp32"), True, ["fp32"])
    assert cudagraphs == InProcessOptions("fp32", "reduce-overhead")


def test_on_a_gpu_without_a_compiled_best_it_is_the_hand_recipe_in_the_best_torch_variants_precision_and_layout():
    assert in_process_options(None, True, ["fp32", "fp16"]) == InProcessOptions("fp16", "reduce-overhead")
    assert in_process_options(None, True, []) == InProcessOptions("fp16", "reduce-overhead")
    assert in_process_options(None, True, ["fp32"]) == InProcessOptions("fp32", "reduce-overhead")
    program = variant("exported-program", "bf16", "channels_last")
    assert in_process_options(program, True, ["fp16", "bf16"], ("reduce-overhead",)) == InProcessOptions(
        "bf16", "reduce-overhead", "channels_last")
    # The mode of the compiled format asked for, where it was not CUDA graphs.
    assert in_process_options(program, True, ["bf16"], ("default",)).compile_mode == "default"


def test_with_no_runner_variant_a_convolutional_module_compiles_in_channels_last_on_a_gpu():
    assert in_process_options(None, True, ["fp16"], ("reduce-overhead",), convolutional=True) == InProcessOptions(
        "fp16", "reduce-overhead", "channels_last")
    assert in_process_options(None, True, ["fp16"], ("reduce-overhead",)).memory_format == "contiguous"
    # The runners compared both layouts: their best's stands.
    assert in_process_options(variant("exported-program", "fp16"), True, ["fp16"], ("reduce-overhead",),
                              convolutional=True).memory_format == "contiguous"
    assert in_process_options(None, False, ["fp32"], convolutional=True).memory_format == "contiguous"


def test_the_best_torch_variant_skips_onnx_tensorrt_and_quantized_ones():
    quantized = variant("torch-compile-cudagraphs", "int8").model_copy(update={"quantization": "dynamic"})
    ranked = [variant("tensorrt"), variant("torch-tensorrt"), variant("onnx"), quantized,
              variant("exported-program", "bf16"),
              variant("torchscript-trace")]
    assert best_torch_variant(ranked).name == "exported-program-bf16"
    assert best_torch_variant([variant("onnx")]) is None


def test_compiled_formats_move_into_the_users_process_unless_exhaustive():
    on_gpu = runner_search(None, True, False)
    # On GPUs torch's uncompiled formats go too; ONNX Runtime and the TensorRT formats stay.
    assert on_gpu.formats == ["onnx", "torch-tensorrt", "tensorrt"] and on_gpu.compile_modes == ("reduce-overhead",)
    assert sorted(on_gpu.cuts) == ["exported-program", "torch-compile-cudagraphs", "torchscript-script",
                                   "torchscript-trace"]
    assert "compiled in the user's process instead" in on_gpu.cuts["torch-compile-cudagraphs"]
    assert "beat it in every module measured" in on_gpu.cuts["exported-program"]
    asked = runner_search(["exported-program", "torch-compile", "torch-compile-cudagraphs"], True, False)
    assert asked.formats == [] and asked.compile_modes == ("default", "reduce-overhead")
    assert sorted(asked.cuts) == ["exported-program", "torch-compile", "torch-compile-cudagraphs"]
    # On CPUs only the compiled formats move (there the exported program was not measured against it).
    on_a_cpu = runner_search(["exported-program", "torch-compile"], False, False)
    assert on_a_cpu.formats == ["exported-program"] and list(on_a_cpu.cuts) == ["torch-compile"]
    only_compiled = runner_search(["torch-compile"], False, False)
    assert only_compiled.formats == [] and only_compiled.compile_modes == ("default",)
    # Without a compiled format asked for, nothing moves.
    assert runner_search(["exported-program", "onnx"], True, False).cuts == {}
    kept = runner_search(["exported-program", "torch-compile-cudagraphs"], True, True)
    assert kept.formats == ["exported-program", "torch-compile-cudagraphs"] and kept.cuts == {}
    assert kept.compile_modes == ("reduce-overhead",)
    on_cpu = runner_search(None, False, False)  # no compiled format is a default on CPUs
    assert on_cpu.cuts == {} and on_cpu.compile_modes == ()


# The candidate against a stand-in for the best runner variant (the capture itself, loaded), without
# an optimize run; then written as pipeline.json records it and reinstated by load_optimized.
SCRIPT = textwrap.dedent('''
    import json
    import sys
    import time
    import warnings
    from pathlib import Path

    import torch
    from torch._dynamo.utils import counters
    from orchestrator import inplace
    from orchestrator.inplace.candidate import InProcessOptions, in_process_options
    from orchestrator.inplace.capture import capture
    from orchestrator.inplace.compile_cache import CACHE_FOLDER, STAMP, compiling_into
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    from orchestrator.inplace.optimize import (CAPTURE_FILE, PIPELINE_FILE, compiled_here, keep_compile_cache,
                                               settle, try_in_process)
    from orchestrator.inplace.swap import SwappedVariant, load_capture
    from orchestrator.results import ModuleResult, PipelineResults
    from runners.contract.protocol import write_text_atomic

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.tanh(self.proj(x)).cumsum(1)

    torch.manual_seed(0)
    block = inplace.Module(Block().eval(), name="block")
    pipe = lambda x: block(block(x))
    samples = [torch.randn(1, length, 8) for length in (3, 4, 5)]
    step, root = sys.argv[1], Path(sys.argv[2])
    def kernels():  # the C++ kernels built in this process's Inductor cache
        return {str(path) for path in Path(cache_dir()).rglob("*.so")}

    if step != "optimize":  # a later process: load_optimized, timed to the first call through the variant
        with torch.inference_mode():
            eager = [pipe(x) for x in samples]
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            running = inplace.load_optimized(pipe, workspace=root, modules=[block])
        assert running == {"block": "module-compiled-fp32"}, running
        loaded = kernels()
        with torch.inference_mode():
            got = pipe(samples[0])
        first_s = time.perf_counter() - started
        assert torch.allclose(got, eager[0], atol=1e-5), (got - eager[0]).abs().max()
        assert block.nav_variant.calls == 2, (block.nav_variant.calls, block.nav_variant.eager_calls)
        said = [str(w.message) for w in caught if "compile cache" in str(w.message)]
        print(json.dumps({"first_call_s": first_s, "warnings": said, "kernels_built": len(kernels() - loaded),
                          "hits": counters["inductor"]["fxgraph_cache_hit"],
                          "misses": counters["inductor"]["fxgraph_cache_miss"]}))
        sys.exit(0)
    block.record()
    with torch.inference_mode():
        eager = [pipe(x) for x in samples]
    log = block.stop_recording()
    folder = root / "modules" / "block" / "fp32"
    folder.mkdir(parents=True)
    captured, _ = capture(block.wrapped, log, folder, torch.device("cpu"), "fp32")
    write_text_atomic(folder / CAPTURE_FILE, captured.model_dump_json())
    program = load_capture(folder / captured.file, torch.device("cpu"))
    runner = SwappedVariant("block", "exported-program-fp32", lambda leaves: program(*leaves), captured)
    options = in_process_options(None, False, ["fp32"])
    cpu = torch.device("cpu")

    with compiling_into(root):  # as inplace.optimize compiles: into the workspace's cache
        tried = try_in_process(block, options, captured, log, cpu, 2, runner, "fp32")
    result = tried.result
    assert tried.run is not None and result.status in ("won", "lost"), result
    assert result.recorded_diff <= 1e-5 and result.time_s > 0 and result.best_runner == "exported-program-fp32"
    assert abs(result.vs_best_runner - result.best_runner_s / result.time_s) < 1e-9

    outcome = ModuleResult(status="optimized", best="exported-program-fp32", precision="fp32",
                           candidates=["exported-program-fp32"], workspaces={"fp32": "modules/block/fp32/run"})
    outcome.in_process = result.model_copy(update={"capture": "modules/block/fp32", "status": "won"})
    chosen = settle(outcome, type(tried)(outcome.in_process, tried.run), runner, captured, "block")
    assert chosen.name == outcome.best == "module-compiled-fp32"
    assert outcome.candidates == ["module-compiled-fp32", "exported-program-fp32"]
    lost = outcome.model_copy(deep=True, update={"best": "exported-program-fp32",
                                                 "candidates": ["exported-program-fp32"]})
    lost.in_process.status = "lost"
    assert settle(lost, type(tried)(lost.in_process, tried.run), runner, captured, "block") is runner
    assert lost.candidates == ["exported-program-fp32", "module-compiled-fp32"]

    # A candidate that cannot compile is rejected with why; the runner variant stays.
    broken = try_in_process(block, InProcessOptions("fp32", "no-such-mode"), captured, log, cpu, 1, runner, "fp32")
    assert broken.run is None and broken.result.status == "rejected"
    assert broken.result.reason.startswith("cannot run here"), broken.result.reason
    kept = ModuleResult(status="optimized", best="exported-program-fp32", candidates=["exported-program-fp32"])
    assert settle(kept, broken, runner, captured, "block") is runner
    assert kept.rejected == {"module-compiled-fp32": broken.result.reason}

    # pipeline.json as written, read by load_optimized: the module compiled here is reinstated
    # (no run workspace exists: it needs none), and the module itself is left as it was.
    write_text_atomic(root / PIPELINE_FILE, PipelineResults(nav_orch="test", samples=3, modules={
        "block": outcome.model_copy(update={"workspaces": {}})}).model_dump_json())
    assert inplace.load_optimized(pipe, workspace=root, modules=[block]) == {"block": "module-compiled-fp32"}
    with torch.inference_mode():
        got = [pipe(x) for x in samples]
    assert block.nav_variant.calls == 6 and block.nav_variant.eager_calls == 0
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, eager))
    assert all(p.dtype == torch.float32 for p in block.wrapped.parameters())
    # The compile cache of the module compiled here, as inplace.optimize keeps it, for a later process.
    keep_compile_cache(root, compiled_here({"block": block}, PipelineResults.model_validate_json(
        (root / PIPELINE_FILE).read_text())))
    assert (root / CACHE_FOLDER / STAMP).is_file()
    block.swap(None)
    with torch.inference_mode():
        assert all(torch.equal(pipe(x), want) for x, want in zip(samples, eager))
    print("inplace-candidate-ok")
''')


# Marked docker with the other user-process tests: its user environment (.venv-inplace) is as heavy
# to make; it runs no container.
@pytest.mark.docker
def test_the_module_compiled_here_is_verified_timed_recorded_and_reinstated_warm(user_python, tmp_path):
    def user(step: str, cache: str) -> str:
        # Each process with its own inductor cache: only the workspace's can make it warm.
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / cache)}
        run = subprocess.run([user_python, "-c", SCRIPT, step, str(tmp_path / "ws")], capture_output=True, text=True,
                             timeout=600, cwd=ROOT, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout.strip().splitlines()[-1]

    (tmp_path / "ws").mkdir()
    assert user("optimize", "first") == "inplace-candidate-ok"
    cold = json.loads(user("load", "cold"))  # a fresh cache, as a new machine's, but the workspace's
    assert cold["warnings"] == [] and cold["hits"] > 0 and cold["misses"] == 0, cold
    assert cold["kernels_built"] == 0, cold  # the C++ kernels came with the cache: none compiled again
    stamp = tmp_path / "ws" / CACHE_FOLDER / STAMP
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "torch": "0.0"}))
    foreign = json.loads(user("load", "foreign"))  # a cache of another torch: ignored, with a warning
    assert foreign["misses"] > 0 and foreign["kernels_built"] > 0, foreign  # it compiled anew
    assert len(foreign["warnings"]) == 1 and "built by torch 0.0" in foreign["warnings"][0]
    print(f"first call after load_optimized: {cold['first_call_s']:.2f} s with the workspace's cache, "
          f"{foreign['first_call_s']:.2f} s without")


def test_a_compile_cache_serves_only_the_torch_device_and_modules_it_was_built_for():
    saved = CacheStamp(torch="2.13.0", device="NVIDIA H100", modules={"unet": "a", "decoder": "b"})
    assert mismatch(saved, saved) is None
    assert mismatch(saved, saved.model_copy(update={"modules": {"unet": "a"}})) is None  # a subset loads
    assert "torch 2.13.0" in (mismatch(saved, saved.model_copy(update={"torch": "2.14.0"})) or "")
    assert "built on NVIDIA H100" in (mismatch(saved, saved.model_copy(update={"device": "cpu"})) or "")
    assert mismatch(saved, saved.model_copy(update={"modules": {"unet": "c"}})) == (
        "module(s) unet differ from those it was built for")


class StandIn:
    """A wrapped module as check_pipeline sees it: its variant, and swap()."""

    def __init__(self, variant: object) -> None:
        self.nav_variant = variant

    def swap(self, variant: object) -> None:
        self.nav_variant = variant


def test_a_pipeline_no_faster_with_its_variants_goes_back_to_eager_the_modules_called_directly_first():
    from orchestrator.inplace.candidate import CalledDirectly
    from orchestrator.inplace.optimize import drop_if_slower
    from orchestrator.results import InProcessCandidate, ModuleResult, PipelineResults, PipelineTiming

    def results(optimized_s: float) -> PipelineResults:
        direct = ModuleResult(status="optimized", best="module-compiled-fp32", precision="fp32",
                              candidates=["module-compiled-fp32"],
                              in_process=InProcessCandidate(name="module-compiled-fp32", precision="fp32",
                                                            compile_mode="default", capture="", status="won"))
        captured = ModuleResult(status="optimized", best="exported-program-fp32", precision="fp32",
                                candidates=["exported-program-fp32", "module-compiled-fp32"],
                                in_process=InProcessCandidate(name="module-compiled-fp32", precision="fp32",
                                                              compile_mode="default", capture="fp32", status="lost"))
        return PipelineResults(nav_orch="0", samples=1, modules={"decoder": direct, "encoder": captured},
                               timing=PipelineTiming(eager_s=1.0, optimized_s=optimized_s, repeats=6,
                                                     speedup_low=0.9 / optimized_s, speedup_high=1.1 / optimized_s),
                               speedup=1.0 / optimized_s)

    faster = results(0.5)
    swapped = {"decoder": StandIn(object.__new__(CalledDirectly)), "encoder": StandIn(object())}
    assert drop_if_slower(swapped, faster) is False and set(swapped) == {"decoder", "encoder"}
    slower = results(1.0)
    decoder, encoder = swapped["decoder"], swapped["encoder"]
    assert drop_if_slower(swapped, slower) is True
    assert set(swapped) == {"encoder"} and decoder.nav_variant is None  # the captured module keeps its variant
    dropped = slower.modules["decoder"]
    assert (dropped.status, dropped.best, dropped.in_process.status) == ("eager", None, "lost")
    assert dropped.reason == ("compiled here, the pipeline ran no faster than eager (1 s against 1 s, speedup 1, "
                              "0.9-1.1 over 6 alternated rounds)")
    assert slower.modules["encoder"].status == "optimized"
    # Checked again, still no faster: the captured module goes too, and the pipeline is eager.
    slower.timing.optimized_s, slower.speedup = 1.2, 1 / 1.2
    assert drop_if_slower(swapped, slower) is True and swapped == {} and encoder.nav_variant is None
    kept = slower.modules["encoder"]
    assert (kept.status, kept.best, kept.precision) == ("eager", None, None)
    assert kept.candidates == ["exported-program-fp32", "module-compiled-fp32"]  # what was measured stays
    assert kept.reason == ("the pipeline ran no faster than eager with its modules' variants (1.2 s against "
                           "1 s, speedup 0.833, 0.9-1.1 over 6 alternated rounds): it stays eager")
    assert drop_if_slower(swapped, slower) is False  # nothing left to drop


def test_the_pipeline_check_alternates_eager_and_optimized_runs_and_leaves_the_variants_swapped_in():
    from orchestrator.inplace.optimize import alternated

    swapped = {"decoder": StandIn("compiled"), "encoder": StandIn("exported")}
    ran: list[tuple[object, object]] = []

    def run(pipe: object, samples: list[int]) -> tuple[list[str], float]:  # stands for run_pipeline
        ran.append((swapped["decoder"].nav_variant, swapped["encoder"].nav_variant))
        return ["optimized" if swapped["decoder"].nav_variant else "eager"], 0.5 if ran[-1] == both else 1.0

    both, neither = ("compiled", "exported"), (None, None)
    outputs, optimized, eager = alternated(run, print, [1], swapped, rounds=3)
    # Each round runs both, in the other order from the last: a drift of the host hits both alike.
    assert ran == [both, neither, neither, both, both, neither]
    assert outputs == ["optimized"] and optimized == [0.5] * 3 and eager == [1.0] * 3
    assert (swapped["decoder"].nav_variant, swapped["encoder"].nav_variant) == both


def test_a_compile_cache_is_copied_file_by_file_never_over_a_file_nor_through_a_link(tmp_path):
    source, target = tmp_path / "workspace-cache", tmp_path / "torch-cache"
    (source / "fx" / "ab").mkdir(parents=True)
    (source / "fx" / "ab" / "graph").write_text("built")
    (source / "kernel.so").write_text("new")
    (source / "held.so").write_text("theirs")
    (source / "locks").mkdir()
    (source / "locks" / "x.lock").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not the cache's")
    (source / "link").symlink_to(outside / "secret")
    (source / "linked-folder").symlink_to(outside)
    target.mkdir()
    (target / "held.so").write_text("mine")
    assert copy_new_files(source, target) == 2
    assert (target / "fx" / "ab" / "graph").read_text() == "built" and (target / "kernel.so").read_text() == "new"
    assert (target / "held.so").read_text() == "mine"  # an entry torch has stays as it is
    assert sorted(path.name for path in target.rglob("*")) == ["ab", "fx", "graph", "held.so", "kernel.so"]
