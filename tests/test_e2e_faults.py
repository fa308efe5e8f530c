"""Fault injection through real containers: every fault becomes a status with a reason,
the rest of the run goes on, results.json stays intact, and no container is left."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, leftover_containers, nav_orch, read_results

from orchestrator.containers.engine import OWNER_LABEL, ROLE_LABEL

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
FAULTS = Path(__file__).resolve().parent / "models" / "faults.py"
FORMATS = "torchscript-trace,onnx"


def optimize_args(workspace: Path, factory: str, *options: str) -> list[str]:
    return ["optimize", f"{FAULTS}:{factory}", "--input", "x:2,4:float32", "--images", "cpu", "--gpus", "none",
            "--workspace", str(workspace), "--batch-sizes", "1", "--progress", "plain", "--formats", FORMATS,
            "--no-triton", *options]  # the Triton stage has its own tests (test_e2e_triton.py)


def by_format(results: dict) -> dict:
    return {v["format"]: v for v in results["variants"]}


@pytest.mark.parametrize("factory, options, reason", [
    ("make_segfault_on_trace", [], "runner died on SIGSEGV"),
    ("make_hang_on_trace", ["--timeout", "15"], "timed out after 15 s"),
    ("make_oom_on_trace", ["--memory", "512m"],
     "out of memory at 512 MiB (the runner's limit): raise --memory or lower --jobs"),
])
def test_a_runner_fault_fails_only_its_variant(tmp_path, factory, options, reason):
    workspace = tmp_path / "ws"
    run = nav_orch(*optimize_args(workspace, factory, *options))
    assert run.returncode == 0, run.stderr
    results = read_results(workspace)
    variants = by_format(results)
    trace = variants["torchscript-trace"]
    assert trace["status"] == "failed"
    assert trace["error"].startswith(f"export: {reason}"), trace["error"]
    assert "log: logs/build-torchscript-trace-fp32.log" in trace["error"]
    assert (workspace / "logs" / "build-torchscript-trace-fp32.log").exists()
    assert variants["onnx"]["status"] == "ok"
    assert results["best"] == variants["onnx"]["name"] and results["state"] == "complete"


def test_writing_into_the_model_folder_is_refused(tmp_path):
    workspace = tmp_path / "ws"
    run = nav_orch(*optimize_args(workspace, "make_writes_input"))
    assert run.returncode == 2
    assert "Read-only file system" in run.stderr and "Traceback" not in run.stderr
    assert not (FAULTS.parent / "planted.txt").exists()
    assert read_results(workspace)["state"] == "failed"


def test_runners_have_no_network(tmp_path):
    received: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(1)
        port = server.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    received.append(conn.recv(1024))

        listener = threading.Thread(target=accept)
        listener.start()
        try:
            run = nav_orch(*optimize_args(tmp_path / "ws", "make_opens_network", "--model-arg", f"port={port}"))
        finally:
            stop.set()
            listener.join()
    assert received == []
    assert run.returncode == 2
    assert "Connection refused" in run.stderr or "unreachable" in run.stderr


def test_nan_in_the_source_model_is_a_clear_error(tmp_path):
    run = nav_orch(*optimize_args(tmp_path / "ws", "make_nan_outputs"))
    assert run.returncode == 2
    assert "contains NaN or Inf" in run.stderr and "Traceback" not in run.stderr


def test_ctrl_c_stops_the_run_and_a_rerun_finishes_only_missing_jobs(tmp_path):
    workspace = tmp_path / "ws"
    args = optimize_args(workspace, "make_slow_on_trace", "--model-arg", "seconds=20", "--jobs", "2")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait until the ONNX variant is verified while the trace export still sleeps.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        verify = workspace / "jobs" / "verify-onnx-fp32" / "result.json"
        if verify.exists() and json.loads(verify.read_text())["status"] == "ok":
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("the ONNX variant was never verified")
    interrupted_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert time.monotonic() - interrupted_at < 10
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert leftover_containers() == []
    first = read_results(workspace)
    assert first["state"] == "interrupted"
    done_before = {p.parent.name for p in (workspace / "jobs").glob("*/result.json")
                   if json.loads(p.read_text())["status"] == "ok"}
    assert {"reference", "export-onnx-fp32", "verify-onnx-fp32"} <= done_before

    # The same command again on the same workspace.
    rerun = nav_orch(*args)
    assert rerun.returncode == 0, rerun.stderr
    second = read_results(workspace)
    total_jobs = 1 + 2 * 2 + 2  # reference, export + verify per variant, profile per variant
    # The reference job always runs again (it fingerprints the model); every other finished job is reused.
    reused = len(done_before - {"reference"})
    assert second["jobs"]["reused"] == reused
    assert second["jobs"]["run"] == total_jobs - reused
    assert f"reused {reused}" in rerun.stdout
    assert {v["status"] for v in second["variants"]} == {"ok"}


def test_a_run_after_a_killed_one_removes_the_containers_it_left(tmp_path):
    args = optimize_args(tmp_path / "killed", "make_slow_on_trace", "--model-arg", "seconds=60")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not leftover_containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.kill()  # SIGKILL: no clean-up of its own can run
    process.wait()
    left = leftover_containers()
    assert left, "the killed run had no container running"

    # The next run, in another workspace, finds them by their owner label as it starts.
    rerun = nav_orch(*optimize_args(tmp_path / "next", "make_slow_on_trace", "--model-arg", "seconds=0"))
    assert rerun.returncode == 0, rerun.stderr
    assert f"removed {len(left)} container(s) that a killed nav-orch run left behind" in rerun.stderr
    assert leftover_containers() == []



def containers_by_owner_pid() -> dict[int, dict[str, str]]:
    """The nav-orch containers of this host by the process id in their owner label: name -> role."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={OWNER_LABEL}", "--format",
                          f'{{{{.Names}}}} {{{{.Label "{OWNER_LABEL}"}}}} {{{{.Label "{ROLE_LABEL}"}}}}'],
                         capture_output=True, text=True, check=True)
    owners: dict[int, dict[str, str]] = {}
    for line in out.stdout.splitlines():
        name, owner, role = line.split()
        owners.setdefault(int(owner.split(":")[1]), {})[name] = role
    return owners


