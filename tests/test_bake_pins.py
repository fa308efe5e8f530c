"""The CUDA PyTorch image's pins against NGC's pip constraints (issue 34, item 1): NGC's PyTorch base
pins every package it ships (/etc/pip/constraint.txt through PIP_CONSTRAINT), so a pin that differs
from one of those fails the build. images/pytorch/pins.py decides each pin before pip runs; these
tests read the Dockerfile and docker-bake.hcl and check the rule holds for the pins as written."""
from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.containers.bake import BakeTarget, load_bake_file

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "images" / "pytorch" / "Dockerfile"
SCRIPT = ROOT / "images" / "pytorch" / "pins.py"
# Packages NGC's PyTorch base may ship: a different pin of any of them would fail the build.
MAY_BE_IN_THE_BASE = {"onnxscript", "ml-dtypes", "polygraphy", "onnx-graphsurgeon", "onnxslim"}
# The pins whose versions the image's labels state (runners report them; the host reads them).
LABELLED = {"onnxruntime-gpu": "org.nav-orch.onnxruntime", "torchao": "org.nav-orch.torchao",
            "nvidia-modelopt": "org.nav-orch.modelopt"}


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pytorch_image_pins", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through it
    spec.loader.exec_module(module)
    return module


pins = load_script()


@pytest.fixture(scope="module")
def target() -> BakeTarget:
    (cuda,) = load_bake_file(ROOT / "docker-bake.hcl").select("pytorch-cuda", environ={})
    return cuda


def run_steps() -> list[list[str]]:
    """Each RUN step of the Dockerfile's build stage as shell words (continuation lines joined)."""
    text = DOCKERFILE.read_text().split("\nFROM ${BASE_IMAGE}\n")[0]
    steps = re.findall(r"^RUN (.*?)(?<!\\)$", text.replace("\\\n", " "), flags=re.MULTILINE)
    return [shlex.split(step.replace(";", " ; ")) for step in steps]


def written_pins(target: BakeTarget) -> dict[str, list[str]]:
    """The pins.py call's --exact and --base-first pins, their ${ARG}s resolved from the bake target."""
    (words,) = [words for words in run_steps() if "/tmp/pins.py" in words]
    call = words[words.index("/tmp/pins.py"):words.index(";", words.index("/tmp/pins.py"))]
    found: dict[str, list[str]] = {}
    option = ""
    for word in call[1:]:
        if word.startswith("--"):
            option = word
            found[option] = []
        else:
            found[option].append(re.sub(r"\$\{(\w+)\}", lambda m: target.args[m.group(1)], word))
    return found


def as_pins(target: BakeTarget) -> list:
    written = written_pins(target)
    return ([pins.parse_pin(text, True) for text in written["--exact"]]
            + [pins.parse_pin(text, False) for text in written["--base-first"]])


def test_pip_installs_only_what_pins_py_decided(target):
    """No version reaches pip but through pins.py's requirements: a pin given to pip directly would
    meet the base's constraints unchecked."""
    installs = [words for words in run_steps() if "pip" in words and "install" in words]
    (install,) = installs
    command = install[install.index("pip") - 2:]
    assert "-r" in command and command[command.index("-r") + 1] == "/tmp/requirements.txt"
    assert not [word for word in command if "==" in word]
    assert set(written_pins(target)) == {"--requirements", "--record", "--exact", "--base-first"}


def test_the_packages_the_base_may_ship_keep_its_version_and_only_labelled_ones_are_exact(target):
    written = as_pins(target)
    assert all(re.fullmatch(r"\d+(\.\d+)+", pin.version) for pin in written), written  # every ARG resolved
    base_first = {pins.canonical(pin.name) for pin in written if not pin.exact}
    exact = {pins.canonical(pin.name): pin.version for pin in written if pin.exact}
    assert MAY_BE_IN_THE_BASE <= base_first
    assert set(exact) == set(LABELLED)
    for name, label in LABELLED.items():  # an exact pin is the version its label states
        assert target.labels[label] == exact[name], name
    # The labels name what keeps the base's version, and where the image lists the versions it got.
    assert {pins.canonical(name) for name in target.labels["org.nav-orch.kept-from-base"].split()} == base_first
    assert target.labels["org.nav-orch.pins"] == written_pins(target)["--record"][0]
    assert not any(f"{name} {version}" in target.labels["org.opencontainers.image.description"]
                   for name, version in ((p.name, p.version) for p in written if not p.exact))


