"""`nav-orch optimize` end to end: real CPU images, real containers, real PyTorch and ONNX Runtime."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import (
    E2E_BATCH_SIZES,
    EXAMPLES,
    ROOT,
    assert_cut_points_lost,
    assert_verified_and_profiled,
    read_results,
    write_two_input_samples,
)
from conftest import optimize_cpu as optimize

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
ALL_FORMATS = {"torchscript-trace", "torchscript-script", "onnx", "exported-program"}


@pytest.mark.parametrize("executor, jobs", [("docker", "1"), ("docker", "2"), ("local", "2")])
def test_mlp_every_format_verified_profiled_and_best_chosen(tmp_path, request, executor, jobs):
    workspace = tmp_path / "ws"
    where = []
    if executor == "local":
        where = ["--executor", "local", "--python", request.getfixturevalue("runners_python")]
    run = optimize(workspace, f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32", "--jobs", jobs, *where)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert results == read_results(workspace)
    assert results["state"] == "complete"
    assert {v["format"] for v in results["variants"]} == ALL_FORMATS
    for variant in results["variants"]:
        assert_verified_and_profiled(variant)
        assert variant["verification"]["batch_sizes"] == []  # eager: the samples as they are
        assert (workspace / variant["artifact"]).is_file()
    assert results["best"] in {v["name"] for v in results["variants"]}
    assert_cut_points_lost(results)  # 2 points were cut in each run on the development host
    image = results["environment"]["images"][0]
    if executor == "docker":
        assert image["tag"] == "nav-orch/pytorch:cpu" and image["id"].startswith("sha256:")
    else:
        assert image["tag"] == "local" and image["id"].endswith("python")
    assert image["versions"]["torch"].startswith("2.13.") and image["versions"]["onnxruntime"]
    assert "best:" in run.stderr


def test_unscriptable_model_succeeds_with_script_variant_failed(tmp_path):
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/unscriptable.py:make_model", "--input", "x:4,16:float32")
    assert run.returncode == 0, run.stderr
    results = read_results(workspace)
    by_format = {v["format"]: v for v in results["variants"]}
    script = by_format.pop("torchscript-script")
    assert script["status"] == "failed"
    assert "torch.jit.script cannot compile the model at unscriptable.py:17" in script["error"]
    for variant in by_format.values():
        assert_verified_and_profiled(variant)
    assert results["best"] is not None and results["best"] != script["name"]
    assert "torchscript-script-fp32: failed: export: RuntimeError: torch.jit.script" in run.stderr


def test_two_inputs_two_outputs_from_named_samples_and_enforced_tolerance(tmp_path):
    samples = write_two_input_samples(tmp_path / "samples.npz")  # keyed mask, image: matched by name
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/two_heads.py:make_two_heads", "--samples", str(samples),
                   "--formats", "onnx,torchscript-trace", "--atol", "0", "--rtol", "0")
    results = read_results(workspace)
    by_format = {v["format"]: v for v in results["variants"]}
    trace, onnx = by_format["torchscript-trace"], by_format["onnx"]
    assert set(trace["verification"]["outputs"]) == {"output_0", "output_1"}
    # Zero tolerance: a variant passes only with bit-identical outputs, and fails with its numbers otherwise.
    for variant in (trace, onnx):
        errors = [o["max_abs_err"] for o in variant["verification"]["outputs"].values()]
        if max(errors) > 0:
            assert variant["status"] == "failed" and "outside tolerance" in variant["error"]
            assert variant["profile"] == []
        else:
            assert_verified_and_profiled(variant)
    assert onnx["status"] == "failed", "ONNX Runtime is expected to round differently from torch"
    assert run.returncode == (0 if results["best"] else 1)


def test_factory_that_raises_is_one_clear_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\n\ndef make():\n    raise RuntimeError('weights not found')\n")
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{broken}:make", "--input", "x:2,3:float32")
    assert run.returncode == 2
    assert "the source model failed on the samples: RuntimeError: weights not found" in run.stderr
    assert "Traceback" not in run.stderr
    results = read_results(workspace)
    assert results["state"] == "failed" and "weights not found" in results["error"]


def test_a_torchscript_file_is_a_model_too(tmp_path):
    first = optimize(tmp_path / "first", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32",
                     "--formats", "torchscript-script")
    assert first.returncode == 0, first.stderr
    scripted = tmp_path / "mlp.ts"
    scripted.write_bytes((tmp_path / "first" / "variants" / "torchscript-script-fp32" / "model.ts").read_bytes())
    run = optimize(tmp_path / "ws", str(scripted), "--input", "input:8,64:float32",
                   "--formats", "torchscript-trace,torchscript-script,onnx")
    assert run.returncode == 0, run.stderr
    variants = {v["format"]: v for v in json.loads(run.stdout)["variants"]}
    assert variants["torchscript-trace"]["status"] == "skipped"
    assert "already TorchScript" in variants["torchscript-trace"]["error"]
    assert_verified_and_profiled(variants["torchscript-script"])
    assert_verified_and_profiled(variants["onnx"])


def test_torch_compile_on_cpu_is_verified_and_profiled_and_cuda_graphs_need_a_gpu(tmp_path):
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32",
                   "--formats", "torch-compile,torch-compile-cudagraphs")
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    variants = {v["format"]: v for v in results["variants"]}
    assert_verified_and_profiled(variants["torch-compile"])
    # Verified on the graphs it is profiled with: every sample at each batch size.
    assert variants["torch-compile"]["verification"]["batch_sizes"] == E2E_BATCH_SIZES
    assert results["best"] == "torch-compile-fp32"
    cuda_graphs = variants["torch-compile-cudagraphs"]
    assert cuda_graphs["status"] == "skipped" and "needs a GPU" in cuda_graphs["error"]


def test_each_job_folder_has_a_command_that_reruns_it_without_nav_orch(tmp_path):
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32",
                   "--formats", "onnx,torchscript-trace")
    assert run.returncode == 0, run.stderr
    verify = workspace / "jobs" / "verify-onnx-fp32"
    script = (verify / "rerun.sh").read_text()
    assert "docker run --rm --network none" in script and "--cap-drop ALL" in script
    # Only what the job reads and writes, though its warm runner mounted every folder of the run.
    assert "variants/onnx-fp32:" in script and "torchscript-trace" not in script, script
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*") if p.is_dir())
    (verify / "result.json").unlink()
    rerun = subprocess.run(["sh", str(verify / "rerun.sh")], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*") if p.is_dir()) == before
    result = json.loads((verify / "result.json").read_text())
    assert result["status"] == "ok" and result["verification"]["passed"] is True


def test_channels_last_variants_of_a_convnet_verify_and_a_model_without_convolutions_skips_them(tmp_path):
    run = optimize(tmp_path / "conv", f"{ROOT}/tests/models/convnet.py:make_convnet",
                   "--input", "x:2,3,16,16:float32", "--formats", "torchscript-trace,exported-program,onnx",
                   "--memory-formats", "contiguous,channels_last")
    assert run.returncode == 0, run.stderr
    variants = {v["name"]: v for v in json.loads(run.stdout)["variants"]}
    assert set(variants) == {"torchscript-trace-fp32", "torchscript-trace-fp32-channels-last", "exported-program-fp32",
                             "exported-program-fp32-channels-last", "onnx-fp32"}  # ONNX chooses its own layout
    for name in ("torchscript-trace-fp32-channels-last", "exported-program-fp32-channels-last"):
        assert variants[name]["memory_format"] == "channels_last"
        assert_verified_and_profiled(variants[name])
        assert variants[name]["verification"]["outputs"]["output"]["max_abs_err"] <= 1e-5
    assert variants["onnx-fp32"]["memory_format"] == "contiguous"
    run = optimize(tmp_path / "mlp", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32",
                   "--formats", "torchscript-trace,torch-compile", "--memory-formats", "channels_last")
    # The reference job found no 4-D convolution weights: every variant, a compiled one too, is skipped
    # before any export.
    results = json.loads(run.stdout)
    for variant in results["variants"]:
        assert variant["status"] == "skipped"
        assert variant["error"] == "channels_last changes nothing here: the model has no 4-D convolution weights"
    assert [t["job"] for t in results["timeline"]] == ["reference"]


def test_close_candidates_timed_again_interleaved_decide_with_their_margin(tmp_path):
    """Confident selection in real containers: with every variant counted close (a wide margin),
    one compare job loads them side by side, TorchScript and ONNX Runtime alike, and times them in
    rounds; the choice is by the median of the paired ratios, and results.json says by how much."""
    from orchestrator.config import InputSpec, ModelRef, OptimizeConfig
    from runners.contract.protocol import ProfileSettings

    formats = ["torchscript-trace", "torchscript-script", "onnx"]
    config = OptimizeConfig(model=ModelRef(path=EXAMPLES / "mlp.py", form="factory", factory="make_mlp"),
                            inputs=[InputSpec(name="input", shape=[8, 64], dtype="float32")], formats=formats,
                            batch_sizes=E2E_BATCH_SIZES, workspace=tmp_path / "ws", triton={"enabled": False},
                            profiling=ProfileSettings(rounds=8, round_calls=5, close_margin=100.0))
    (tmp_path / "config.json").write_text(config.model_dump_json())
    run = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run-config", str(tmp_path / "config.json")],
                         capture_output=True, text=True, timeout=900, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    results = read_results(tmp_path / "ws")
    names = {v["name"] for v in results["variants"] if v["status"] == "ok"}
    assert names == {"torchscript-trace-fp32", "torchscript-script-fp32", "onnx-fp32"}, results["variants"]
    selection = results["selection"]
    assert results["best"] in names and selection["rounds"] == 8
    # 8 rounds: the interval is the 1st to the 8th ratio, whose coverage of the median is 1 - 2/2^8.
    assert selection["confidence"] == pytest.approx(1 - 2 / 2 ** 8)
    compared = selection["compared"]
    assert {c["variant"] for c in compared} == names - {results["best"]} and selection["margin"] == compared[0]
    for rival in compared:
        assert 0 < rival["low"] <= rival["ratio"] <= rival["high"]
        assert (rival["low"] <= 1 <= rival["high"]) <= selection["tie"]  # an interval holding 1 is a tie
    assert "timed again interleaved at batch" in selection["reason"]
    compare = [entry for entry in results["timeline"] if entry["job"] == "compare"]
    assert len(compare) == 1 and compare[0]["session"] == "compare", results["timeline"]
    assert "timing 3 close candidates again, interleaved" in run.stderr
