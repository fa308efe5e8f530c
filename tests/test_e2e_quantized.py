"""INT8 end to end on the CPU images: `--precisions fp32,int8` builds ONNX Runtime's dynamic and
static (QDQ, calibrated) variants of an MLP and a CNN, verifies them by their accuracy budget,
profiles them, and selects among them; a variant outside its budget fails with its figures."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT, optimize_cpu, read_results

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
MODELS = ROOT / "tests" / "models"
INT8 = ("onnx-int8-dynamic", "onnx-int8-static")


@pytest.mark.parametrize("model, spec", [
    (f"{EXAMPLES}/mlp.py:make_mlp", "input:16,64:float32"),
    (f"{MODELS}/convnet.py:make_convnet", "x:16,3,32,32:float32"),
])
def test_int8_variants_are_verified_by_their_budget_profiled_and_selected_among(tmp_path, model, spec):
    run = optimize_cpu(tmp_path / "ws", model, "--input", spec, "--formats", "onnx", "--precisions", "fp32,int8",
                       "--accuracy", "cosine:0.99,top1:none")
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout)
    variants = {v["name"]: v for v in results["variants"]}
    assert set(variants) == {"onnx-fp32", *INT8}
    for name in INT8:
        variant = variants[name]
        assert (variant["precision"], variant["quantization"]) == ("int8", name.rsplit("-", 1)[1])
        assert variant["status"] == "ok", variant["error"]
        (output,) = variant["verification"]["outputs"].values()
        assert output["budget"] == {"min_cosine": 0.99, "min_top1": None, "max_abs": None}
        assert 0.99 <= output["cosine"] <= 1.0 + 1e-9 and output["passed"]
        assert output["max_abs_err"] > 0  # quantized: not the fp32 graph under another name
        assert [e["batch_size"] for e in variant["profile"]] == [1, 4]
    assert results["best"] in variants and results["best"] == max(
        variants, key=lambda n: max(e["throughput"] for e in variants[n]["profile"]))
    # The table and the report show the budget's figures.
    assert re.search(r"onnx-int8-static +ok +\S+ cos (0\.99\d{3}|1\.00000)", run.stderr), run.stderr[-2000:]
    assert "Accuracy of the quantized variants" in (tmp_path / "ws" / "report.html").read_text()


def test_a_budget_too_tight_fails_the_variant_with_its_numbers_and_calibration_data_is_used(tmp_path):
    rng = np.random.default_rng(3)
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, input=rng.standard_normal((32, 64)).astype("float32"))
    run = optimize_cpu(tmp_path / "ws", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:16,64:float32",
                       "--formats", "onnx", "--precisions", "int8", "--accuracy", "cosine:0.9999999,top1:none",
                       "--calibration", str(calibration))
    assert run.returncode == 1, run.stderr[-3000:]  # nothing within the budget: no variant
    variants = {v["name"]: v for v in read_results(tmp_path / "ws")["variants"]}
    for name in INT8:
        assert variants[name]["status"] == "failed"
        assert variants[name]["error"].startswith("verify: outside the accuracy budget: output: cosine 0.")
        assert "< 0.9999999" in variants[name]["error"]
    # The static variant's export was calibrated on the file given; the dynamic one needs none.
    static = json.loads((tmp_path / "ws" / "jobs" / "export-onnx-int8-static" / "job.json").read_text())
    dynamic = json.loads((tmp_path / "ws" / "jobs" / "export-onnx-int8-dynamic" / "job.json").read_text())
    assert static["inputs"]["calibration"].endswith("calibration.npz") and dynamic["inputs"]["calibration"] == ""


def test_calibration_data_that_does_not_fit_is_one_line_of_bad_input(tmp_path):
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, features=np.zeros((8, 64), np.float32))
    run = optimize_cpu(tmp_path / "ws", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:16,64:float32",
                       "--formats", "onnx", "--precisions", "int8", "--calibration", str(calibration))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "--calibration" in run.stderr and "are not the samples' (input)" in run.stderr
    assert not Path(tmp_path / "ws" / "jobs").exists() or not any((tmp_path / "ws" / "jobs").iterdir())
