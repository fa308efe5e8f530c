"""`nav-orch zoo` end to end: real optimize runs in real containers (CPU images), on this host and
on a real Ray cluster of a head and two worker nodes on this machine (ray.cluster_utils.Cluster:
separate raylet processes with their own resources), including a worker node lost mid-run."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, leftover_containers, nav_orch

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]

# Three small models of different frameworks; no Triton stage, to keep the zoo short.
ZOO = f"""
[defaults]
images = "cpu"
gpus = "none"
batch_sizes = [1, 2]
triton = false

[[model]]
name = "torch-mlp"
model = "{EXAMPLES}/mlp.py:make_mlp"
inputs = ["input:4,64:float32"]
formats = ["onnx"]

[[model]]
name = "keras-mlp"
model = "{EXAMPLES}/keras_mlp.py:make_keras_mlp"
inputs = ["features:4,64:float32"]
formats = ["savedmodel"]

[[model]]
name = "jax-mlp"
model = "{EXAMPLES}/jax_mlp.py:make_jax_mlp"
inputs = ["x:4,64:float32"]
formats = ["savedmodel"]
"""
NAMES = ["torch-mlp", "keras-mlp", "jax-mlp"]
BEST = {"torch-mlp": "onnx-fp32", "keras-mlp": "savedmodel-fp32", "jax-mlp": "savedmodel-fp32"}


def write_zoo(folder: Path) -> Path:
    path = folder / "zoo.toml"
    path.write_text(ZOO)
    return path


def assert_zoo_finished(out: Path) -> dict:
    zoo = json.loads((out / "zoo.json").read_text())
    assert zoo["state"] == "complete"
    assert [m["name"] for m in zoo["models"]] == NAMES
    for model in zoo["models"]:
        assert model["status"] == "ok", model
        assert model["best"] == BEST[model["name"]]
        results = json.loads((out / model["workspace"] / "results.json").read_text())
        assert results["state"] == "complete" and results["best"] == model["best"]
        assert (out / model["workspace"] / "report.html").is_file()
    index = (out / "index.html").read_text()
    assert all(f'href="{name}/report.html"' in index for name in NAMES)
    return zoo


def test_a_zoo_runs_locally_without_ray(tmp_path):
    run = nav_orch("zoo", str(write_zoo(tmp_path)), "--workspace", str(tmp_path / "out"), timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    zoo = assert_zoo_finished(tmp_path / "out")
    assert zoo["backend"] == "local" and {m["node"] for m in zoo["models"]} == {"local"}
    assert "torch-mlp" in run.stdout and "keras-mlp: ok, best savedmodel-fp32" in run.stderr


@pytest.fixture
def cluster():
    """A Ray head (no CPUs: it takes no model) and two worker nodes of one CPU each."""
    from ray.cluster_utils import Cluster

    ray_cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [ray_cluster.add_node(num_cpus=1) for _ in range(2)]
    ray_cluster.wait_for_nodes()
    yield ray_cluster, workers
    ray_cluster.shutdown()


def zoo_on(cluster_address: str, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "zoo", str(write_zoo(tmp_path)), "--workspace",
                             str(tmp_path / "out"), "--ray", cluster_address], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_zoo_runs_on_a_ray_cluster_one_task_per_model(cluster, tmp_path):
    ray_cluster, _ = cluster
    process = zoo_on(ray_cluster.address, tmp_path)
    stdout, stderr = process.communicate(timeout=1200)
    assert process.returncode == 0, stderr[-3000:]
    zoo = assert_zoo_finished(tmp_path / "out")
    assert zoo["backend"] == f"ray {ray_cluster.address}"
    assert all(m["attempts"] == 1 and m["node"] for m in zoo["models"])
    # Preflight: every node said it was ready before any model started.
    assert stderr.count("zoo: node ") >= 3 and "ready (Docker" in stderr


def test_a_model_whose_node_is_lost_runs_again_on_the_other_node(cluster, tmp_path):
    ray_cluster, workers = cluster
    process = zoo_on(ray_cluster.address, tmp_path)
    # Both workers busy (a container of each run up): then one worker node goes.
    deadline = time.monotonic() + 300
    while len(leftover_containers()) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert len(leftover_containers()) >= 2, "the two workers never ran a model at the same time"
    ray_cluster.remove_node(workers[0])
    stdout, stderr = process.communicate(timeout=1200)
    assert process.returncode == 0, stderr[-3000:]
    zoo = assert_zoo_finished(tmp_path / "out")
    retried = [m for m in zoo["models"] if m["attempts"] == 2]
    assert len(retried) == 1, zoo["models"]
    assert f"zoo: {retried[0]['name']}: started again on" in stderr
    # The lost node's run stopped on SIGTERM (its parent gone) and removed its containers.
    deadline = time.monotonic() + 60
    while leftover_containers() and time.monotonic() < deadline:
        time.sleep(1)


def stop_mid_run(process: subprocess.Popen, signum: int) -> str:
    """Send `signum` once a model's container is up; the zoo's stderr once it has exited."""
    deadline = time.monotonic() + 300
    while not leftover_containers() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert leftover_containers(), "no model started"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    return stderr


def test_sigterm_stops_a_local_zoo_and_every_run_removes_its_containers(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "zoo", str(write_zoo(tmp_path)),
                                "--workspace", str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    stderr = stop_mid_run(process, signal.SIGTERM)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted" in stderr
    zoo = json.loads((tmp_path / "out" / "zoo.json").read_text())
    assert zoo["state"] == "interrupted"
    # The model that was running stopped as optimize stops: its results marked interrupted, kept.
    running = json.loads((tmp_path / "out" / NAMES[0] / "results.json").read_text())
    assert running["state"] == "interrupted"
    assert leftover_containers() == []


def test_ctrl_c_cancels_every_task_of_a_ray_zoo_and_each_node_removes_its_containers(cluster, tmp_path):
    ray_cluster, _ = cluster
    process = zoo_on(ray_cluster.address, tmp_path)
    stderr = stop_mid_run(process, signal.SIGINT)
    assert process.returncode == 130, stderr[-3000:]
    assert json.loads((tmp_path / "out" / "zoo.json").read_text())["state"] == "interrupted"
    deadline = time.monotonic() + 60  # each cancelled task's run cleans up on its node
    while leftover_containers() and time.monotonic() < deadline:
        time.sleep(1)
    assert leftover_containers() == []
