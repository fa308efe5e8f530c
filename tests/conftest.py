"""Shared fixtures. End-to-end tests (marked `docker`) need a Docker daemon; they build
the CPU images once per session (cached by Docker after the first time)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RUN_LABEL = "org.nav-orch.run"


def nav_orch(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def leftover_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={RUN_LABEL}"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


@pytest.fixture(scope="session")
def cpu_images() -> None:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("no Docker daemon answers: start dockerd (see README) or deselect with -m 'not docker'")
    built = nav_orch("images", "build", "--flavor", "cpu", timeout=3600)
    assert built.returncode == 0, built.stderr[-3000:]


@pytest.fixture
def no_leftovers():
    assert leftover_containers() == [], "containers of an earlier run exist before the test"
    yield
    assert leftover_containers() == [], "the run left containers behind"


def read_results(workspace: Path) -> dict:
    return json.loads((workspace / "results.json").read_text())
