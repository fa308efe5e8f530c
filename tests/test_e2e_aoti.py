"""torch-aoti end to end on the CPU images: an AOTInductor package exported, verified and profiled as
the run's best variant, measured by the Triton stage, and served by Triton and by PyTriton (the
Python backend runs it through the loader that verified it) with the reference's answers."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    EXAMPLES,
    infer_over_grpc,
    leftover_containers,
    nav_orch,
    read_results,
    start_serve,
    write_two_input_samples,
)

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
VARIANT = "torch-aoti-fp32"


@pytest.fixture(scope="module")
def aoti(cpu_images, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("aoti")
    workspace = folder / "ws"
    run = nav_orch("optimize", f"{EXAMPLES}/two_heads.py:make_two_heads", "--samples",
                   str(write_two_input_samples(folder / "samples.npz")), "--images", "cpu", "--gpus", "none",
                   "--workspace", str(workspace), "--formats", "torch-aoti", "--batch-sizes", "1,4",
                   "--triton-concurrency", "1", "--progress", "plain", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    return workspace, json.loads(run.stdout)


def test_the_package_is_verified_chosen_and_measured_by_the_triton_stage(aoti):
    workspace, results = aoti
    assert results == read_results(workspace)
    (variant,) = results["variants"]
    assert (variant["name"], variant["status"], results["best"]) == (VARIANT, "ok", VARIANT)
    assert variant["artifact"].endswith("model.aoti.pt2") and variant["verification"]["passed"]
    triton = results["triton"]
    assert triton["error"] is None, triton["error"]
    assert {(r["variant"], r["backend"]) for r in triton["runs"]} == {(VARIANT, "python")}
    assert all(r["throughput"] > 0 for r in triton["runs"])
    folder = workspace / "triton" / "model_repository" / VARIANT / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["model.aoti.pt2", "model.py", "structure.py",
                                                        "variant_loader.py"]


@pytest.mark.parametrize("server", ["triton", "pytriton"])
def test_the_served_package_answers_as_the_reference(aoti, server):
    workspace, _ = aoti
    process, printed = start_serve(workspace, "--server", server)
    try:
        with np.load(workspace / "reference" / "samples.npz") as samples:
            inputs = {name: samples[name] for name in samples.files}
        served = infer_over_grpc(printed["grpc"], VARIANT, inputs, ["output_0", "output_1"])
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=90)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    with np.load(workspace / "reference" / "reference.npz") as reference:
        for name, array in served.items():
            np.testing.assert_allclose(array, reference[name], rtol=1e-4, atol=1e-5)
    assert leftover_containers() == []
