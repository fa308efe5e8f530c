"""docker-bake.hcl read by orchestrator.bake, and the image names runs use (no Docker)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import __version__
from orchestrator.containers import image_builds, images
from orchestrator.containers.bake import BakeError, load_bake_file
from orchestrator.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
OCI_LABELS = ("title", "description", "version", "source", "licenses", "base.name")
# Packages whose versions the runners report (runners/*_runner.py `versions()`) and the images label.
RUNNER_PACKAGES = ("torch", "onnxruntime", "tensorflow", "jax", "cuda", "tensorrt")


@pytest.fixture
def bake():
    return load_bake_file(ROOT / "docker-bake.hcl")


@pytest.fixture
def no_env(monkeypatch, bake):
    """Variables of the bake file must not leak in from the test process's environment."""
    for name in bake.variables:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "docker-bake.hcl"
    path.write_text(text)
    return path


def test_real_bake_file_parses(bake):
    assert images.BAKE_FILE == ROOT / "docker-bake.hcl"
    # The code and the bake file agree on what they both name.
    assert bake.variables["DEBIAN_BASE"] == image_builds.DEBIAN_BASE
    assert bake.variables["NAV_ORCH_VERSION"] == __version__
    assert set(bake.groups) >= {"default", "cpu", "cuda"}
    for target in bake.targets.values():
        assert (bake.root / target.context / target.dockerfile).is_file()
        for key in target.labels:  # python-hcl2 v8 quotes keys: they must come back bare
            assert not key.startswith('"')


def test_groups_resolve(bake, no_env):
    cpu = bake.target_names("cpu")
    assert cpu[:2] == ["pytorch-cpu", "triton-cpu"]
    assert bake.target_names("cuda")[:3] == ["pytorch-cuda", "triton", "triton-sdk"]
    assert bake.target_names("default") == cpu
    assert bake.target_names(None) == cpu
    assert bake.target_names(["pytorch-cuda", "cpu", "pytorch-cuda"]) == ["pytorch-cuda", *cpu]
    with pytest.raises(BakeError, match="no group or target 'gpu'"):
        bake.target_names("gpu")


def test_every_target_is_in_the_group_of_its_flavor(bake, no_env):
    release = bake.resolve_variables(environ={})["NGC_RELEASE"]
    cpu, cuda = bake.select("cpu", environ={}), bake.select("cuda", environ={})
    assert {t.name for t in cpu} | {t.name for t in cuda} == set(bake.targets)
    assert not {t.name for t in cpu} & {t.name for t in cuda}
    for flavor, targets, tag_suffix in (("cpu", cpu, ":cpu"), ("cuda", cuda, f":{release}")):
        for target in targets:
            assert target.labels["org.nav-orch.flavor"] == flavor, target.name
            assert all(tag.endswith(tag_suffix) for tag in target.tags), target.name


@pytest.mark.parametrize("flavor", ["cpu", "cuda"])
def test_each_flavors_group_builds_every_image_a_run_uses(bake, no_env, flavor):
    release = images.CPU_RELEASE if flavor == "cpu" else bake.resolve_variables(environ={})["NGC_RELEASE"]
    built = {tag for target in bake.select(flavor, environ={}) for tag in target.tags}
    for framework in images.FRAMEWORK_IMAGES:
        assert images.image_for(framework, release) in built, framework


def test_every_target_labels_what_runs_and_serving_read(bake, no_env):
    """The OCI labels, the flavor and release, and a label for each package the runners report
    (the TensorRT guard falls back on `org.nav-orch.tensorrt` where no runner reported one)."""
    for target in bake.select(["cpu", "cuda"], environ={}):
        assert all(f"org.opencontainers.image.{name}" in target.labels for name in OCI_LABELS), target.name
        assert {"org.nav-orch.flavor", "org.nav-orch.ngc-release", "org.nav-orch.cuda",
                "org.nav-orch.tensorrt"} <= set(target.labels), target.name
        assert target.labels["org.opencontainers.image.version"] == __version__
        assert not any("${" in value for value in [*target.args.values(), *target.labels.values(), *target.tags])
    by_tag = {tag: target for target in bake.select(["cpu", "cuda"], {"NGC_RELEASE": "26.01"}, environ={})
              for tag in target.tags}
    for framework in images.FRAMEWORK_IMAGES:  # the package a framework's runners report as its version
        package = "onnxruntime" if framework == "onnx" else framework
        for release in (images.CPU_RELEASE, "26.01"):
            target = by_tag[images.image_for(framework, release)]
            assert f"org.nav-orch.{package}" in target.labels, (framework, target.name)


