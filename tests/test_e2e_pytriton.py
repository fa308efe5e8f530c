"""`nav-orch serve --server pytriton` end to end: a real PyTriton server (nvidia-pytriton's
tritonserver, in nav-orch/triton:cpu) for a model of two inputs and two outputs, answered over HTTP
and gRPC, stopped by SIGINT and SIGTERM, talking only to 127.0.0.1."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, infer_over_grpc, leftover_containers, nav_orch, start_serve, write_two_input_samples

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]


@pytest.fixture(scope="module")
def two_heads(cpu_images, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pytriton")
    samples = write_two_input_samples(folder / "samples.npz")
    workspace = folder / "ws"
    run = nav_orch("optimize", f"{EXAMPLES}/two_heads.py:make_two_heads", "--samples", str(samples), "--images",
                   "cpu", "--gpus", "none", "--workspace", str(workspace), "--formats", "onnx,torchscript-trace",
                   "--batch-sizes", "1,4", "--no-triton", "--progress", "plain")
    assert run.returncode == 0, run.stderr
    return workspace


def stop(process, signum: int) -> str:
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 0, stderr  # stopping is how serving ends
    assert "stopping" in stderr and "Traceback" not in stderr
    return stderr


@pytest.mark.parametrize("variant", ["onnx-fp32", "torchscript-trace-fp32"])
def test_pytriton_answers_over_http_and_grpc_like_the_reference_then_stops_on_sigint(two_heads, variant):
    process, printed = start_serve(two_heads, "--server", "pytriton", "--variant", variant)
    try:
        assert printed["model"] == f"{variant} (PyTriton)"
        http, grpc = printed["http"], printed["grpc"]
        assert http.startswith("http://127.0.0.1:") and grpc.startswith("127.0.0.1:")
        # HTTP: the request serve printed (the first sample).
        body = Path(printed["curl"].rsplit("@", 1)[1]).read_bytes()
        request = urllib.request.Request(f"{http}/v2/models/{variant}/infer", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            over_http = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"])
                         for o in json.load(response)["outputs"]}
        # gRPC: every sample at once, a batch of 4.
        with np.load(two_heads / "reference" / "samples.npz") as samples:
            inputs = {name: samples[name] for name in samples.files}
        over_grpc = infer_over_grpc(grpc, variant, inputs, ["output_0", "output_1"])
    finally:
        stderr = stop(process, signal.SIGINT)
    with np.load(two_heads / "reference" / "reference.npz") as reference:
        for name in ("output_0", "output_1"):
            np.testing.assert_allclose(over_grpc[name], reference[name], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(over_http[name], reference[name][:1], rtol=1e-4, atol=1e-5)
    assert f"writing {variant}" in stderr
    assert leftover_containers() == []


def test_pytriton_stops_cleanly_on_sigterm(two_heads):
    process, _ = start_serve(two_heads, "--server", "pytriton")
    assert leftover_containers(), "no server container while serving"
    stop(process, signal.SIGTERM)
    assert leftover_containers() == []


def test_pytriton_refuses_a_taken_port_and_an_unknown_server(two_heads):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = nav_orch("serve", str(two_heads), "--server", "pytriton", "--grpc-port", str(port))
    assert run.returncode == 3
    assert run.stderr.strip() == (f"nav-orch: port {port} on 127.0.0.1 is in use: "
                                  "choose another with --grpc-port")
    run = nav_orch("serve", str(two_heads), "--server", "torchserve")
    assert run.returncode == 2 and run.stderr.strip() == "nav-orch: --server torchserve: choose triton or pytriton"


def test_the_local_executor_serves_in_the_given_python_and_leaves_no_process(two_heads, user_python):
    process, printed = start_serve(two_heads, "--server", "pytriton", "--executor", "local", "--python", user_python)
    try:
        assert printed["model"] == "onnx-fp32 (PyTriton)" and leftover_containers() == []
        with np.load(two_heads / "reference" / "samples.npz") as samples:
            inputs = {name: samples[name] for name in samples.files}
        output = infer_over_grpc(printed["grpc"], "onnx-fp32", inputs, ["output_0"])["output_0"]
    finally:
        stderr = stop(process, signal.SIGTERM)
    assert f"starting PyTriton (--python {user_python})" in stderr
    with np.load(two_heads / "reference" / "reference.npz") as reference:
        np.testing.assert_allclose(output, reference["output_0"], rtol=1e-4, atol=1e-5)
    left = subprocess.run(["pgrep", "-f", "runners.serving.pytriton_server"], capture_output=True, text=True).stdout
    assert left == "", "the server process outlived serve"


def test_a_local_python_without_pytriton_is_one_clear_line(two_heads):
    run = nav_orch("serve", str(two_heads), "--server", "pytriton", "--executor", "local", "--python", sys.executable)
    assert run.returncode == 3
    assert run.stderr.startswith(f"nav-orch: --python {sys.executable} cannot serve onnx with PyTriton (")
    assert "pip install nvidia-pytriton onnxruntime into it" in run.stderr and len(run.stderr.splitlines()) == 1
    # Triton (the default server) without Docker: a tritonserver of this machine, which this Python lacks.
    run = nav_orch("serve", str(two_heads), "--executor", "local", "--python", sys.executable)
    assert run.returncode == 3 and len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith("nav-orch: no tritonserver for a Python ") and "--tritonserver PATH" in run.stderr


def test_a_cuda_workspace_is_served_by_pytriton_only_through_a_local_python(two_heads, tmp_path):
    cuda = tmp_path / "ws"
    shutil.copytree(two_heads, cuda)
    results = json.loads((cuda / "results.json").read_text())
    for image in results["environment"]["images"]:
        image["tag"] = image["tag"].replace(":cpu", ":25.10")
    (cuda / "results.json").write_text(json.dumps(results))
    run = nav_orch("serve", str(cuda), "--server", "pytriton", "--gpus", "none")
    assert run.returncode == 3 and len(run.stderr.splitlines()) == 1
    assert "for this 25.10 workspace use --executor local --python PY" in run.stderr
