"""Triton without Docker, end to end: the local executor optimizes in a user's Python (.venv-inplace:
torch, nvidia-pytriton, numpy<2), then the Triton stage serves the best variant from the tritonserver
that nvidia-pytriton carries, through its Python backend, measures it with tritonclient over gRPC and
searches its serving configuration, which the report draws in a browser; `serve --executor local`
serves the chosen configuration with the reference's answers. No container starts."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
from browser import open_page
from conftest import EXAMPLES, ROOT, infer_over_grpc, nav_orch, read_results, start_serve

from orchestrator.triton.config_search import ServingConfig, Space
from orchestrator.triton.perf_analyzer import parse_csv
from orchestrator.triton.repository import read_config

# Marked docker with the other tests of .venv-inplace: no Docker here, but its user environment is as heavy to make.
pytestmark = [pytest.mark.docker]
BATCH_SIZES = [1, 4]
CONCURRENCY = [1, 2]
SEARCH_BUDGET_S = 30


def processes_with(text: str) -> list[str]:
    """The command lines of this machine's processes that mention `text` (the test's own excepted)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        line = " ".join(part.decode(errors="replace") for part in argv if part)
        if text in line:
            found.append(f"{cmdline.parent.name}: {line}")
    return found


@pytest.fixture(scope="module")
def optimized(user_python, tmp_path_factory) -> tuple[Path, dict, str]:
    workspace = tmp_path_factory.mktemp("local-triton") / "ws"
    run = nav_orch("optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "x:4,64:float32", "--executor", "local",
                   "--python", user_python, "--gpus", "none", "--images", "cpu", "--workspace", str(workspace),
                   "--formats", "torchscript-trace", "--batch-sizes", ",".join(map(str, BATCH_SIZES)),
                   "--triton-concurrency", ",".join(map(str, CONCURRENCY)), "--triton-search", "quick",
                   "--triton-search-budget", str(SEARCH_BUDGET_S), "--progress", "plain", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    return workspace, json.loads(run.stdout), run.stderr


def test_the_local_stage_serves_the_best_variant_from_a_local_tritonserver(optimized):
    workspace, results, stderr = optimized
    assert results == read_results(workspace)
    best = results["best"]
    assert best and best.startswith("torchscript-trace-")
    triton = results["triton"]
    assert triton["error"] is None, triton["error"]
    assert triton["client"] == "tritonclient-grpc"
    assert triton["image"].startswith("tritonserver ")
    binary = triton["image"].removeprefix("tritonserver ")
    assert Path(binary).is_file() and f"triton: serving with {binary}" in stderr
    assert triton["ready_s"] > 0 and triton["model_repository"] == "triton/model_repository"
    runs = triton["runs"]
    assert sorted((r["batch_size"], r["concurrency"]) for r in runs) == [
        (b, c) for b in BATCH_SIZES for c in CONCURRENCY]
    for run in runs:
        assert (run["variant"], run["backend"]) == (best, "python")
        assert run["throughput"] > 0
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"]
        assert run["server_compute_ms"] > 0 and run["server_queue_ms"] >= 0
        csv = workspace / run["csv"]
        assert csv.is_file() and csv.is_relative_to(workspace / "triton" / "perf")
        (point,) = parse_csv(csv.read_text())
        assert point.concurrency == run["concurrency"]
        assert point.throughput == pytest.approx(run["throughput"])
        assert point.latency_ms.p99 == pytest.approx(latency["p99"])
    assert (workspace / "triton" / "server.log").is_file()
    assert (workspace / "triton" / "backends" / "python" / "triton_python_backend_stub").is_file()
    config = (workspace / "triton" / "model_repository" / best / "config.pbtxt").read_text()
    assert 'backend: "python"' in config
    repository = str((workspace / "triton" / "model_repository").resolve())
    assert processes_with(repository) == [], "the stage left its server running"


def test_serve_runs_the_local_tritonserver_with_the_references_answers(optimized, user_python):
    workspace, results, _ = optimized
    best = results["best"]
    process, printed = start_serve(workspace, "--executor", "local", "--python", user_python)
    try:
        assert printed["model"] == f"{best} (python backend)"
        with np.load(workspace / "reference" / "samples.npz") as samples:
            inputs = {name: samples[name] for name in samples.files}
        with np.load(workspace / "reference" / "reference.npz") as reference:
            expected = {name: reference[name] for name in reference.files}
        served = infer_over_grpc(printed["grpc"], best, inputs, list(expected))
        # Optimize's repository, for the Python backend, with the searched configuration.
        repository = str((workspace / "triton" / "model_repository").resolve())
        assert processes_with(repository), "serve runs tritonserver as a process of this machine"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=90)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert f"starting Triton ({results['triton']['image'].removeprefix('tritonserver ')}) with {best}" in stderr
    assert "ready in " in stderr
    for name, array in served.items():
        np.testing.assert_allclose(array, expected[name], rtol=1e-4, atol=1e-5)
    assert (workspace / "triton" / "serve.log").is_file()
    assert processes_with(repository) == [], "the server outlived serve"