def test_a_base_that_ships_every_base_first_package_at_other_versions_still_builds(target):
    written = as_pins(target)
    other = {pins.canonical(pin.name): "99.0.0" for pin in written if not pin.exact}
    decisions = pins.decide(written, installed=other, constrained=other)
    assert pins.requirements(decisions) == "".join(f"{pin.name}=={pin.version}\n" for pin in written if pin.exact)
    assert {d.pin.name: (d.version, d.source) for d in decisions if not d.pin.exact} == {
        pin.name: ("99.0.0", "base") for pin in written if not pin.exact}


def test_a_base_without_them_gets_every_pin_as_written_and_a_constrained_one_the_bases_version(target):
    written = as_pins(target)
    assert pins.requirements(pins.decide(written, {}, {})) == "".join(f"{p.name}=={p.version}\n" for p in written)
    # Pinned by the base's constraints but not installed: pip may install only that version.
    decisions = pins.decide(written, {}, {"ml-dtypes": "0.4.1"})
    assert "ml_dtypes==0.4.1\n" in pins.requirements(decisions)
    assert "ml_dtypes==0.4.1  # the base image's pip constraint\n" in pins.record(decisions)


@pytest.mark.parametrize("installed, constrained, shown", [
    ({"torchao": "0.13.0"}, {}, "torchao must be 0.14.1, but the base image has 0.13.0 (installed)"),
    ({}, {"nvidia-modelopt": "0.37.0"},
     "nvidia-modelopt must be 0.42.0, but the base image has 0.37.0 (pinned by its pip constraints)"),
])
def test_an_exact_pin_the_base_holds_at_another_version_is_one_line_naming_both(target, installed, constrained, shown):
    with pytest.raises(pins.PinConflict) as conflict:
        pins.decide(as_pins(target), installed, constrained)
    assert str(conflict.value) == shown


def test_an_exact_pin_the_base_already_has_is_not_installed_again(target):
    decisions = pins.decide(as_pins(target), {"torchao": "0.14.1.0"}, {"torchao": "0.14.1"})
    assert "torchao" not in pins.requirements(decisions)


def test_constraint_files_are_read_as_pip_reads_them():
    text = "# NGC\nTorch==2.9.0a0+145a3a7bda.nv25.10\nml_dtypes == 0.5.1 ; python_version >= '3.9'\n" \
           "onnx>=1.17\n-c other.txt\nfoo @ file:///opt/foo.whl\nPolygraphy===0.49.20\n"
    assert pins.parse_constraints(text) == {"torch": "2.9.0a0+145a3a7bda.nv25.10", "ml-dtypes": "0.5.1",
                                            "polygraphy": "0.49.20"}
    assert pins.constraint_files({"PIP_CONSTRAINT": "/etc/pip/constraint.txt /tmp/more.txt"}) == [
        "/etc/pip/constraint.txt", "/tmp/more.txt"]
    assert pins.constraint_files({}) == ["/etc/pip/constraint.txt"]  # NGC's, where pip.conf names it
    with pytest.raises(ValueError, match="not a NAME==VERSION pin"):
        pins.parse_pin("onnxslim>=0.1", False)


def test_the_script_stops_the_build_with_that_one_line(tmp_path):
    """As the Dockerfile runs it, on a Python whose packages are the base: this one's numpy."""
    import numpy

    if Path(pins.NGC_CONSTRAINTS).exists():
        pytest.skip(f"this host has {pins.NGC_CONSTRAINTS} (an NGC container): its pins are not this test's")

    constraints = tmp_path / "constraint.txt"
    constraints.write_text("nav-orch-test-constrained==0.1.80\n")
    args = [sys.executable, str(SCRIPT), "--requirements", str(tmp_path / "req.txt"),
            "--record", str(tmp_path / "opt" / "pins.txt")]
    env = {"PIP_CONSTRAINT": str(constraints), "PATH": "/usr/bin:/bin"}
    failed = subprocess.run([*args, "--exact", "numpy==0.0.1"], capture_output=True, text=True, env=env)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1
    assert f"numpy must be 0.0.1, but the base image has {numpy.__version__} (installed)" in failed.stderr
    built = subprocess.run([*args, "--exact", f"numpy=={numpy.__version__}", "--base-first",
                            "nav-orch-test-constrained==0.1.87", "nav-orch-test-absent==1.0"],
                           capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "req.txt").read_text() == "nav-orch-test-constrained==0.1.80\nnav-orch-test-absent==1.0\n"
    assert (tmp_path / "opt" / "pins.txt").read_text() == (
        f"numpy=={numpy.__version__}  # the base image's\n"
        "nav-orch-test-constrained==0.1.80  # the base image's pip constraint\n"
        "nav-orch-test-absent==1.0  # nav-orch's pin\n")
