"""Behaviours users rely on every day, end to end in real containers: resuming in the usual
project layout, clean stops on SIGTERM and SIGHUP, models in private folders."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT, leftover_containers, nav_orch, read_results

from orchestrator.containers import engine

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
FAULTS = Path(__file__).resolve().parent / "models" / "faults.py"
QUICK = ["--images", "cpu", "--gpus", "none", "--batch-sizes", "1", "--progress", "plain", "--no-triton"]

HELPER = "import numpy as np\n\nWIDTH = 16\n\n\ndef hidden_width():\n    return WIDTH\n"
FACTORY = """import torch
from torch import nn

from helper import hidden_width


def make_model():
    return nn.Sequential(nn.Linear(8, hidden_width()), nn.ReLU(), nn.Linear(hidden_width(), 3)).eval()
"""


def test_resume_in_a_project_folder_reuses_every_job_until_the_model_changes(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "model.py").write_text(FACTORY)
    (project / "helper.py").write_text(HELPER)
    np.savez(project / "s.npz", x=np.random.default_rng(0).standard_normal((4, 8)).astype("float32"))
    # The default workspace ./nav-workspace lies inside the model's folder, as do logs, VCS data
    # and virtual environments in real projects.
    args = ["optimize", "model.py:make_model", "--samples", "s.npz", "--formats", "torchscript-trace,onnx", *QUICK]
    jobs = 1 + 2 * 2 + 2  # reference, export + verify per variant, profile per variant

    first = nav_orch(*args, cwd=project)
    assert first.returncode == 0, first.stderr
    assert jobs_but_the_comparison(read_results(project / "nav-workspace")) == {"run": jobs, "reused": 0}

    (project / ".git").mkdir()
    (project / ".git" / "index").write_bytes(os.urandom(64))
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / ".venv" / "lib" / "site.py").write_text("x = 1\n")
    (project / "train.log").write_text("epoch 1\n")
    second = nav_orch(*args, cwd=project)
    assert second.returncode == 0, second.stderr
    results = read_results(project / "nav-workspace")
    # The reference job always runs: it fingerprints the model, and every other key builds on that.
    assert jobs_but_the_comparison(results) == {"run": 1, "reused": jobs - 1}
    fingerprint = results["model_fingerprint"]
    assert fingerprint and len(fingerprint) == 64

    (project / "helper.py").write_text(HELPER.replace("WIDTH = 16", "WIDTH = 24"))
    third = nav_orch(*args, cwd=project)
    assert third.returncode == 0, third.stderr
    results = read_results(project / "nav-workspace")
    assert jobs_but_the_comparison(results) == {"run": jobs, "reused": 0}
    assert results["model_fingerprint"] != fingerprint
    assert {v["status"] for v in results["variants"]} == {"ok"}


def jobs_but_the_comparison(results: dict) -> dict[str, int]:
    """The run's job counts less its compare job, which runs (or is reused) only where the single pass
    found the two variants within the margin: a matter of the host's timing, not of the cache."""
    counts = dict(results["jobs"])
    if any(entry["job"] == "compare" for entry in results["timeline"]):
        counts["run"] -= 1
    elif (results.get("selection") or {}).get("compared"):
        counts["reused"] -= 1
    return counts


def start_slow_run(workspace: Path) -> subprocess.Popen:
    """An optimize run whose trace export sleeps 60 s; returns once the ONNX variant is verified."""
    args = ["optimize", f"{FAULTS}:make_slow_on_trace", "--input", "x:2,4:float32", "--workspace", str(workspace),
            "--formats", "torchscript-trace,onnx", "--model-arg", "seconds=60", "--jobs", "2", *QUICK]
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    verify = workspace / "jobs" / "verify-onnx-fp32" / "result.json"
    while time.monotonic() < deadline:
        if verify.exists() and json.loads(verify.read_text())["status"] == "ok":
            return process
        time.sleep(0.2)
    process.kill()
    pytest.fail("the ONNX variant was never verified")


@pytest.mark.parametrize("signals, code", [
    ([signal.SIGTERM], 143),
    ([signal.SIGHUP], 129),
    ([signal.SIGTERM, signal.SIGTERM, signal.SIGINT], 143),  # repeated signals must not cut the clean-up short
])
def test_a_stop_signal_removes_the_containers_and_marks_the_run_interrupted(tmp_path, signals, code):
    workspace = tmp_path / "ws"
    process = start_slow_run(workspace)
    assert leftover_containers(), "the trace export should be sleeping in its container"
    stopped_at = time.monotonic()
    for signum in signals:
        process.send_signal(signum)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert time.monotonic() - stopped_at < 10
    assert f"interrupted ({signal.Signals(signals[0]).name})" in stderr and "Traceback" not in stderr
    assert leftover_containers() == []
    results = read_results(workspace)
    assert results["state"] == "interrupted"
    assert {v["name"]: v["status"] for v in results["variants"]}["onnx-fp32"] == "pending"  # verified, kept


