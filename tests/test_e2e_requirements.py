"""A model's own libraries, end to end in real containers: a Hugging Face model built from its config
and optimized with --requirements in a derived image (built once, then found) and its best variant
served from the Triton image, which has no transformers; a requirement that
would replace the image's torch, an import the image lacks, a package beside the factory, and a zoo
whose models need different libraries."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, nav_orch, optimize_cpu, read_results, run_cpu

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]

MODELS = ROOT / "tests" / "models"
BERT = f"{MODELS}/hf_bert/model.py:make_bert"
BERT_REQUIREMENTS = MODELS / "hf_bert" / "requirements.txt"
OWN = MODELS / "own_libraries"


def bert_samples(path: Path) -> Path:
    """Token ids and an attention mask of ones and zeros, as a tokenizer gives them."""
    rng = np.random.default_rng(0)
    mask = np.ones((2, 12), dtype=np.int64)
    mask[1, 9:] = 0
    np.savez(path, input_ids=rng.integers(0, 64, (2, 12)), attention_mask=mask)
    return path


def one_line_error(run: subprocess.CompletedProcess) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("nav-orch: ")]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert lines, run.stderr[-3000:]
    return lines[-1]


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path_factory.mktemp("bert")
    # With the Triton stage: its image has no transformers, so the served variant must need none.
    run = run_cpu("optimize", folder / "ws", BERT, "--samples", str(bert_samples(folder / "samples.npz")),
                  "--requirements", str(BERT_REQUIREMENTS), "--formats", "onnx,exported-program",
                  "--triton-concurrency", "1", "--triton-search", "off")
    return run, folder


def test_a_hugging_face_model_is_optimized_in_an_image_with_its_requirements(bert_run):
    run, folder = bert_run
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(folder / "ws")
    (image,) = results["environment"]["images"]
    assert image["tag"].startswith("nav-orch/pytorch:cpu-req-") and image["base"] == "nav-orch/pytorch:cpu"
    assert image["requirements"] == ["transformers==5.24.0"]
    assert image["versions"]["torch"].startswith("2.13.0")  # the image's own torch, untouched
    variants = {v["name"]: v for v in results["variants"]}
    for name in ("onnx-fp32", "exported-program-fp32"):
        assert variants[name]["status"] == "ok", variants[name]["error"]
        # Both outputs of its ModelOutput, by their field names (its unused fields, None, left out).
        assert sorted(variants[name]["verification"]["outputs"]) == ["last_hidden_state", "pooler_output"]
    assert results["best"] in variants
    # Served from nav-orch/triton:cpu, which lacks transformers: the artifact holds no type of it.
    assert results["triton"]["error"] is None, results["triton"]["error"]
    assert {run["variant"] for run in results["triton"]["runs"]} == {results["best"]}
    rerun = (folder / "ws" / "jobs" / "reference" / "rerun.sh").read_text()
    assert f"# image {image['tag']}: nav-orch/pytorch:cpu with transformers==5.24.0" in rerun
    assert "built nav-orch/pytorch:cpu-req-" in run.stderr or "(built before)" in run.stderr


def test_a_second_run_with_the_same_requirements_finds_the_derived_image(bert_run, tmp_path):
    first, folder = bert_run
    run = optimize_cpu(tmp_path / "ws", BERT, "--samples", str(folder / "samples.npz"),
                       "--requirements", str(BERT_REQUIREMENTS), "--formats", "exported-program")
    assert run.returncode == 0, run.stderr[-3000:]
    (image,) = read_results(tmp_path / "ws")["environment"]["images"]
    (earlier,) = read_results(folder / "ws")["environment"]["images"]
    assert (image["tag"], image["id"]) == (earlier["tag"], earlier["id"])
    assert f"requirements: {image['tag']} (built before)" in run.stderr
    listed = nav_orch("images", "list")
    assert listed.returncode == 0 and image["tag"] in listed.stdout and "transformers==5.24.0" in listed.stdout


def test_a_requirement_that_would_replace_the_images_torch_is_one_line(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("torch==2.0.0\n")
    run = optimize_cpu(tmp_path / "ws", BERT, "--samples", str(bert_samples(tmp_path / "s.npz")),
                       "--requirements", str(requirements))
    assert run.returncode == 2
    assert one_line_error(run) == (
        "nav-orch: --requirements: torch==2.0.0 conflicts with torch 2.13.0+cpu in nav-orch/pytorch:cpu: the "
        "image's own packages cannot be replaced (leave torch out, or allow 2.13.0+cpu)")


def test_an_import_the_image_lacks_says_which_package_and_the_option(tmp_path):
    run = optimize_cpu(tmp_path / "ws", BERT, "--samples", str(bert_samples(tmp_path / "s.npz")))
    assert run.returncode == 2
    assert one_line_error(run) == (
        "nav-orch: the source model imports transformers, which nav-orch/pytorch:cpu does not have: add the "
        "package that provides it with --requirements FILE (a requirements file, e.g. a line `transformers`)")
    results = read_results(tmp_path / "ws")
    assert results["state"] == "failed" and "imports transformers" in results["error"]


def test_a_package_beside_the_factory_imports_without_requirements(tmp_path):
    run = optimize_cpu(tmp_path / "ws", f"{OWN}/model.py:make_with_sibling_package", "--input", "x:2,16:float32",
                       "--formats", "torchscript-trace,onnx")
    assert run.returncode == 0, run.stderr[-3000:]
    results = read_results(tmp_path / "ws")
    assert all(v["status"] == "ok" for v in results["variants"]), results["variants"]
    assert results["environment"]["images"][0]["tag"] == "nav-orch/pytorch:cpu"


def test_a_zoo_of_models_with_different_requirements(tmp_path):
    zoo = tmp_path / "zoo.toml"
    zoo.write_text(f"""
[defaults]
images = "cpu"
gpus = "none"
batch_sizes = [1]
triton = false
formats = ["torchscript-trace"]
inputs = ["x:2,16:float32"]

[[model]]
name = "with-einops"
model = "{OWN}/model.py:make_with_einops"
requirements = ["{OWN}/einops-requirements.txt"]

[[model]]
name = "with-tabulate"
model = "{OWN}/model.py:make_with_tabulate"
requirements = ["{OWN}/tabulate-requirements.txt"]
""")
    run = nav_orch("zoo", str(zoo), "--workspace", str(tmp_path / "zoo"), timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "zoo" / "zoo.json").read_text())
    assert [(m["name"], m["status"]) for m in summary["models"]] == [("with-einops", "ok"), ("with-tabulate", "ok")]
    images = {name: read_results(tmp_path / "zoo" / name)["environment"]["images"][0]
              for name in ("with-einops", "with-tabulate")}
    assert images["with-einops"]["requirements"] == ["einops"]
    assert images["with-tabulate"]["requirements"] == ["tabulate"]
    assert images["with-einops"]["tag"] != images["with-tabulate"]["tag"]
