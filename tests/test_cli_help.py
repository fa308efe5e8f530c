"""The help that teaches: -h, --version, optimize's option panels and examples, readable metavars,
and help texts whose brackets survive rich's markup."""
from __future__ import annotations

import pytest
from conftest import nav_orch

from orchestrator import __version__
from orchestrator.cli_text import IMAGES_PANEL, MODEL_PANEL, OUTPUT_PANEL, RUNNERS_PANEL, SEARCH_PANEL, TRITON_PANEL
from orchestrator.containers import images
from runners.contract.protocol import PROTOCOL_VERSION


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns outside a terminal


@pytest.mark.parametrize("command", [[], ["optimize"], ["images", "build"], ["clean"]])
def test_h_is_help(command):
    short, long = nav_orch(*command, "-h"), nav_orch(*command, "--help")
    assert short.returncode == 0 and "Usage: " in short.stdout
    assert short.stdout == long.stdout


def test_version_names_nav_orch_the_image_release_and_the_protocol():
    run = nav_orch("--version")
    assert run.returncode == 0 and run.stderr == ""
    assert f"nav-orch {__version__}" in run.stdout
    assert f"NGC release {images.bake_release()}" in run.stdout
    assert f"runner protocol: {PROTOCOL_VERSION}" in run.stdout


def test_optimize_help_groups_its_options_and_shows_examples():
    text = nav_orch("optimize", "--help").stdout
    panels = [MODEL_PANEL, SEARCH_PANEL, IMAGES_PANEL, RUNNERS_PANEL, TRITON_PANEL, OUTPUT_PANEL]
    positions = [text.find(f"─ {panel} ─") for panel in panels]
    assert -1 not in positions and positions == sorted(positions), positions
    assert text.count("nav-orch optimize ") >= 2  # the examples
    assert "<list[" not in text and "<str>" not in text.split("─ Options ─")[1]
    assert "FILE.npz" in text and "NAME:SHAPE:DTYPE" in text and "N,N" in text


def test_zoo_help_keeps_its_brackets():
    text = nav_orch("zoo", "--help").stdout
    assert "[[model]]" in text and "[defaults]" in text


def test_accuracy_help_keeps_its_brackets():
    assert "[OUTPUT=]cosine:0.99" in nav_orch("optimize", "--help").stdout
