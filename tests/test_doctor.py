"""`nav-orch doctor` against fake Docker clients and GPU inventories (no daemon, no GPU needed)."""
from __future__ import annotations

from types import SimpleNamespace

import docker
import pytest

from orchestrator.containers.bake import load_bake_file
from orchestrator.containers.doctor import diagnose
from orchestrator.containers.gpus import HostGpu
from orchestrator.containers.image_builds import DEBIAN_BASE
from orchestrator.containers.images import BAKE_FILE
from orchestrator.errors import EnvironmentProblem

BAKE = load_bake_file(BAKE_FILE)


class FakeClient:
    def __init__(self, built: set[str], runtimes: tuple[str, ...] = ("runc",)):
        self.built = built
        self.runtimes = runtimes
        self.images = SimpleNamespace(get=self.get_image)

    def get_image(self, tag):
        if tag not in self.built:
            raise docker.errors.ImageNotFound(tag)
        return SimpleNamespace(id="sha256:" + "ab" * 32, labels={})

    def version(self):
        return {"Version": "20.10.24"}

    def info(self):
        return {"Runtimes": {name: {} for name in self.runtimes}}


def tags(flavor: str) -> set[str]:
    return {tag for target in BAKE.select(flavor) for tag in target.tags}


def by_check(findings):
    return {finding.check: finding for finding in findings}


def no_daemon():
    raise EnvironmentProblem("cannot reach the Docker daemon (connection refused): start it")


def test_a_ready_cpu_host_has_no_failures():
    client = FakeClient(tags("cpu") | {DEBIAN_BASE})
    findings = diagnose(BAKE, lambda: client, lambda: [], DEBIAN_BASE)
    assert [f for f in findings if f.level == "fail"] == []
    assert by_check(findings)["gpus"].level == "info"
    assert all(by_check(findings)[f"image {tag}"].level == "info" for tag in tags("cuda"))


def test_missing_images_say_how_to_build_them():
    findings = by_check(diagnose(BAKE, lambda: FakeClient(set()), lambda: [], DEBIAN_BASE))
    missing = findings["image nav-orch/pytorch:cpu"]
    assert missing.level == "fail" and missing.fix == "nav-orch images build --flavor cpu"
    assert findings[f"image {DEBIAN_BASE}"].fix == "nav-orch images bootstrap"


def test_no_daemon_is_a_failure_with_what_to_do():
    findings = diagnose(BAKE, no_daemon, lambda: [], DEBIAN_BASE)
    docker_finding = by_check(findings)["docker"]
    assert docker_finding.level == "fail" and "dockerd" in docker_finding.fix
    assert not any(f.check.startswith("image") for f in findings)


@pytest.mark.parametrize("driver, runtimes, failing", [
    ("580.159.04", ("runc", "nvidia"), set()),
    ("535.104.05", ("runc", "nvidia"), {"driver on GPU 0"}),
    ("580.159.04", ("runc",), {"nvidia runtime"}),
])
def test_gpu_hosts_need_the_runtime_and_a_new_enough_driver(driver, runtimes, failing, monkeypatch):
    monkeypatch.setattr("orchestrator.containers.doctor.shutil.which", lambda name: None)
    client = FakeClient(tags("cuda") | tags("cpu") | {DEBIAN_BASE}, runtimes)
    gpus = [HostGpu("0", "NVIDIA H100 80GB HBM3", "GPU-1234", driver)]
    findings = diagnose(BAKE, lambda: client, lambda: gpus, DEBIAN_BASE)
    assert {f.check for f in findings if f.level == "fail"} == failing
    if "driver on GPU 0" in failing:
        assert "R580" in by_check(findings)["driver on GPU 0"].detail