def test_clean_removes_a_killed_runs_containers_and_keeps_a_live_ones(tmp_path):
    # One slow variant each, so that the live run holds its warm runners, one building, for a minute and more.
    args = {name: optimize_args(tmp_path / name, "make_slow_on_trace", "--model-arg", "seconds=90", "--formats",
                                "torchscript-trace") for name in ("live", "killed")}
    runs = {name: subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *arguments], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, arguments in args.items()}

    def building(name: str) -> bool:
        return (tmp_path / name / "jobs" / "export-torchscript-trace-fp32" / "job.json").exists()

    try:
        deadline = time.monotonic() + 120
        while not all(building(name) for name in runs) and time.monotonic() < deadline:
            time.sleep(0.2)
        runs["killed"].kill()  # SIGKILL: its containers stay behind
        runs["killed"].wait()
        owners = containers_by_owner_pid()
        killed, live = owners.get(runs["killed"].pid, {}), owners.get(runs["live"].pid, {})
        assert killed and live and all(role.startswith("runner:warm-") for role in live.values()), owners

        dry = nav_orch("clean", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert all(f"would remove {name} " in dry.stdout for name in killed), dry.stdout
        assert all(f"kept {name} " in dry.stdout for name in live), dry.stdout
        assert containers_by_owner_pid().get(runs["killed"].pid) == killed  # a dry run removes nothing

        cleaned = nav_orch("clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"removed {len(killed)} container(s)" in cleaned.stdout
        assert all(f"kept {name} " in cleaned.stdout for name in live), cleaned.stdout
        after = containers_by_owner_pid()
        assert runs["killed"].pid not in after and after.get(runs["live"].pid) == live, after
        assert runs["live"].poll() is None  # the live run goes on
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.send_signal(signal.SIGTERM)
                run.wait(timeout=120)
    assert leftover_containers() == []  # the live run, stopped, removed its own
