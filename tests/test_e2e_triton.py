"""The Triton stage end to end: real tritonserver and perf_analyzer containers (the CPU flavor's
nav-orch/triton:cpu), talking only to 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import signal
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, leftover_containers, nav_orch, read_results, start_serve

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
BATCH_SIZES = [1, 4]
CONCURRENCY = [1, 2]
VARIANTS = {"onnx-fp32", "torchscript-trace-fp32"}


@pytest.fixture(scope="module")
def optimized(cpu_images, tmp_path_factory):
    """One optimize with the Triton stage for every verified variant, shared by the tests here."""
    assert leftover_containers() == [], "containers of an earlier run exist before the test"
    workspace = tmp_path_factory.mktemp("triton") / "ws"
    run = nav_orch("optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32", "--images", "cpu",
                   "--gpus", "none", "--workspace", str(workspace), "--formats", "onnx,torchscript-trace",
                   "--batch-sizes", ",".join(map(str, BATCH_SIZES)), "--triton-all",
                   "--triton-concurrency", ",".join(map(str, CONCURRENCY)), "--triton-search", "off",
                   "--progress", "plain", "--json")
    assert leftover_containers() == [], "the run left containers behind"
    return workspace, run


def test_optimize_serves_every_variant_and_records_perf_analyzer_figures(optimized):
    workspace, run = optimized
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert results == read_results(workspace)
    triton = results["triton"]
    assert triton["error"] is None, triton["error"]
    assert triton["image"] == "nav-orch/triton:cpu" and triton["server_version"]
    expected = {(v, b, c) for v in VARIANTS for b in BATCH_SIZES for c in CONCURRENCY}
    assert {(r["variant"], r["batch_size"], r["concurrency"]) for r in triton["runs"]} == expected
    for entry in triton["runs"]:
        assert entry["backend"] == "python"  # the CPU flavor's Triton has only the Python backend
        assert entry["throughput"] > 0
        latency = entry["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"]
        assert entry["server_queue_ms"] >= 0 and entry["server_compute_ms"] > 0
        assert (workspace / entry["csv"]).is_file()
    folder = workspace / "triton"
    assert "successfully loaded 'onnx-fp32'" in (folder / "server.log").read_text()
    commands = sorted((folder / "perf").glob("*.cmd"))
    assert len(commands) >= len(expected)
    assert "--measurement-mode count_windows" in commands[0].read_text()
    for name in VARIANTS:
        config = (folder / "model_repository" / name / "config.pbtxt").read_text()
        assert 'backend: "python"' in config and "max_batch_size: 4" in config
    assert "served/s" in run.stderr  # the final table, next to the in-runner figures


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_serve_stops_cleanly_on_sigterm_and_sighup(optimized, signum):
    workspace, _ = optimized
    process, printed = start_serve(workspace)
    assert leftover_containers(), "no server container while serving"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr  # stopping is how serving ends
    assert "stopping" in stderr and "Traceback" not in stderr
    assert leftover_containers() == []


def test_serve_answers_a_real_request_and_stops_cleanly(optimized):
    workspace, _ = optimized
    # Serving a variant missing from the repository writes it first.
    shutil.rmtree(workspace / "triton" / "model_repository" / "torchscript-trace-fp32")
    process, printed = start_serve(workspace, "--variant", "torchscript-trace-fp32")
    try:
        http = printed["http"]
        assert http.startswith("http://127.0.0.1:") and printed["grpc"].startswith("127.0.0.1:")
        request_file = Path(printed["curl"].rsplit("@", 1)[1])
        body = request_file.read_bytes()
        request = urllib.request.Request(f"{http}/v2/models/torchscript-trace-fp32/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "writing torchscript-trace-fp32" in stderr and "Traceback" not in stderr
    (output,) = answer["outputs"]
    assert output["name"] == "output" and output["shape"] == [1, 10]
    with np.load(workspace / "reference" / "reference.npz") as reference:
        expected = reference["output"][:1]
    np.testing.assert_allclose(np.array(output["data"], dtype=np.float32).reshape(1, 10), expected,
                               rtol=1e-3, atol=1e-4)
    assert leftover_containers() == []


def test_serve_reports_a_model_that_fails_to_load_in_one_line(optimized, tmp_path):
    workspace, _ = optimized
    broken = tmp_path / "ws"
    shutil.copytree(workspace, broken)
    config = broken / "triton" / "model_repository" / "onnx-fp32" / "config.pbtxt"
    config.write_text(config.read_text().replace('string_value: "onnxruntime"', 'string_value: "nonsense"'))
    run = nav_orch("serve", str(broken), "--variant", "onnx-fp32", timeout=300)
    assert run.returncode == 4, run.stderr
    assert "failed to load onnx-fp32: Internal: CannotLoad: no loader 'nonsense' here" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 2  # "starting ..." and the error
    assert "failed to load 'onnx-fp32'" in (broken / "triton" / "serve.log").read_text()


def test_serve_refuses_unknown_variants_and_busy_ports(optimized):
    workspace, _ = optimized
    run = nav_orch("serve", str(workspace), "--variant", "nope")
    assert run.returncode == 2
    assert "--variant nope: not a verified variant" in run.stderr and "onnx-fp32" in run.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        run = nav_orch("serve", str(workspace), "--http-port", str(busy.getsockname()[1]))
    assert run.returncode == 3
    assert "is in use: choose another with --http-port" in run.stderr


def test_no_triton_skips_the_stage(tmp_path):
    workspace = tmp_path / "ws"
    run = nav_orch("optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "input:8,64:float32", "--images", "cpu",
                   "--gpus", "none", "--workspace", str(workspace), "--formats", "onnx", "--batch-sizes", "1",
                   "--no-triton", "--progress", "plain")
    assert run.returncode == 0, run.stderr
    assert read_results(workspace)["triton"] is None
    assert not (workspace / "triton").exists()