def test_the_search_measured_each_configuration_it_loaded_and_deployed_the_best(optimized):
    workspace, results, stderr = optimized
    search = results["triton"]["search"]
    trials = search["trials"]
    default = Space(batch_sizes=tuple(BATCH_SIZES)).default()
    assert search["mode"] == "quick" and search["variant"] == results["best"] and search["client_batch_size"] == 1
    assert trials[0]["config"] == search["default"] == default.name and len(trials) >= 2
    assert len({t["config"] for t in trials}) == len(trials)  # each configuration once
    measured = [t for t in trials if t["error"] is None]
    for trial in measured:  # each was loaded and swept: its perf_analyzer-like CSVs are there
        assert trial["throughput"] > 0 and trial["p99_ms"] >= trial["p50_ms"] > 0
        csvs = list((workspace / "triton" / "perf" / "search" / trial["config"]).glob("*.csv"))
        assert csvs and any(parse_csv(c.read_text())[0].concurrency == trial["concurrency"] for c in csvs)
    chosen = max(measured, key=lambda t: t["throughput"])  # throughput, no p99 budget
    assert search["chosen"] == chosen["config"]
    assert search["gain"] == pytest.approx(chosen["throughput"] / trials[0]["throughput"])
    assert set(search["pareto"]) <= {t["config"] for t in measured} and chosen["config"] in search["pareto"]
    deployed = read_config(workspace / "triton" / "model_repository", results["best"])
    assert ServingConfig(deployed.instance_group[0].count, deployed.dynamic_batching.max_queue_delay_microseconds,
                         deployed.max_batch_size, tuple(deployed.dynamic_batching.preferred_batch_size)
                         ).name == chosen["config"]
    assert f"serving configuration: {chosen['config']} of {len(trials)} tried (quick)" in stderr
    report = workspace / "report.html"
    assert f"Serving configurations searched for {results['best']} (quick, {len(trials)} tried" in report.read_text()
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    page = open_page(report, ROOT / "test-artifacts" / "report-search.png")
    # Every chart drew all its series: the search's has three (tried, the Pareto front, the chosen).
    assert any(c["expected"] == 3 for c in page["charts"]) and page["errors"] == []
    assert all(c["svg"] >= 1 and c["drawn"] == c["expected"] for c in page["charts"]), page["charts"]


def test_a_tritonserver_that_does_not_exist_is_one_line_and_the_environments_code(user_python, tmp_path):
    missing = tmp_path / "no" / "tritonserver"
    run = nav_orch("optimize", f"{EXAMPLES}/mlp.py:make_mlp", "--input", "x:4,64:float32", "--executor", "local",
                   "--python", user_python, "--gpus", "none", "--images", "cpu", "--workspace", str(tmp_path / "ws"),
                   "--formats", "torchscript-trace", "--tritonserver", str(missing), "--progress", "quiet")
    assert run.returncode == 3 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"nav-orch: --tritonserver {missing}: no such file; give the tritonserver program's path"]
