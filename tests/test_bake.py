"""docker-bake.hcl read by orchestrator.bake, and the image names runs use (no Docker)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import __version__
from orchestrator.containers import images
from orchestrator.containers.bake import BakeError, load_bake_file
from orchestrator.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
OCI_LABELS = ("title", "description", "version", "source", "licenses", "base.name")
NAV_LABELS = ("flavor", "ngc-release", "torch", "onnxruntime", "cuda", "tensorrt")


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
    assert bake.variables["NGC_RELEASE"] == "25.10"
    assert bake.variables["REGISTRY"] == "nvcr.io/nvidia/"
    assert bake.variables["DEBIAN_BASE"] == images.DEBIAN_BASE
    assert bake.variables["TORCH_CPU_VERSION"] == "2.13.0"
    assert bake.variables["NAV_ORCH_VERSION"] == __version__
    assert set(bake.groups) >= {"default", "cpu", "cuda"}
    assert set(bake.targets) >= {"pytorch-cpu", "pytorch-cuda", "triton-cpu", "triton", "triton-sdk"}
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


def test_cpu_target_resolves(bake, no_env):
    (cpu,) = bake.select("pytorch-cpu")
    assert cpu.context == "images/pytorch-cpu"
    assert cpu.tags == [images.image_for("torch", "cpu")] == ["nav-orch/pytorch:cpu"]
    assert cpu.args["BASE_IMAGE"] == "nav-orch/debian:bookworm"
    assert cpu.args["TORCH_CPU_VERSION"] == "2.13.0"
    assert all(f"org.opencontainers.image.{name}" in cpu.labels for name in OCI_LABELS)
    assert all(f"org.nav-orch.{name}" in cpu.labels for name in NAV_LABELS)
    assert cpu.labels["org.nav-orch.flavor"] == "cpu"
    assert cpu.labels["org.nav-orch.torch"] == "2.13.0"
    assert cpu.labels["org.opencontainers.image.version"] == __version__
    assert not any("${" in value for value in [*cpu.args.values(), *cpu.labels.values(), *cpu.tags])


def test_cuda_target_resolves(bake, no_env):
    (cuda,) = bake.select("pytorch-cuda")
    assert cuda.context == "images/pytorch"
    assert cuda.args["BASE_IMAGE"] == "nvcr.io/nvidia/pytorch:25.10-py3"
    assert cuda.tags == [images.image_for("torch", "25.10")] == ["nav-orch/pytorch:25.10"]
    assert cuda.labels["org.nav-orch.flavor"] == "cuda"
    assert cuda.labels["org.nav-orch.ngc-release"] == "25.10"
    assert cuda.labels["org.opencontainers.image.base.name"] == "nvcr.io/nvidia/pytorch:25.10-py3"
    assert all(f"org.nav-orch.{name}" in cuda.labels for name in NAV_LABELS)


def test_tensorflow_and_jax_targets_resolve(bake, no_env):
    assert bake.target_names("cpu")[2:4] == ["tensorflow-cpu", "jax-cpu"]
    assert set(bake.target_names("cuda")) >= {"tensorflow-cuda", "jax-cuda"}
    # The JAX image is built FROM the TensorFlow one: asking for it alone builds both, in order.
    assert bake.build_order(["jax-cpu"]) == ["tensorflow-cpu", "jax-cpu"]
    tf_cpu, jax_cpu, tf_cuda, jax_cuda = bake.select(["tensorflow-cpu", "jax-cpu", "tensorflow-cuda", "jax-cuda"])
    assert tf_cpu.tags == [images.image_for("tensorflow", "cpu")]
    assert jax_cpu.tags == [images.image_for("jax", "cpu")]
    assert tf_cuda.tags == [images.image_for("tensorflow", "25.10")]
    assert jax_cuda.tags == [images.image_for("jax", "25.10")]
    assert tf_cpu.args["BASE_IMAGE"] == images.DEBIAN_BASE
    assert jax_cpu.args["BASE_IMAGE"] == "nav-orch/tensorflow:cpu"
    assert jax_cpu.contexts == {"nav-orch/tensorflow:cpu": "target:tensorflow-cpu"}
    assert tf_cpu.args["TENSORFLOW_CPU_VERSION"] == "2.21.0" and tf_cpu.args["TF2ONNX_VERSION"] == "1.17.0"
    assert jax_cpu.args["JAX_VERSION"] == "0.5.3"
    # NGC's last TensorFlow container is 25.02: the CUDA TensorFlow image stays on it.
    assert tf_cuda.args["BASE_IMAGE"] == "nvcr.io/nvidia/tensorflow:25.02-tf2-py3"
    assert tf_cuda.labels["org.nav-orch.ngc-release"] == "25.02"
    assert jax_cuda.args["BASE_IMAGE"] == "nvcr.io/nvidia/jax:25.04-py3"
    for target in (tf_cpu, jax_cpu, tf_cuda, jax_cuda):
        assert (bake.root / target.context / target.dockerfile).is_file()
        assert all(f"org.opencontainers.image.{name}" in target.labels for name in OCI_LABELS)
        assert all(f"org.nav-orch.{name}" in target.labels
                   for name in ("flavor", "ngc-release", "tensorflow", "onnxruntime", "cuda", "tensorrt"))
        assert not any("${" in value for value in [*target.args.values(), *target.labels.values(), *target.tags])
    assert tf_cpu.labels["org.nav-orch.tensorrt"] == jax_cpu.labels["org.nav-orch.tensorrt"] == "none"
    assert jax_cpu.labels["org.nav-orch.jax"] == "0.5.3"


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
    # An explicit mapping of the environment replaces os.environ.
    (cuda,) = bake.select("pytorch-cuda", environ={})
    assert cuda.tags == ["nav-orch/pytorch:25.10"]


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
    assert images.host_debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [signed-by=/k.gpg] http://old.example/debian bookworm main\n")
    assert images.host_debian_mirror("bookworm", tmp_path) == "http://old.example/debian"
    assert images.host_debian_mirror("trixie", tmp_path) is None


def test_host_pip_config_merges_in_pips_order(tmp_path):
    env_file = tmp_path / "env.conf"
    env_file.write_text("[global]\nindex-url = https://env.example/simple\n")
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text("[global]\nindex-url = https://user.example/simple\n"
                                                       "cert = /nonexistent.crt\n")
    text = images.host_pip_config({"XDG_CONFIG_DIRS": str(tmp_path / "none")}, home)
    assert "index-url = https://user.example/simple" in text
    # PIP_CONFIG_FILE wins, and pip then skips the user file; PIP_INDEX_URL beats both.
    text = images.host_pip_config({"XDG_CONFIG_DIRS": str(tmp_path / "none"), "PIP_CONFIG_FILE": str(env_file)}, home)
    assert "https://env.example/simple" in text and "user.example" not in text
    text = images.host_pip_config({"XDG_CONFIG_DIRS": str(tmp_path / "none"),
                                   "PIP_INDEX_URL": "https://var.example/simple"}, home)
    assert "index-url = https://var.example/simple" in text


def test_pip_config_for_build_drops_what_only_the_host_has():
    text = ("[global]\nconstraint = /etc/xdg/pip/constraints.txt\ncert = /etc/ssl/ca.crt\n"
            "find-links = /opt/wheels\nextra-index-url = file:///opt/pypi/simple https://mirror.example/simple\n"
            "timeout = 60\n[install]\nrequirement = /tmp/req.txt\n")
    build = images.pip_config_for_build(text)
    assert "extra-index-url = https://mirror.example/simple" in build and "timeout = 60" in build
    for gone in ("constraint", "cert", "find-links", "file://", "requirement"):
        assert gone not in build
    assert images.pip_config_for_build("[global]\nconstraint = /c.txt\n") is None
    assert images.pip_config_for_build(None) is None


def test_host_ca_bundle_order(tmp_path):
    bundle = tmp_path / "ca.crt"
    bundle.write_text("x")
    assert images.host_ca_bundle(None, {"SSL_CERT_FILE": str(bundle)}) == bundle
    assert images.host_ca_bundle(f"[global]\ncert = {bundle}\n", {"PIP_CERT": "/nonexistent"}) == bundle
    assert images.host_ca_bundle(None, {"PIP_CERT": "/nonexistent"}) is None
