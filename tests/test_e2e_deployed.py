"""The chosen variant is the one deployed, end to end on the CPU images, for the formats a runtime
compiles: an AOTInductor package (torch-aoti) and a compiled variant (torch-compile, whose servers
compile its program with its options, warmed at its batch sizes), each verified, profiled and chosen
as the run's best, measured by the Triton stage, and served by Triton and by PyTriton (the Python
backend runs it through the loader) with the reference's answers."""
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
# Each format, and what its served model folder holds beside the Python backend's files.
ARTIFACTS = {"torch-aoti": ["model.aoti.pt2"], "torch-compile": ["compiled"]}


@pytest.fixture(scope="module", params=sorted(ARTIFACTS))
def deployed(cpu_images, tmp_path_factory, request) -> tuple[str, Path, dict]:
    folder = tmp_path_factory.mktemp(request.param)
    workspace = folder / "ws"
    run = nav_orch("optimize", f"{EXAMPLES}/two_heads.py:make_two_heads", "--samples",
                   str(write_two_input_samples(folder / "samples.npz")), "--images", "cpu", "--gpus", "none",
                   "--workspace", str(workspace), "--formats", request.param, "--batch-sizes", "1,4",
                   "--triton-concurrency", "1", "--triton-search", "off", "--progress", "plain", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    return request.param, workspace, json.loads(run.stdout)


def test_the_chosen_variant_is_verified_and_measured_by_the_triton_stage(deployed):
    fmt, workspace, results = deployed
    name = f"{fmt}-fp32"
    assert results == read_results(workspace)
    (variant,) = results["variants"]
    assert (variant["name"], variant["status"], results["best"]) == (name, "ok", name)
    assert variant["verification"]["passed"]
    triton = results["triton"]
    assert triton["error"] is None, triton["error"]
    assert {(r["variant"], r["backend"]) for r in triton["runs"]} == {(name, "python")}
    assert all(r["throughput"] > 0 for r in triton["runs"]) and triton["ready_s"] > 0
    folder = workspace / "triton" / "model_repository" / name / "1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ARTIFACTS[fmt] + ["model.py", "structure.py", "variant_loader.py"])
    if fmt == "torch-compile":  # its program and options, warmed at its batch sizes before ready
        assert sorted(p.name for p in (folder / "compiled").iterdir()) == ["options.json", "program.pt2"]
        config = (folder.parent / "config.pbtxt").read_text()
        assert 'key: "warmup"' in config and 'string_value: "[1, 4]"' in config


@pytest.mark.parametrize("server", ["triton", "pytriton"])
def test_the_served_variant_answers_as_the_reference(deployed, server):
    fmt, workspace, _ = deployed
    process, printed = start_serve(workspace, "--server", server)
    try:
        with np.load(workspace / "reference" / "samples.npz") as samples:
            inputs = {name: samples[name] for name in samples.files}
        served = infer_over_grpc(printed["grpc"], f"{fmt}-fp32", inputs, ["output_0", "output_1"])
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=90)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert "ready in " in stderr
    with np.load(workspace / "reference" / "reference.npz") as reference:
        for name, array in served.items():
            np.testing.assert_allclose(array, reference[name], rtol=1e-4, atol=1e-5)
    assert leftover_containers() == []