def test_profile_stops_on_sigterm_too(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text("import time\n\n\ndef predict(x):\n    time.sleep(60)\n    return x\n")
    workspace = tmp_path / "ws"
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "profile", f"{slow}:predict", "--input",
                                "x:2,4:float32", "--images", "cpu", "--gpus", "none", "--workspace", str(workspace),
                                "--progress", "plain"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not leftover_containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftover_containers(), "the profile never started a container"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert leftover_containers() == []
    assert read_results(workspace)["state"] == "interrupted"


# --- models in private folders --------------------------------------------------------------------

def owners(folder: Path) -> set[int]:
    return {os.lstat(os.path.join(top, name)).st_uid for top, dirs, files in os.walk(folder) for name in dirs + files}


@pytest.mark.skipif(os.getuid() != 0, reason="the case of a run as root (CI runners, containers)")
def test_root_runs_a_model_from_a_private_folder(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    shutil.copy(EXAMPLES / "mlp.py", home / "mlp.py")
    (home / "mlp.py").chmod(0o600)
    np.savez(home / "samples.npz", input=np.ones((2, 64), dtype="float32"))
    (home / "samples.npz").chmod(0o600)
    workspace = home / "ws"
    run = nav_orch("optimize", f"{home}/mlp.py:make_mlp", "--samples", str(home / "samples.npz"),
                   "--workspace", str(workspace), "--formats", "torchscript-trace,onnx", *QUICK)
    assert run.returncode == 0, run.stderr
    assert read_results(workspace)["best"]
    assert owners(workspace) == {0}
    assert (home.stat().st_mode & 0o777, (home / "mlp.py").stat().st_mode & 0o777) == (0o700, 0o600)


USER = "navorch-test"


def source_tree(into: Path) -> Path:
    """The checkout's files that git knows or would add (links kept as links): what a release is
    built from, without the build/ that earlier wheel builds left, whose files setuptools would ship too."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if os.path.lexists(ROOT / name):  # not deleted since the last commit
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name, follow_symlinks=False)
    return into


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory) -> Path:
    """nav-orch as users install it: a wheel built from the checkout's files, in a fresh venv of
    Debian's Python outside the checkout (readable by every user); returns its `nav-orch`."""
    wheels = tmp_path_factory.mktemp("wheel")
    source = source_tree(tmp_path_factory.mktemp("source"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    venv = Path("/tmp") / f"nav-orch-wheel-venv-{os.getpid()}"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=300)
    (wheel,) = wheels.glob("nav_orch-*.whl")
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True,
                               text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-2000:]
    yield venv / "bin" / "nav-orch"
    shutil.rmtree(venv, ignore_errors=True)


@pytest.fixture
def normal_user() -> tuple[int, Path]:
    """A user with a 0700 home folder who may use Docker (the docker group), as on a workstation."""
    if os.getuid() != 0:
        pytest.skip("creating a user needs root")
    subprocess.run(["userdel", "--remove", USER], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--groups", "docker", "--shell", "/bin/sh", USER], check=True)
    home = Path(f"/home/{USER}")
    home.chmod(0o700)
    yield int(subprocess.run(["id", "-u", USER], capture_output=True, text=True, check=True).stdout), home
    subprocess.run(["userdel", "--remove", USER], capture_output=True)


def test_a_normal_user_runs_the_installed_wheel_on_a_model_in_a_private_home(installed_wheel, normal_user):
    uid, home = normal_user
    project = home / "proj"
    project.mkdir(mode=0o700)
    shutil.copy(EXAMPLES / "mlp.py", project / "mlp.py")
    (project / "mlp.py").chmod(0o600)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(project)], check=True)
    run = subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "env", f"HOME={home}",
                          str(installed_wheel), "optimize", "mlp.py:make_mlp", "--input", "input:2,64:float32",
                          "--formats", "torchscript-trace,onnx", *QUICK],
                         cwd=project, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    workspace = project / "nav-workspace"
    assert read_results(workspace)["best"]
    assert owners(workspace) == {uid}


def test_the_installed_wheel_checks_and_builds_the_images_from_any_folder(installed_wheel, tmp_path):
    """`doctor` and `images build` read the image matrix and the build contexts that the wheel
    ships, and a build writes nothing into the installed package or the working folder."""
    package = Path(subprocess.run([str(installed_wheel.parent / "python"), "-c",
                                   "import orchestrator.resources as r; print(r.__path__[0])"],
                                  cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip())
    assert package.is_relative_to(installed_wheel.parent.parent) and (package / "images").is_dir()
    before = sorted((str(p), p.stat().st_mtime_ns) for p in package.rglob("*"))

    doctor = subprocess.run([str(installed_wheel), "doctor"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert doctor.returncode in (0, 3), doctor.stderr  # 3: a problem, such as no GPU where CUDA images exist
    assert f"ok    image matrix: {package / 'docker-bake.hcl'}" in doctor.stdout
    for image in ("pytorch", "triton", "tensorflow", "jax"):
        assert f"ok    image nav-orch/{image}:cpu: built" in doctor.stdout

    started = time.monotonic()
    build = subprocess.run([str(installed_wheel), "images", "build", "--flavor", "cpu"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    assert build.stdout.split() == ["nav-orch/pytorch:cpu", "nav-orch/triton:cpu", "nav-orch/tensorflow:cpu",
                                    "nav-orch/jax:cpu"]
    if not engine.buildx_available():  # BuildKit has its own cache, and no skipping
        assert build.stderr.count("is up to date") == 4, build.stderr
        assert time.monotonic() - started < 120
    assert sorted((str(p), p.stat().st_mtime_ns) for p in package.rglob("*")) == before
    assert list(tmp_path.iterdir()) == []
