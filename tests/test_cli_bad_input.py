"""Bad input through the real CLI: one line on stderr naming the option as typed, the documented
exit code (README, "Exit codes"), no traceback. Every case fails before a container would start, so
none needs Docker; DOCKER_HOST points at no daemon throughout, so that no case can reach one."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, nav_orch

from orchestrator.results import Environment, RunResults

MLP = f"{EXAMPLES}/mlp.py:make_mlp"
MLP_INPUT = ("--input", "input:8,64:float32")
# Where a folder can never be made, even by root.
UNWRITABLE = "/proc/nav-orch-test/out"


@pytest.fixture(autouse=True)
def no_daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")


def assert_one_line(run, exit_code: int, *parts: str) -> str:
    assert "Traceback" not in run.stderr + run.stdout, run.stderr
    assert run.returncode == exit_code, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nav-orch: "), run.stderr
    for part in parts:
        assert part in lines[0]
    return lines[0]


def optimize(tmp_path: Path, *options: str, model: str = MLP):
    return nav_orch("optimize", model, "--workspace", str(tmp_path / "ws"), "--gpus", "none", "--no-triton",
                    "--progress", "quiet", *options)


def a_workspace(folder: Path) -> Path:
    """A workspace as `report` reads it: a results.json and nothing else."""
    folder.mkdir()
    (folder / "results.json").write_text(RunResults(environment=Environment(nav_orch="0", host_python="3"))
                                         .model_dump_json())
    return folder


# --- paths -----------------------------------------------------------------------------------------

def test_a_workspace_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    run = nav_orch("optimize", MLP, *MLP_INPUT, "--images", "cpu", "--workspace", str(tmp_path / "afile"))
    assert_one_line(run, 2, "--workspace", "a file, not a folder")


@pytest.mark.parametrize("where", [UNWRITABLE, "{tmp}/afile/ws"], ids=["proc", "inside-a-file"])
def test_a_workspace_that_cannot_be_written(tmp_path, where):
    (tmp_path / "afile").write_text("")
    run = nav_orch("optimize", MLP, *MLP_INPUT, "--images", "cpu", "--workspace", where.format(tmp=tmp_path))
    assert_one_line(run, 2, "--workspace", "cannot be written")


def test_a_zoo_workspace_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    run = nav_orch("zoo", str(tmp_path / "zoo.toml"), "--workspace", str(tmp_path / "afile"))
    assert_one_line(run, 2, "--workspace", "a file, not a folder")


def test_report_output_a_folder(tmp_path):
    run = nav_orch("report", str(a_workspace(tmp_path / "ws")), "-o", str(tmp_path))
    assert_one_line(run, 2, "-o/--output", "a folder; name the file to write")


def test_report_output_unwritable(tmp_path):
    run = nav_orch("report", str(a_workspace(tmp_path / "ws")), "-o", f"{UNWRITABLE}/report.html")
    assert_one_line(run, 2, "-o/--output", "cannot be written")


# --- serve: ports and host, before the workspace is even read ---------------------------------------

@pytest.mark.parametrize("option, port", [("--http-port", "70000"), ("--http-port", "-1"), ("--grpc-port", "65536")])
def test_serve_ports_outside_the_range(tmp_path, option, port):
    run = nav_orch("serve", str(tmp_path / "none"), option, port)
    assert_one_line(run, 2, f"{option} {port}: a port is 1 to 65535")


@pytest.mark.parametrize("host, message", [
    ("nav-orch-no-such-host.invalid", "cannot be resolved"),  # .invalid: never a name (RFC 2606)
    ("192.0.2.1", "cannot be bound here"),  # TEST-NET-1: never this machine's
])
def test_serve_a_host_that_cannot_be_bound(tmp_path, host, message):
    run = nav_orch("serve", str(tmp_path / "none"), "--host", host)
    line = assert_one_line(run, 2, f"--host {host}: {message}", "an address of this machine")
    assert "port" not in line


# --- the model argument, read on the host without importing it --------------------------------------

def test_a_model_argument_with_two_colons(tmp_path):
    run = optimize(tmp_path, *MLP_INPUT, model=f"{MLP}:extra")
    assert_one_line(run, 2, "takes FILE.py:FACTORY", "'make_mlp:extra' is not a function name")


def test_a_factory_the_file_does_not_define(tmp_path):
    run = optimize(tmp_path, *MLP_INPUT, model=f"{EXAMPLES}/mlp.py:make_nothing")
    assert_one_line(run, 2, "mlp.py defines no 'make_nothing' at its top level (it defines ", "make_mlp")


def test_a_function_profile_cannot_find(tmp_path):
    run = nav_orch("profile", f"{EXAMPLES}/numpy_function.py:nothing", *MLP_INPUT, "--workspace", str(tmp_path))
    assert_one_line(run, 2, "numpy_function.py defines no 'nothing'")


def test_a_model_file_with_a_syntax_error(tmp_path):
    model = tmp_path / "broken.py"
    model.write_text("import torch\n\ndef make(:\n    return torch.nn.Linear(2, 2)\n")
    run = optimize(tmp_path, *MLP_INPUT, model=f"{model}:make")
    assert_one_line(run, 2, f"{model}:3:", "cannot parse it")


# --- samples --------------------------------------------------------------------------------------

def test_a_text_file_as_samples(tmp_path):
    samples = tmp_path / "samples.txt"
    samples.write_text("1 2 3\n")
    line = assert_one_line(optimize(tmp_path, "--samples", str(samples)), 2, "--samples", "not an .npz file",
                           "np.savez(")
    assert "pickle" not in line


def test_samples_and_inputs_together(tmp_path):
    samples = tmp_path / "samples.npz"
    np.savez(samples, input=np.zeros((8, 64), np.float32))
    run = optimize(tmp_path, "--samples", str(samples), *MLP_INPUT)
    assert_one_line(run, 2, "--samples and --input exclude each other")


def test_inputs_of_different_batch_sizes(tmp_path):
    run = optimize(tmp_path, *MLP_INPUT, "--input", "mask:4,8:float32")
    assert_one_line(run, 2, "every one of --input needs the same batch size", "input: 8, mask: 4")


# --- option values: the option's name, never the config field's -------------------------------------

@pytest.mark.parametrize("options, parts, field", [
    (["--timeout", "0"], ["--timeout 0: "], "job_timeout_s"),
    (["--accuracy", "cosine:1.5"], ["--accuracy cosine:1.5: "], "min_cosine"),
    (["--images", "cuda"], ["--images: 'cuda' is not an image release", "auto, cpu or an NGC release YY.MM"],
     "NGC_RELEASE"),
    (["--no-triton", "--triton-all"], ["--triton-all and --no-triton exclude each other"], "all_variants"),
])
def test_option_values_name_the_option(tmp_path, options, parts, field):
    run = nav_orch("optimize", MLP, *MLP_INPUT, "--workspace", str(tmp_path / "ws"), "--gpus", "none", *options)
    line = assert_one_line(run, 2, *parts)
    assert field not in line


# --- the environment -------------------------------------------------------------------------------

def test_no_docker_daemon(tmp_path):
    line = assert_one_line(optimize(tmp_path, *MLP_INPUT, "--images", "cpu"), 3, "no Docker daemon answers at unix://",
                           "start it", "nav-orch doctor")
    assert "Connection aborted" not in line and "FileNotFoundError" not in line


def test_a_zoo_without_docker_is_one_line_and_the_environments_code(tmp_path):
    zoo = tmp_path / "zoo.toml"
    zoo.write_text('[defaults]\nimages = "cpu"\ngpus = "none"\ninputs = ["input:8,64:float32"]\n\n'
                   + "".join(f'[[model]]\nname = "{name}"\nmodel = "{MLP}"\n\n' for name in ("one", "two")))
    assert_one_line(nav_orch("zoo", str(zoo), "--workspace", str(tmp_path / "out")), 3, "no Docker daemon answers")


def test_clean_all_without_a_terminal_or_yes_is_refused_before_docker():
    assert_one_line(nav_orch("clean", "--all"), 2, "--all", "--yes", "--dry-run")


# --- a tritonserver of this machine: the local executor's, never a container's ------------------------

@pytest.mark.parametrize("executor", [[], ["--executor", "docker"]], ids=["default", "docker"])
def test_a_tritonserver_with_the_docker_executor(tmp_path, executor):
    run = nav_orch("optimize", MLP, *MLP_INPUT, "--workspace", str(tmp_path / "ws"), "--gpus", "none", "--images",
                   "cpu", "--tritonserver", "/opt/tritonserver/bin/tritonserver", *executor)
    line = assert_one_line(run, 2, "nav-orch: --tritonserver and --executor exclude each other: a tritonserver of "
                           "this machine serves for the local executor, and docker brings its own")
    assert "triton." not in line and "`" not in line
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("options", [
    [],  # docker, triton: the defaults
    ["--server", "triton", "--executor", "docker"],
    ["--server", "pytriton", "--executor", "local"],
    ["--server", "pytriton"],
], ids=["defaults", "docker", "local-pytriton", "docker-pytriton"])
def test_serve_a_tritonserver_without_the_local_executor_and_triton(tmp_path, options):
    run = nav_orch("serve", str(a_workspace(tmp_path / "ws")), "--tritonserver", "/opt/tritonserver/bin/tritonserver",
                   *options)
    assert_one_line(run, 2, "--tritonserver: for --executor local --server triton only (containers bring their own)")
