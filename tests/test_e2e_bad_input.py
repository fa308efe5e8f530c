"""Bad input end to end: each case is one line on stderr, a documented exit code, no traceback.

Cases that fail before a container starts need no images; the others run the real runners."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES, nav_orch, read_results

MLP = f"{EXAMPLES}/mlp.py:make_mlp"
MLP_INPUT = ["--input", "input:8,64:float32"]


def optimize_quietly(workspace, model, *options):
    return nav_orch("optimize", model, "--workspace", str(workspace), "--batch-sizes", "1", "--no-triton",
                    "--progress", "quiet", *options)


def assert_one_line(run, exit_code: int, message: str) -> None:
    assert run.returncode == exit_code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nav-orch: "), run.stderr
    assert message in lines[0]


def test_no_docker_daemon_is_exit_3(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    run = optimize_quietly(tmp_path / "ws", MLP, *MLP_INPUT, "--images", "cpu")
    assert_one_line(run, 3, "no Docker daemon answers at unix://")


def test_gpus_asked_for_on_a_host_without_any_is_exit_3(tmp_path):
    run = optimize_quietly(tmp_path / "ws", MLP, *MLP_INPUT, "--gpus", "all")
    assert_one_line(run, 3, "--gpus all: this host has no NVIDIA GPU")


@pytest.mark.docker
def test_an_image_not_built_says_how_to_build_it(tmp_path):
    run = optimize_quietly(tmp_path / "ws", MLP, *MLP_INPUT, "--images", "24.01", "--gpus", "none")
    assert_one_line(run, 3, "run `nav-orch images build --flavor cuda --set NGC_RELEASE=24.01`")


@pytest.mark.docker
@pytest.mark.usefixtures("cpu_images", "no_leftovers")
class TestInsideRunners:
    def test_a_corrupt_torchscript_file(self, tmp_path):
        corrupt = tmp_path / "model.pt"
        corrupt.write_bytes(b"PK\x03\x04 this is not a TorchScript archive")
        run = optimize_quietly(tmp_path / "ws", str(corrupt), *MLP_INPUT, "--images", "cpu", "--gpus", "none")
        assert_one_line(run, 2, "the source model failed on the samples")
        assert read_results(tmp_path / "ws")["state"] == "failed"

    @pytest.mark.parametrize("arrays, message", [
        ({"input": np.zeros((4, 32), np.float32)}, "mat1 and mat2 shapes cannot be multiplied"),
        ({"input": np.zeros((4, 64), np.float32), "extra": np.zeros((4, 2), np.float32)},
         "the samples hold 2 arrays (input, extra) but forward() takes 1"),
        ({"input": np.zeros((4, 64), np.int64)}, "the source model failed on the samples"),
    ], ids=["shape", "names", "dtype"])
    def test_samples_that_do_not_fit_the_model(self, tmp_path, arrays, message):
        samples = tmp_path / "samples.npz"
        np.savez(samples, **arrays)
        run = optimize_quietly(tmp_path / "ws", MLP, "--samples", str(samples), "--images", "cpu", "--gpus", "none")
        assert_one_line(run, 2, message)