def test_cpu_images_label_the_versions_their_builds_install(bake, no_env):
    """On a CPU image, a label of a package the runners report moves with the build arg that
    installs it (in the image or one it is built FROM): it never claims a version no build sets."""
    sentinel = "0.0.0-test"
    default = {t.name: t for t in bake.select("cpu", environ={})}
    overridden = {name: {t.name: t for t in bake.select("cpu", {name: sentinel}, environ={})}
                  for name in bake.variables}
    labelled = set()
    for name, target in default.items():
        chain = bake.build_order([name])
        for package in RUNNER_PACKAGES:
            label = f"org.nav-orch.{package}"
            if target.labels.get(label, "none") == "none":
                continue
            installs = [variable for variable, targets in overridden.items()
                        if targets[name].labels[label] == sentinel
                        and any(sentinel in targets[link].args.values() for link in chain)]
            assert installs, f"{name}: {label} follows no build arg"
            labelled.add(package)
    assert labelled == {"torch", "onnxruntime", "tensorflow", "jax"}


def test_a_target_built_from_another_builds_after_it(bake, no_env):
    """A target whose base image is another target's image names it in `contexts`, so buildx bake
    and the Docker API path build that one first (also when the target is asked for alone)."""
    targets = bake.select(list(bake.targets), environ={})
    tagged = {tag: target.name for target in targets for tag in target.tags}
    built_from = {t.name: tagged[t.args["BASE_IMAGE"]] for t in targets if t.args.get("BASE_IMAGE") in tagged}
    assert built_from  # the CPU images stack on one another
    for name, base in built_from.items():
        assert bake.targets[name].depends_on() == [base]
        order = bake.build_order([name])
        assert order.index(base) < order.index(name)
    assert bake.build_order(["jax-cpu"]) == ["tensorflow-cpu", "jax-cpu"]


def test_build_args_are_those_the_dockerfile_declares(bake, no_env):
    """An arg the Dockerfile does not declare would be ignored: its pinned version never installed."""
    for target in bake.select(list(bake.targets), environ={}):
        text = (bake.root / target.context / target.dockerfile).read_text()
        declared = {line.split()[1].split("=")[0] for line in text.splitlines() if line.startswith("ARG ")}
        assert set(target.args) <= declared, target.name
        first_from = next(line for line in text.splitlines() if line.startswith("FROM "))
        assert first_from.split()[1] == "${BASE_IMAGE}", target.name


def test_cpu_target_resolves(bake, no_env):
    (cpu,) = bake.select("pytorch-cpu")
    assert cpu.context == "images/pytorch-cpu"
    assert cpu.tags == [images.image_for("torch", "cpu")] == ["nav-orch/pytorch:cpu"]
    assert cpu.args["BASE_IMAGE"] == image_builds.DEBIAN_BASE
    assert cpu.labels["org.opencontainers.image.base.name"] == image_builds.DEBIAN_BASE
    assert cpu.labels["org.nav-orch.torch"] == cpu.args["TORCH_CPU_VERSION"]
    assert cpu.labels["org.nav-orch.onnxruntime"] == cpu.args["ONNXRUNTIME_VERSION"]
    assert cpu.labels["org.nav-orch.cuda"] == cpu.labels["org.nav-orch.tensorrt"] == "none"


def test_cuda_target_follows_the_ngc_release_and_registry(bake, no_env):
    (cuda,) = bake.select("pytorch-cuda", {"NGC_RELEASE": "26.01", "REGISTRY": "mirror.local/nvidia/"})
    assert cuda.context == "images/pytorch"
    assert cuda.args["BASE_IMAGE"] == "mirror.local/nvidia/pytorch:26.01-py3"
    assert cuda.labels["org.opencontainers.image.base.name"] == cuda.args["BASE_IMAGE"]
    assert cuda.tags == [images.image_for("torch", "26.01")]
    assert cuda.labels["org.nav-orch.ngc-release"] == "26.01"
    assert cuda.labels["org.nav-orch.onnxruntime"] == cuda.args["ONNXRUNTIME_GPU_VERSION"]


