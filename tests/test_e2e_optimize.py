"""`nav-orch optimize` end to end: real CPU images, real containers, real PyTorch and ONNX Runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import EXAMPLES, nav_orch, read_results

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
ALL_FORMATS = {"torchscript-trace", "torchscript-script", "onnx", "exported-program"}
BATCH_SIZES = [1, 4]


def optimize(workspace, model, *options):
    # --no-triton: the Triton stage has its own end-to-end tests (test_e2e_triton.py).
    return nav_orch("optimize", model, "--images", "cpu", "--gpus", "none", "--workspace", str(workspace),
                    "--batch-sizes", ",".join(map(str, BATCH_SIZES)), "--progress", "plain", "--json", "--no-triton",
                    *options)


def assert_verified_and_profiled(variant):
    assert variant["status"] == "ok", variant["error"]
    assert variant["verification"]["passed"] is True
    for output in variant["verification"]["outputs"].values():
        assert output["passed"] is True
        assert output["max_abs_err"] <= output["atol"] + output["rtol"]
    assert [p["batch_size"] for p in variant["profile"]] == BATCH_SIZES
    for entry in variant["profile"]:
        latency = entry["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"]
        assert entry["throughput"] > 0
    assert variant["artifact"]


def test_mlp_every_format_verified_profiled_and_best_chosen(tmp_path):
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32")
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert results == read_results(workspace)
    assert results["state"] == "complete"
    assert {v["format"] for v in results["variants"]} == ALL_FORMATS
    for variant in results["variants"]:
        assert_verified_and_profiled(variant)
        assert (workspace / variant["artifact"]).is_file()
    assert results["best"] in {v["name"] for v in results["variants"]}
    image = results["environment"]["images"][0]
    assert image["tag"] == "nav-orch/pytorch:cpu" and image["id"].startswith("sha256:")
    assert image["versions"]["torch"].startswith("2.") and image["versions"]["onnxruntime"]
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
    samples = tmp_path / "samples.npz"
    rng = np.random.default_rng(1)
    # Keys in another order than forward(image, mask): they are matched by name.
    np.savez(samples, mask=rng.standard_normal((3, 8)).astype("float32"),
             image=rng.standard_normal((3, 32)).astype("float32"))
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
    tmp_path.chmod(0o755)  # runners run as an unprivileged user when the tests run as root
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\n\ndef make():\n    raise RuntimeError('weights not found')\n")
    workspace = tmp_path / "ws"
    run = optimize(workspace, f"{broken}:make", "--input", "x:2,3:float32")
    assert run.returncode == 2
    assert "the source model failed on the samples: RuntimeError: weights not found" in run.stderr
    assert "Traceback" not in run.stderr
    results = read_results(workspace)
    assert results["state"] == "failed" and "weights not found" in results["error"]
