"""Shared fixtures. End-to-end tests (marked `docker`) need a Docker daemon; they build
the CPU images once per session (cached by Docker after the first time)."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RUN_LABEL = "org.nav-orch.run"


def nav_orch(*args: str, timeout: float = 900, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would from a script: no terminal to answer a question on."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def leftover_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={RUN_LABEL}"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def start_serve(workspace: Path, *options: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """`nav-orch serve` running, with what it printed up to its curl line (model, http, grpc, curl)."""
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", str(workspace), *options],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = printed_until(process, "curl", timeout_s=180)
    if "curl" not in printed:
        pytest.fail(f"serve printed no request: {printed} {process.stderr.read()[-2000:]}")
    return process, printed


def printed_until(process: subprocess.Popen, key: str, timeout_s: float, stream: Any = None) -> dict[str, str]:
    """The `KEY VALUE` lines a process printed (on stdout, or `stream`) up to the one of `key`. A
    process that prints nothing more for `timeout_s` is stopped (SIGTERM, then SIGKILL), so that a
    hang fails its test, not CI."""
    lines: queue.Queue = queue.Queue()
    stream = stream or process.stdout

    def pump() -> None:  # readline blocks, with no timeout of its own; what follows `key` is the caller's
        for line in iter(stream.readline, ""):
            lines.put(line)
            if line.strip().partition(" ")[0] == key:
                return
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    printed: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while key not in printed:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = ""
        if not line:
            break
        name, _, value = line.strip().partition(" ")
        printed[name] = value.strip()
    if key not in printed and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return printed


def infer_over_grpc(address: str, model: str, inputs: dict[str, np.ndarray],
                    outputs: list[str]) -> dict[str, np.ndarray]:
    """One request to a served model (float32 inputs) over gRPC; its outputs by name."""
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(address)
    try:
        requests = []
        for name, array in inputs.items():
            requests.append(triton_grpc.InferInput(name, list(array.shape), "FP32"))
            requests[-1].set_data_from_numpy(array)
        answer = client.infer(model, requests)
        return {name: answer.as_numpy(name) for name in outputs}
    finally:
        client.close()


@pytest.fixture(scope="session")
def cpu_images() -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("no Docker daemon answers: start dockerd (see README, Install) or deselect with -m 'not docker'")
    built = nav_orch("images", "build", "--flavor", "cpu", timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]
    # What a killed earlier session left (its owner is gone), as every run removes it when it starts.
    cleaned = nav_orch("clean", timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr


@pytest.fixture(scope="session")
def runners_python() -> str:
    """A Python with the CPU image's runner toolchain, for `--executor local` (made once, in .venv-runners)."""
    python = ROOT / ".venv-runners" / "bin" / "python"
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "runners_venv.py"), str(python.parent.parent)],
                          capture_output=True, text=True, timeout=1800)
    assert made.returncode == 0, made.stderr[-3000:]
    return str(python)


@pytest.fixture(scope="session")
def user_python() -> str:
    """A user's Python for the inplace tests: torch, transformers, diffusers and nav-orch (made once,
    in .venv-inplace; the host's environment never gets a framework)."""
    python = ROOT / ".venv-inplace" / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr[-3000:]
    imports = "import torch, transformers, diffusers, onnxruntime, pytriton, orchestrator"
    ready = subprocess.run([str(python), "-c", imports], capture_output=True)
    if ready.returncode != 0:
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[inplace-test]"],
                                   capture_output=True, text=True, timeout=1800)
        assert installed.returncode == 0, installed.stderr[-3000:]
    return str(python)


@pytest.fixture
def no_leftovers():
    assert leftover_containers() == [], "containers of an earlier run exist before the test"
    yield
    assert leftover_containers() == [], "the run left containers behind"


def read_results(workspace: Path) -> dict:
    return json.loads((workspace / "results.json").read_text())


# --- end-to-end runs on the CPU images ---------------------------------------------------------

E2E_BATCH_SIZES = [1, 4]


def run_cpu(command: str, workspace: Path, model: str, *options: str) -> subprocess.CompletedProcess:
    """`nav-orch COMMAND MODEL` on the CPU images, JSON on stdout, plain progress on stderr."""
    return nav_orch(command, model, "--images", "cpu", "--gpus", "none", "--workspace", str(workspace),
                    "--batch-sizes", ",".join(map(str, E2E_BATCH_SIZES)), "--progress", "plain", "--json", *options)


def optimize_cpu(workspace: Path, model: str, *options: str) -> subprocess.CompletedProcess:
    # --no-triton: the Triton stage has its own end-to-end tests (test_e2e_triton.py).
    return run_cpu("optimize", workspace, model, "--no-triton", *options)


def write_two_input_samples(path: Path) -> Path:
    """Samples for the two-input examples (image: 32 features, mask: 8), keyed in another order
    than the models take them, so that matching by name is what makes them fit."""
    rng = np.random.default_rng(1)
    np.savez(path, mask=rng.standard_normal((3, 8)).astype("float32"),
             image=rng.standard_normal((3, 32)).astype("float32"))
    return path


def assert_profiled(variant: dict) -> None:
    assert [p["batch_size"] for p in variant["profile"]] == E2E_BATCH_SIZES
    for entry in variant["profile"]:
        latency = entry["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"]
        assert entry["throughput"] > 0


def assert_cut_points_lost(results: dict, margin: float = 0.2) -> int:
    """Every profile point cut short after its first window was beaten there, by the margin, by a full
    point of the verified variant it names (runners/harness/measure.py `beaten_by`), and the best variant's
    chosen point is none of them; how many were cut."""
    variants = {v["name"]: v for v in results["variants"]}
    cut = 0
    for variant in results["variants"]:
        for entry in variant["profile"]:
            if entry["beaten_by"] is None:
                continue
            cut += 1
            assert entry["windows"] == 1 and entry["stable"] is False
            rival = variants[entry["beaten_by"]]
            (beating,) = [e for e in rival["profile"] if e["batch_size"] == entry["batch_size"]]
            assert rival["status"] == "ok" and beating["beaten_by"] is None
            assert beating["throughput"] >= (1 + margin) * entry["throughput"]
            assert beating["latency_ms"]["p99"] <= entry["latency_ms"]["p50"]
    if results["best"]:
        chosen = [e for e in variants[results["best"]]["profile"]
                  if e["batch_size"] == results["selection"]["batch_size"]]
        assert chosen and chosen[0]["beaten_by"] is None
    return cut


def assert_verified_and_profiled(variant: dict) -> None:
    assert variant["status"] == "ok", variant["error"]
    assert variant["verification"]["passed"] is True
    for output in variant["verification"]["outputs"].values():
        assert output["passed"] is True
        assert output["max_abs_err"] <= output["atol"] + output["rtol"]
    assert_profiled(variant)
    assert variant["artifact"]
