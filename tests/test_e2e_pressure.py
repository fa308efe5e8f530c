"""Under resource pressure, in real containers: each runner's default memory limit, applied, said and
recorded; a workspace whose filesystem fills up mid-run (a small tmpfs). A runner out of memory at
its --memory is in test_e2e_faults.py."""
import json
import re
import subprocess
from pathlib import Path

import docker
import pytest
from conftest import nav_orch, read_results
from test_e2e_faults import optimize_args

from orchestrator.errors import ExitCode
from orchestrator.run import memory_limit

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]


def test_each_runner_gets_the_default_limit_and_the_run_records_it(tmp_path):
    workspace = tmp_path / "ws"
    run = nav_orch(*optimize_args(workspace, "make_says_its_memory_limit", "--jobs", "2"))
    assert run.returncode == 0, run.stderr
    client = docker.from_env()
    try:
        host = client.info()["MemTotal"]
    finally:
        client.close()
    expected = memory_limit.runner_limit("auto", host, memory_limit.runners_at_once(2, 0, 6))
    assert expected is not None and expected < host
    assert f"each runner may use {memory_limit.describe(expected)} of memory (2 at once" in run.stderr
    assert read_results(workspace)["environment"]["runner_memory"] == memory_limit.docker_memory(expected)
    # What the model saw of its own cgroup, in every runner that built it (the reference and each variant's).
    logs = "".join(log.read_text() for log in (workspace / "logs").glob("*.log"))
    seen = re.findall(r"cgroup memory limit: (\S+)", logs)
    assert len(seen) >= 3 and set(seen) == {str(expected)}, seen
    reruns = list((workspace / "jobs").glob("*/rerun.sh"))
    assert reruns and all(f"--memory {memory_limit.docker_memory(expected)} " in r.read_text() for r in reruns)


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MiB tmpfs: room for the run's own files and two of make_large's artifacts, not three."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root is needed, as in CI): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_workspace_that_fills_up_stops_the_run_in_one_line_and_keeps_what_finished(small_disk: Path):
    workspace = small_disk / "ws"
    args = optimize_args(workspace, "make_large", "--jobs", "1")
    args[args.index("--input") + 1] = "x:2,1024:float32"
    args[args.index("--formats") + 1] = "torchscript-trace,onnx,torchscript-script,exported-program"
    run = nav_orch(*args)
    assert run.returncode == ExitCode.ENVIRONMENT, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"nav-orch: no space left on the filesystem of {workspace} \(\d+ MiB free of 1\d MiB; "
                        r"each variant needs up to [45] MiB\): free some, or give a --workspace on a larger disk; "
                        r"rerun the same command to finish only what is missing", last), last
    assert "Traceback" not in run.stderr
    results = json.loads((workspace / "results.json").read_text())  # whole, as every save is atomic
    assert results["state"] == "failed" and results["error"] == last.removeprefix("nav-orch: ")
    built = {v["name"]: v["artifact"] for v in results["variants"] if v["artifact"]}
    assert len(built) >= 2, results["variants"]  # exported and verified before the disk filled up
    for artifact in built.values():
        assert (workspace / artifact).stat().st_size > 4_000_000
    # The variant whose export met the full disk left no half-written artifact.
    assert {folder.name for folder in (workspace / "variants").iterdir()} == set(built)
    assert not list(workspace.glob(".*.tmp")), "a half-written document was left beside its last whole one"

    # With room again, the same command finishes only what is missing: what was built is reused.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = nav_orch(*args)
    assert again.returncode == 0, again.stderr
    rerun = read_results(workspace)
    assert rerun["state"] == "complete" and all(v["status"] == "ok" for v in rerun["variants"])
    assert rerun["jobs"]["reused"] >= 2 * len(built), rerun["jobs"]  # each built variant's export and verify