@pytest.mark.parametrize("target, release_variable, base", [
    ("tensorflow-cuda", "TF_NGC_RELEASE", "tensorflow:{}-tf2-py3"),
    ("jax-cuda", "JAX_NGC_RELEASE", "jax:{}-py3"),
])
def test_images_of_a_discontinued_ngc_line_keep_their_base_but_take_the_run_tag(
        bake, no_env, target, release_variable, base):
    """NGC's TensorFlow (and JAX) containers follow their own release line: the base stays on it
    whatever NGC_RELEASE says, while the tag is the release a run asks for."""
    (image,) = bake.select(target, {"NGC_RELEASE": "26.01"}, environ={})
    own = bake.resolve_variables(environ={})[release_variable]
    assert own != "26.01"
    assert image.args["BASE_IMAGE"] == "nvcr.io/nvidia/" + base.format(own)
    assert image.labels["org.nav-orch.ngc-release"] == own
    assert image.tags[0].endswith(":26.01")
    (moved,) = bake.select(target, {release_variable: "24.01"}, environ={})
    assert moved.args["BASE_IMAGE"] == "nvcr.io/nvidia/" + base.format("24.01")


def test_environment_overrides_default(bake, no_env):
    no_env.setenv("NGC_RELEASE", "26.01")
    (cuda,) = bake.select("pytorch-cuda")
    assert cuda.tags == ["nav-orch/pytorch:26.01"]
    assert cuda.args["BASE_IMAGE"] == "nvcr.io/nvidia/pytorch:26.01-py3"
    assert cuda.labels["org.nav-orch.ngc-release"] == "26.01"
    assert cuda.labels["org.opencontainers.image.base.name"] == "nvcr.io/nvidia/pytorch:26.01-py3"


def test_explicit_override_beats_environment(bake, no_env):
    no_env.setenv("NGC_RELEASE", "26.01")
    (cuda,) = bake.select("pytorch-cuda", {"NGC_RELEASE": "24.12", "REGISTRY": "mirror.local/nvidia/"})
    assert cuda.tags == ["nav-orch/pytorch:24.12"]
    assert cuda.args["BASE_IMAGE"] == "mirror.local/nvidia/pytorch:24.12-py3"
    assert cuda.labels["org.nav-orch.ngc-release"] == "24.12"
    # An explicit mapping of the environment replaces os.environ: the default comes back.
    (cuda,) = bake.select("pytorch-cuda", environ={})
    assert cuda.tags == [f"nav-orch/pytorch:{bake.variables['NGC_RELEASE']}"]


def test_unknown_targets_are_errors_that_list_the_known_ones(bake, no_env):
    with pytest.raises(BakeError, match=r"no group or target 'pytorch' .*groups: default, cpu, cuda; "
                                        r"targets: pytorch-cpu, "):
        bake.select(["cpu", "pytorch"])
    with pytest.raises(BakeError, match="'nope', which is no target"):
        bake.build_order(["nope"])


def test_unknown_override_is_rejected(bake, no_env):
    with pytest.raises(BakeError, match="declares no variable NGC_RELEAS"):
        bake.select("cuda", {"NGC_RELEAS": "24.12"})


@pytest.mark.parametrize("value, message", [
    ('"${lower(NAME)}"', "unsupported interpolation"),
    ('"${target.cpu.tags}"', "unsupported interpolation"),
    ('"${NAME}-${OTHER}"', "names no declared variable"),
    ('"%{ if true }x%{ endif }"', "template directives"),
])
def test_bad_interpolation_is_a_clear_error(tmp_path, value, message):
    path = write(tmp_path, f'''
variable "NAME" {{
  default = "x"
}}
target "t" {{
  context = "."
  tags = [{value}]
}}
''')
    bake = load_bake_file(path)
    with pytest.raises(BakeError, match=message) as error:
        bake.select("t", environ={})
    assert "target 't' tags" in str(error.value)
    assert isinstance(error.value, BadInput)


def test_function_call_outside_a_string_is_rejected(tmp_path):
    bake = load_bake_file(write(tmp_path, 'target "t" {\n  tags = [lower("A")]\n}\n'))
    with pytest.raises(BakeError, match="unsupported interpolation"):
        bake.select("t", environ={})


