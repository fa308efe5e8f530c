"""What nav-orch ships as package data (the image matrix, the build contexts, the runner code)
is found through importlib.resources in this install, and image builds work on a temporary
copy: against a fake Docker client, nothing is written next to the bake file (no Docker)."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from test_image_builds import FakeDocker

from orchestrator.containers import image_builds, images
from orchestrator.containers.bake import load_bake_file
from orchestrator.containers.doctor import check_bake_file, diagnose
from orchestrator.errors import EnvironmentProblem
from orchestrator.resources import shipped
from runners import RUNNERS_DIR

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_files_resolve_in_this_install():
    assert images.BAKE_FILE == shipped("docker-bake.hcl")
    assert shipped("docker-bake.hcl").read_bytes() == (ROOT / "docker-bake.hcl").read_bytes()
    bake = load_bake_file(images.BAKE_FILE)
    for target in bake.targets.values():  # every context is there, with what the checkout has
        dockerfile = Path(target.context) / target.dockerfile
        assert (shipped("images").parent / dockerfile).read_bytes() == (ROOT / dockerfile).read_bytes()
    # The runner code is bind-mounted into containers: a real folder, wherever nav-orch lies.
    assert Path(str(resources.files("runners"))) == RUNNERS_DIR
    assert (RUNNERS_DIR / "harness" / "main.py").is_file()


def test_doctor_names_the_image_matrix_or_a_broken_installation(tmp_path):
    finding, bake = check_bake_file(images.BAKE_FILE)
    assert finding.level == "ok" and finding.detail.startswith(f"{images.BAKE_FILE} (") and bake is not None
    finding, bake = check_bake_file(tmp_path / "docker-bake.hcl")
    assert (finding.level, finding.fix, bake) == ("fail", "reinstall nav-orch", None)
    assert finding.detail.startswith(f"cannot read {tmp_path / 'docker-bake.hcl'}")

    def no_daemon():
        raise EnvironmentProblem("cannot reach the Docker daemon")

    # Without the matrix the other checks still run.
    assert [f.check for f in diagnose(None, no_daemon, lambda: [], image_builds.DEBIAN_BASE)] == ["docker", "gpus"]


def test_user_cache():
    home = Path("/home/u")
    assert image_builds.user_cache({}, home) == home / ".cache" / "nav-orch"
    assert image_builds.user_cache({"XDG_CACHE_HOME": "/var/cache/u"}, home) == Path("/var/cache/u/nav-orch")
    assert image_builds.user_cache({"XDG_CACHE_HOME": "relative"}, home) == home / ".cache" / "nav-orch"


def files_below(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry below `folder` (hidden ones too, links not followed): mode, size, mtime."""
    found = {}
    for top, dirs, names in os.walk(folder):
        for name in dirs + names:
            info = os.lstat(os.path.join(top, name))
            found[os.path.relpath(os.path.join(top, name), folder)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return found


class RecordingDocker(FakeDocker):
    """A fake client that lists each build context as the build sees it."""

    def __init__(self, store: dict[str, dict]):
        super().__init__(store)
        self.contexts: dict[str, tuple[Path, list[str]]] = {}  # tag -> (context, its files)

    def build(self, **options):
        context = Path(options["path"])
        self.contexts[options["tag"]] = (context,
                                         sorted(str(p.relative_to(context)) for p in image_builds._tree(context)))
        return super().build(**options)


def test_a_build_writes_nothing_next_to_the_bake_file(tmp_path):
    shipped_root = shipped("docker-bake.hcl").parent
    before = files_below(shipped_root / "images")
    version = load_bake_file(images.BAKE_FILE).resolve_variables()["TORCH_CPU_VERSION"]
    cache = tmp_path / "cache"
    wheel = cache / "wheels" / f"torch-{version}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"a wheel")  # already fetched: no pip
    pip_conf, ca = tmp_path / "pip.conf", tmp_path / "ca.crt"
    pip_conf.write_text("[global]\ntimeout = 5\n")
    ca.write_text("ca")
    fake = RecordingDocker({"sha256:debian": {"tags": [image_builds.DEBIAN_BASE], "labels": {}}})
    lines: list[str] = []

    tags = image_builds.build_images(fake, images.BAKE_FILE, "cpu", {}, pip_conf, ca, lines.append, cache=cache,
                                     buildx=False)

    assert tags == ["nav-orch/pytorch:cpu", "nav-orch/triton:cpu", "nav-orch/tensorflow:cpu", "nav-orch/jax:cpu"]
    assert files_below(shipped_root / "images") == before
    context, files = fake.contexts["nav-orch/pytorch:cpu"]
    assert context.parent.parent.parent == cache and context.name == "pytorch-cpu"
    assert files == [".build-extras/ca.crt", ".build-extras/pip.conf", f".build-extras/wheels/{wheel.name}",
                     "Dockerfile"]
    assert sorted(p.name for p in cache.iterdir()) == ["wheels"]  # the temporary copy is gone
    assert wheel.read_bytes() == b"a wheel"

    lines.clear()  # the same inputs again: every image is up to date, whatever folder the copy was in
    image_builds.build_images(fake, images.BAKE_FILE, "cpu", {}, pip_conf, ca, lines.append, cache=cache, buildx=False)
    assert len(fake.builds) == 4 and [line for line in lines if line.endswith("is up to date")] == [
        f"{name} (nav-orch/{image}:cpu) is up to date"
        for name, image in [("pytorch-cpu", "pytorch"), ("triton-cpu", "triton"), ("tensorflow-cpu", "tensorflow"),
                            ("jax-cpu", "jax")]]


def test_the_digest_of_a_staged_context_is_that_of_the_context_in_place(tmp_path):
    """Images built from contexts in the checkout (with .build-extras/ inside, as before) stay up
    to date when built from a copy: the digest follows content and git's modes, not paths."""
    source = tmp_path / "source"
    context = source / "images" / "tiny"
    (context / ".build-extras" / "wheels").mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM base\nCOPY . /x\n")
    (context / "run.sh").write_text("#!/bin/sh\n")
    (context / "lib" / "data.txt").parent.mkdir()
    (context / "lib" / "data.txt").write_text("data")
    wheel_name = "torch-1.0+cpu-cp311-cp311-linux_x86_64.whl"
    (context / ".build-extras" / "wheels" / wheel_name).write_bytes(b"wheel")
    (context / ".build-extras" / "pip.conf").write_text("[global]\n")
    for path in image_builds._tree(context):  # as git checks files out
        path.chmod(0o755 if path.name == "run.sh" else 0o644)
    bake_file = source / "docker-bake.hcl"
    bake_file.write_text('target "tiny" {\n  context = "images/tiny"\n  args = {\n    TORCH_CPU_VERSION = "1.0"\n'
                         '  }\n  tags = ["t/tiny:1"]\n}\n')
    bake = load_bake_file(bake_file)
    target = bake.resolve_target("tiny", bake.resolve_variables({}, environ={}))

    def digest(folder: Path) -> str:
        return image_builds.build_inputs_digest(folder, "Dockerfile", target.args, target.labels, {"base": "sha256:b"})

    in_place = digest(context)
    # Installed with another umask: the modes differ from git's, the copy has git's again.
    (context / "lib" / "data.txt").chmod(0o600)
    cache = tmp_path / "cache"
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / wheel_name).write_bytes(b"wheel")
    staged = image_builds.stage_build(bake, [target], tmp_path / "staged")
    assert staged == tmp_path / "staged" / "docker-bake.hcl" and staged.read_text() == bake_file.read_text()
    extras = image_builds.prepare_extras(staged.parent / target.context, target, "[global]\nother = 1\n", None,
                                         cache / "wheels", lambda line: None)
    assert extras == tmp_path / "staged" / "images" / "tiny" / ".build-extras"
    assert digest(staged.parent / target.context) == in_place
