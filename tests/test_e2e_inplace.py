"""Inplace pipelines end to end: the bundled Whisper-style and Stable-Diffusion-style pipelines (tiny
random configurations) optimized module by module in the CPU images from a user's process with
torch, transformers and diffusers (tests/inplace_user.py in .venv-inplace), then loaded in a later
process; and the cases at the edges of a capture."""
from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, printed_until

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images")]
USER_SCRIPT = ROOT / "tests" / "inplace_user.py"
MODULES = {"sd": ["text_encoder", "unet", "vae_decoder"], "whisper": ["encoder", "decoder"]}


def user_run(python: str, *args: str, timeout: float = 1200) -> dict:
    report = Path(args[2]).with_suffix(f".{args[0]}.json")
    run = subprocess.run([python, str(USER_SCRIPT), *args, str(report)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(report.read_text())


@pytest.mark.parametrize("pipeline", ["sd", "whisper"])
def test_a_bundled_pipeline_runs_its_modules_optimized_in_a_later_process(pipeline, user_python, tmp_path,
                                                                          no_leftovers):
    workspace = tmp_path / "nav-pipeline"
    optimized = user_run(user_python, "optimize", pipeline, str(workspace))
    assert optimized == {"state": "complete", "eager_after": [True] * len(MODULES[pipeline])}
    results = json.loads((workspace / "pipeline.json").read_text())
    assert results["state"] == "complete" and results["passed"] is True
    assert results["relative_output_diff"] <= results["tolerance"] == 1e-3
    assert results["mismatched"] == 0.0
    assert results["timing"]["eager_s"] > 0 and results["timing"]["optimized_s"] > 0 and results["speedup"] > 0
    assert results["optimize_s"] > 0
    for name in MODULES[pipeline]:
        module = results["modules"][name]
        if pipeline == "whisper" and name == "decoder":
            assert_called_directly(module)
            continue
        assert module["status"] == "optimized", module
        assert module["captures"] == {"fp32": "exported_program"}  # CPUs search fp32 alone
        assert module["workspace"] == module["workspaces"]["fp32"] == f"modules/{name}/fp32/run"
        run = json.loads((workspace / module["workspace"] / "results.json").read_text())
        verified = {v["name"] for v in run["variants"] if v["status"] == "ok"}
        # The best is the fastest verified variant that reproduced every recorded call in place.
        assert module["best"] == next(c for c in module["candidates"] if c not in module["rejected"])
        # The module itself compiled here (the hand recipe) is a candidate, timed against the best runner variant.
        in_process = module["in_process"]
        assert in_process["name"] == "module-compiled-fp32" and in_process["status"] in ("won", "lost"), in_process
        assert in_process["name"] in module["candidates"] and in_process["best_runner"] in verified
        assert in_process["vs_best_runner"] > 0 and (module["best"] == in_process["name"]) == (in_process["status"]
                                                                                               == "won")
        assert module["best"] in verified | {in_process["name"]} and module["precision"] == "fp32"
        assert module["recorded_diff"] <= 1e-3 and module["in_place_diff"] <= 1e-3
        assert (workspace / "modules" / name / "fp32" / "capture.json").is_file()
    compiled_here = [name for name in MODULES[pipeline] if results["modules"][name]["in_process"]["status"] == "won"]
    # The compile cache of the modules compiled here, for load_optimized's warm start.
    assert (workspace / "compile-cache" / "stamp.json").is_file() == bool(compiled_here)
    decoder = results["modules"].get("decoder")
    if decoder:  # called once per token: 8 lengths, each within the captured range
        assert decoder["calls_seen"] == 16 and decoder["calls_kept"] == 16

    if pipeline == "whisper":  # a second run in the same workspace: the captures are the same bytes,
        # so every job that finished is reused (export, verify and profile of each verified variant);
        # the reference (it fingerprints the capture) and the skipped variants' jobs run again
        user_run(user_python, "optimize", pipeline, str(workspace))
        for name in ["encoder"]:  # the decoder has no runner run (no capture)
            run = json.loads((workspace / results["modules"][name]["workspace"] / "results.json").read_text())
            verified = sum(variant["status"] == "ok" for variant in run["variants"])
            assert verified >= 2 and run["jobs"]["reused"] == 3 * verified, run["jobs"]

    loaded = user_run(user_python, "load", pipeline, str(workspace))
    bests = {name: results["modules"][name]["best"] or "eager" for name in MODULES[pipeline]}
    assert loaded["running"] == bests
    # The variants really ran, and no call fell back to the module.
    assert all((calls > 0) == (bests[name] != "eager") for name, calls in loaded["variant_calls"].items()), loaded
    assert loaded["eager_calls"] == {name: 0 if bests[name] != "eager" else None for name in MODULES[pipeline]}
    assert loaded["warnings"] == []
    assert loaded["types"] == ["Tensor", "Tensor"]
    assert loaded["max_abs_diff"] <= 1e-3 * loaded["scale"]
    if pipeline == "whisper":
        assert loaded["equal"] is True  # the same tokens
        return
    served_through_pytriton(user_python, workspace)
    # A best variant that cannot load in a later process (its artifact gone here) yields the next one.
    unet = results["modules"]["unet"]
    if unet["in_process"]["status"] == "won":  # as a workspace where the module compiled here lost
        unet["candidates"].remove(unet["in_process"]["name"])
        unet["best"], unet["in_process"]["status"] = unet["in_process"]["best_runner"], "lost"
        (workspace / "pipeline.json").write_text(json.dumps(results))
    best = next(v for v in json.loads((workspace / unet["workspace"] / "results.json").read_text())["variants"]
                if v["name"] == unet["best"])
    (workspace / unet["workspace"] / best["artifact"]).unlink()
    fallback = user_run(user_python, "load", pipeline, str(workspace))
    assert len(unet["candidates"]) >= 2, unet  # CPUs verify at least onnx and exported-program
    assert fallback["running"]["unet"] == unet["candidates"][1] and fallback["variant_calls"]["unet"] > 0
    said = [warning for warning in fallback["warnings"] if "the best variant that can" in warning]
    assert len(said) == 1 and said[0].startswith(f"inplace module 'unet': {unet['best']} (CannotLoad: its artifact")
    assert fallback["max_abs_diff"] <= 1e-3 * fallback["scale"]


def served_through_pytriton(python: str, workspace: Path) -> None:
    """The optimized SD-style pipeline behind inplace.serve: a real PyTriton server in the user's
    process, answered over HTTP like the eager pipeline, stopped by SIGTERM."""
    report = workspace.parent / "served.json"
    # Its endpoints on stderr: PyTriton's tritonserver logs on stdout, and a large write of its (a
    # table) may split around a line of the user's.
    with (workspace.parent / "server.log").open("w") as server_log:
        process = subprocess.Popen([python, str(USER_SCRIPT), "serve", "sd", str(workspace), str(report)],
                                   cwd=ROOT, stdout=server_log, stderr=subprocess.PIPE, text=True)
    try:
        printed = printed_until(process, "serving;", timeout_s=600, stream=process.stderr)
        if "serving;" not in printed:
            pytest.fail(f"inplace.serve printed {printed} and ended: {process.stderr.read()[-3000:]}")
        assert printed["model"] == "sd (PyTriton)" and printed["http"].startswith("http://127.0.0.1:")
        with np.load(report.with_suffix(".npz")) as saved:
            ids, expected = saved["prompt_ids"], saved["image"]
        body = {"inputs": [{"name": "prompt_ids", "shape": list(ids.shape), "datatype": "INT64",
                            "data": ids.reshape(-1).tolist()}]}
        request = urllib.request.Request(f"{printed['http']}/v2/models/sd/infer", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            (output,) = json.load(response)["outputs"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert stderr.strip().endswith("stopped") and "Traceback" not in stderr
    assert output["name"] == "image" and output["shape"] == list(expected.shape)
    image = np.array(output["data"], np.float32).reshape(expected.shape)
    assert np.abs(image - expected).max() <= 1e-3 * np.abs(expected).max()
    calls = json.loads(report.read_text())["variant_calls"]
    assert all(count > 0 for count in calls.values()), calls  # the request ran the optimized modules


def assert_called_directly(module: dict) -> None:
    """A module passed a generation cache: no capture, no runner run, the module compiled here tried
    with the whole pipeline, and kept only where the pipeline ran faster with it."""
    assert module["captures"]["fp32"].startswith("failed: ") and module["workspaces"] == {}, module
    assert "cannot be captured for the runners" in module["cuts"]["runners"]
    in_process = module["in_process"]
    assert in_process["name"] == "module-compiled-fp32" and in_process["capture"] == ""
    assert in_process["compile_mode"] == "default" and in_process["time_s"] is None
    if in_process["status"] == "won":
        assert module["status"] == "optimized" and module["best"] == in_process["name"]
        assert module["candidates"] == [in_process["name"]] and module["in_place_diff"] is None
    else:
        assert in_process["status"] == "lost" and module["status"] == "eager" and module["best"] is None
        assert module["reason"].startswith("compiled here, the pipeline ran no faster than eager")


def test_the_edges_of_a_capture_say_what_happened(user_python, tmp_path):
    found = user_run(user_python, "edges", "toy", str(tmp_path / "edges"), timeout=600)
    assert found["no_module"].startswith("inplace.optimize: no inplace.Module in the pipeline")
    assert "seed its random generators" in found["nondeterministic"]
    cached = found["cache_object"]
    assert_called_directly(cached)
    assert "neither a tensor nor a plain constant" in cached["cuts"]["runners"] and cached["calls_seen"] == 6
    short = found["short"]
    decoder = short["modules"]["decoder"]
    assert short["state"] == "complete" and decoder["in_process"]["best_runner"] == "exported-program-fp32"
    # The compiled format asked for was left to the module compiled here, and said so.
    assert list(decoder["cuts"]) == ["torch-compile"] and "compiled in the user's process" in decoder["cuts"][
        "torch-compile"]
    run = json.loads((tmp_path / "edges" / "short" / decoder["workspaces"]["fp32"] / "results.json").read_text())
    assert {variant["format"] for variant in run["variants"]} == {"exported-program"}
    # The faster of the exported program and the module compiled here.
    assert decoder["best"] == ("module-compiled-fp32" if decoder["in_process"]["status"] == "won"
                               else "exported-program-fp32")
    assert found["short_running"] == {"decoder": decoder["best"]}
    outside = found["outside"]
    # Two calls beyond the recorded lengths and one without the recorded keyword run eager, with one
    # warning; the call within the range runs the variant.
    assert outside["equal"] is True and outside["eager_calls"] == 3 and outside["calls"] == 1
    assert len(outside["warnings"]) == 1 and "outside the captured [1, 2..5]" in outside["warnings"][0]


def test_the_sd_style_pipeline_is_what_stable_diffusion_pipeline_computes(user_python, tmp_path):
    """The bundled loop (scheduler steps, classifier-free guidance, VAE decode) gives diffusers' own
    StableDiffusionPipeline's image, built from the same modules and started from the same latents."""
    found = user_run(user_python, "as-diffusers", "sd", str(tmp_path / "unused"), timeout=600)
    assert found["shapes"] == [[1, 3, 16, 16]] * 2 and found["max_abs_diff"] <= 1e-5, found