def test_escapes_and_nested_defaults(tmp_path):
    bake = load_bake_file(write(tmp_path, r'''
variable "A" {
  default = "a"
}
variable "B" {
  default = "${A}-b"
}
target "t" {
  labels = {
    "k" = "say \"${B}\" $${LITERAL}"
  }
}
'''))
    (target,) = bake.select("t", environ={})
    assert target.labels == {"k": 'say "a-b" ${LITERAL}'}


def test_unsupported_target_field_and_invalid_hcl(tmp_path):
    with pytest.raises(BakeError, match="unsupported field.*inherits"):
        load_bake_file(write(tmp_path, 'target "t" {\n  inherits = ["x"]\n}\n'))
    with pytest.raises(BakeError, match="not valid HCL"):
        load_bake_file(write(tmp_path, 'target "t" {\n'))
    with pytest.raises(BakeError, match="neither a group nor a target"):
        load_bake_file(write(tmp_path, 'group "default" {\n  targets = ["nope"]\n}\n'))


def test_image_for():
    assert images.image_for("torch", "cpu") == "nav-orch/pytorch:cpu"
    assert images.image_for("torch", "25.10") == "nav-orch/pytorch:25.10"
    assert images.image_for("tensorflow", "cpu") == "nav-orch/tensorflow:cpu"
    assert images.image_for("jax", "25.10") == "nav-orch/jax:25.10"
    with pytest.raises(BadInput, match="no runner image for framework 'mxnet'"):
        images.image_for("mxnet", "cpu")


def test_host_debian_mirror(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "# a comment\nTypes: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n")
    assert image_builds.host_debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [signed-by=/k.gpg] http://old.example/debian bookworm main\n")
    assert image_builds.host_debian_mirror("bookworm", tmp_path) == "http://old.example/debian"
    assert image_builds.host_debian_mirror("trixie", tmp_path) is None


def test_host_pip_config_merges_in_pips_order(tmp_path):
    env_file = tmp_path / "env.conf"
    env_file.write_text("[global]\nindex-url = https://env.example/simple\n")
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text("[global]\nindex-url = https://user.example/simple\n"
                                                       "cert = /nonexistent.crt\n")
    text = image_builds.host_pip_config({"XDG_CONFIG_DIRS": str(tmp_path / "none")}, home)
    assert "index-url = https://user.example/simple" in text
    # PIP_CONFIG_FILE wins, and pip then skips the user file; PIP_INDEX_URL beats both.
    text = image_builds.host_pip_config({"XDG_CONFIG_DIRS": str(tmp_path / "none"), "PIP_CONFIG_FILE": str(env_file)},
                                        home)
    assert "https://env.example/simple" in text and "user.example" not in text
    text = image_builds.host_pip_config({"XDG_CONFIG_DIRS": str(tmp_path / "none"),
                                         "PIP_INDEX_URL": "https://var.example/simple"}, home)
    assert "index-url = https://var.example/simple" in text


def test_pip_config_for_build_drops_what_only_the_host_has():
    text = ("[global]\nconstraint = /etc/xdg/pip/constraints.txt\ncert = /etc/ssl/ca.crt\n"
            "find-links = /opt/wheels\nextra-index-url = file:///opt/pypi/simple https://mirror.example/simple\n"
            "timeout = 60\n[install]\nrequirement = /tmp/req.txt\n")
    build = image_builds.pip_config_for_build(text)
    assert "extra-index-url = https://mirror.example/simple" in build and "timeout = 60" in build
    for gone in ("constraint", "cert", "find-links", "file://", "requirement"):
        assert gone not in build
    assert image_builds.pip_config_for_build("[global]\nconstraint = /c.txt\n") is None
    assert image_builds.pip_config_for_build(None) is None


def test_host_ca_bundle_order(tmp_path):
    bundle = tmp_path / "ca.crt"
    bundle.write_text("x")
    assert image_builds.host_ca_bundle(None, {"SSL_CERT_FILE": str(bundle)}) == bundle
    assert image_builds.host_ca_bundle(f"[global]\ncert = {bundle}\n", {"PIP_CERT": "/nonexistent"}) == bundle
    assert image_builds.host_ca_bundle(None, {"PIP_CERT": "/nonexistent"}) is None
