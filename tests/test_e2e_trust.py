"""Runner output is untrusted, end to end in real containers: a hostile model that tampers with
what it wrote after its results are in cannot make the host mount, copy or serve a host file.

Each test writes a random secret on the host, outside anything it hands nav-orch, and asserts
that the variant the model tampered with failed with the reason, that the secret's content is
nowhere in the workspace (no link is left there either), that the other variants finished, and
(fixture `no_leftovers`) that no container is left.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pytest
from conftest import assert_verified_and_profiled, optimize_cpu, read_results

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("cpu_images", "no_leftovers")]
MODELS = Path(__file__).resolve().parent / "models"


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "host" / "secret.txt"
    path.parent.mkdir()
    path.write_text(f"host secret {secrets.token_hex(16)}")
    path.chmod(0o644)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_secret_nowhere(workspace: Path, secret: Path) -> None:
    marker = secret.read_bytes()
    for top, folders, files in os.walk(workspace):
        for name in folders + files:
            path = Path(top, name)
            assert not path.is_symlink(), f"{path} is a link"
            if name in files:
                assert marker not in path.read_bytes(), f"the host's secret is in {path}"


def assert_only_the_tampered_variant_failed(workspace: Path, secret: Path, variants: dict, tampered: str,
                                            error: str, intact: str) -> None:
    """`error` is the tampered variant's whole error, or its start where it ends in '...'."""
    got = variants[tampered]["error"]
    assert variants[tampered]["status"] == "failed"
    assert got.startswith(error[:-3]) if error.endswith("...") else got == error, got
    assert_verified_and_profiled(variants[intact])
    assert_secret_nowhere(workspace, secret)


def optimize_hostile(workspace: Path, factory: str, formats: str, *options: str, **model_args: str) -> dict:
    """Optimize a hostile factory (it takes x:2,4); the variants by format."""
    args = [arg for name, value in model_args.items() for arg in ("--model-arg", f"{name}={value}")]
    run = optimize_cpu(workspace, f"{MODELS}/{factory}", "--input", "x:2,4:float32", "--formats", formats, *options,
                       *args)
    assert run.returncode == 0, run.stderr
    return {v["format"]: v for v in read_results(workspace)["variants"]}


def test_an_artifact_swapped_for_a_link_to_a_host_file_fails_its_variant(tmp_path, secret):
    workspace = tmp_path / "ws"
    # One build at a time, in the formats' order: torch-compile's export calls the factory after the ONNX
    # variant's session swapped its artifact for the link; had the host mounted the link's target, the
    # factory would copy it out.
    variants = optimize_hostile(workspace, "hostile.py:make_links_artifact", "torchscript-trace,onnx,torch-compile",
                                "--jobs", "1", secret=str(secret), secret_sha256=digest(secret))
    assert_only_the_tampered_variant_failed(
        workspace, secret, variants, "onnx",
        "export: runner output not trusted: variants/onnx-fp32/model.onnx is a symbolic link (removed)",
        intact="torchscript-trace")
    assert_verified_and_profiled(variants["torch-compile"])


@pytest.mark.parametrize("artifact", ["{secret}", "../../../host/secret.txt"])
def test_an_artifact_path_outside_its_folder_fails_its_variant(tmp_path, secret, artifact):
    workspace = tmp_path / "ws"
    named = artifact.format(secret=secret)
    variants = optimize_hostile(workspace, "hostile.py:make_escaping_artifact_path", "torchscript-trace,onnx",
                                artifact=named, secret_sha256=digest(secret))
    assert_only_the_tampered_variant_failed(
        workspace, secret, variants, "onnx", f"export: runner output not trusted: the artifact path {named!r} is "
        "not a plain relative path inside the job's folder", intact="torchscript-trace")
    assert variants["onnx"]["artifact"] is None


def test_an_oversized_result_fails_its_variant_unread(tmp_path, secret):
    workspace = tmp_path / "ws"
    variants = optimize_hostile(workspace, "hostile.py:make_huge_result", "torchscript-trace,onnx",
                                secret_sha256=digest(secret))
    assert_only_the_tampered_variant_failed(
        workspace, secret, variants, "onnx",
        "verify: runner output not trusted: jobs/verify-onnx-fp32/result.json is 8.0 MiB (limit 1.0 MiB)...",
        intact="torchscript-trace")


def test_a_link_inside_a_savedmodel_fails_its_variant(tmp_path, secret):
    workspace = tmp_path / "ws"
    variants = optimize_hostile(workspace, "hostile_keras.py:make_links_inside_savedmodel", "savedmodel,onnx",
                                secret=str(secret))
    assert_only_the_tampered_variant_failed(
        workspace, secret, variants, "savedmodel", "export: runner output not trusted: variants/savedmodel-fp32/"
        "savedmodel/variables/extra is a symbolic link (removed)", intact="onnx")
