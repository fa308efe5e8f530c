"""Triton without Docker, for the local executor (orchestrator/triton/local.py, grpc_load.py): which
tritonserver and Python backend stub serve, what the server process is started with, and the gRPC
load's arithmetic. No real tritonserver runs here (tests/test_e2e_local_triton.py runs one)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from orchestrator import api
from orchestrator.config import OptimizeConfig, TritonSettings
from orchestrator.containers import engine
from orchestrator.errors import EnvironmentProblem, ServerFailed
from orchestrator.model_ref import parse_model
from orchestrator.run.workspace import Workspace
from orchestrator.triton import local
from orchestrator.triton.grpc_load import GRPC_CLIENT, GrpcLoad, requests_from, stable_tail
from orchestrator.triton.local import (
    PYTHON_BACKEND_FILES,
    STUB,
    LocalTriton,
    LocalTritonServer,
    ServingPython,
    backend_directory,
    check_numpy,
    find_local_triton,
    probe_serving_python,
)
from orchestrator.triton.perf_analyzer import write_input_data
from orchestrator.triton.stage import local_tools

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def pytriton_package(site: Path, stubs: tuple[str, ...] = ("3.10", "3.11", "3.12"), libs: bool = True) -> Path:
    """nvidia-pytriton's layout in `site` (site-packages): PKG/tritonserver/{bin,backends/python,
    python_backend_stubs/3.X} and site-packages/nvidia_pytriton.libs; returns PKG."""
    package = site / "pytriton"
    server = package / "tritonserver"
    touch(server / "bin" / "tritonserver")
    for name in PYTHON_BACKEND_FILES:
        touch(server / "backends" / "python" / name)
    for version in stubs:
        touch(server / "python_backend_stubs" / version / STUB)
    if libs:
        (site / "nvidia_pytriton.libs").mkdir(parents=True)
    return package


def install(root: Path) -> Path:
    """An install such as /opt/tritonserver: ROOT/bin/tritonserver, its stub in ROOT/backends/python."""
    for name in (*PYTHON_BACKEND_FILES, STUB):
        touch(root / "backends" / "python" / name)
    return touch(root / "bin" / "tritonserver")


def serving(version: str = "3.11", pytriton: Optional[Path] = None, numpy: Optional[str] = "1.26.4",
            bin: str = "/opt/venv/bin") -> ServingPython:
    return ServingPython(version=version, bin=bin, numpy=numpy, pytriton=pytriton)


# --- which tritonserver, and the stub for the runners' Python -----------------------------------------

def test_the_pytriton_wheel_serves_with_the_stub_of_the_pythons_version_and_its_libraries(tmp_path):
    site = tmp_path / "site-packages"
    package = pytriton_package(site)
    found = find_local_triton(serving("3.11", package), None, on_path=None)
    root = (package / "tritonserver").resolve()
    assert found.binary == package / "tritonserver" / "bin" / "tritonserver"
    assert found.python_backend == root / "backends" / "python"
    assert found.stub == root / "python_backend_stubs" / "3.11" / STUB
    assert found.libraries == site.resolve() / "nvidia_pytriton.libs"
    assert found.describe() == f"tritonserver {found.binary}"


def test_the_wheel_is_preferred_to_a_tritonserver_on_path_and_given_one_to_both(tmp_path):
    package = pytriton_package(tmp_path / "site-packages")
    other = install(tmp_path / "opt" / "tritonserver")
    wheel = find_local_triton(serving("3.12", package), None, on_path=str(other))
    assert wheel.binary == package / "tritonserver" / "bin" / "tritonserver" and wheel.stub.parent.name == "3.12"
    given = find_local_triton(serving("3.12", package), other, on_path=None)
    assert given.binary == other and given.stub == other.resolve().parent.parent / "backends" / "python" / STUB


def test_the_wheel_without_its_libraries_folder_has_none(tmp_path):
    package = pytriton_package(tmp_path / "site-packages", libs=False)
    assert find_local_triton(serving("3.11", package), None, on_path=None).libraries is None


@pytest.mark.parametrize("how", ["given", "on_path"])
def test_an_install_serves_with_its_own_backends_stub_and_no_libraries(tmp_path, how):
    binary = install(tmp_path / "opt" / "tritonserver")
    found = find_local_triton(serving("3.11"), binary if how == "given" else None,
                              on_path=str(binary) if how == "on_path" else None)
    root = binary.resolve().parent.parent
    assert found.binary == binary
    assert found.python_backend == root / "backends" / "python"
    assert found.stub == root / "backends" / "python" / STUB
    assert found.libraries is None


def test_a_given_tritonserver_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "tritonserver"
    with pytest.raises(EnvironmentProblem) as raised:
        find_local_triton(serving("3.11", pytriton_package(tmp_path / "site")), missing, on_path=None)
    message = str(raised.value)
    assert message.startswith(f"--tritonserver {missing}: no such file")
    assert message.endswith("give the tritonserver program's path")


def test_no_tritonserver_at_all_says_how_to_get_one():
    with pytest.raises(EnvironmentProblem) as raised:
        find_local_triton(serving("3.11"), None, on_path=None)
    message = str(raised.value)
    assert message.startswith("no tritonserver for a Python 3.")
    assert "install nvidia-pytriton" in message and "--tritonserver PATH" in message and "--no-triton" not in message


def test_a_wheel_without_a_stub_for_the_pythons_version_names_the_missing_stub(tmp_path):
    package = pytriton_package(tmp_path / "site-packages", stubs=("3.10", "3.12"))
    with pytest.raises(EnvironmentProblem) as raised:
        find_local_triton(serving("3.11", package), None, on_path=None)
    message = str(raised.value)
    binary = package / "tritonserver" / "bin" / "tritonserver"
    assert message.startswith(f"{binary} cannot serve Python 3.11 models: ")
    # The wheel has no 3.11 stub, so the install layout's place is looked at and found empty.
    assert f"{(package / 'tritonserver').resolve() / 'backends' / 'python' / STUB} is missing" in message
    assert "a stub for that Python" in message


@pytest.mark.parametrize("name", PYTHON_BACKEND_FILES)
def test_an_install_without_the_python_backend_names_the_file(tmp_path, name):
    binary = install(tmp_path / "tritonserver")
    (tmp_path / "tritonserver" / "backends" / "python" / name).unlink()
    with pytest.raises(EnvironmentProblem, match=f"cannot serve Python 3.11 models: .*/{name} is missing"):
        find_local_triton(serving("3.11"), binary, on_path=None)


def test_a_symlinked_binary_finds_the_backends_beside_its_target(tmp_path):
    binary = install(tmp_path / "opt" / "tritonserver")
    link = tmp_path / "bin" / "tritonserver"
    link.parent.mkdir()
    link.symlink_to(binary)
    found = find_local_triton(serving("3.11"), None, on_path=str(link))
    assert found.binary == link and found.stub == binary.resolve().parent.parent / "backends" / "python" / STUB


# --- the runners' Python ----------------------------------------------------------------------------

def test_probing_this_python_gives_its_version_and_bin_folder():
    found = probe_serving_python(sys.executable)
    assert found.version == VERSION
    assert found.bin == str(Path(sys.executable).parent)
    assert found.numpy == np.__version__
    try:
        import pytriton
    except ImportError:
        assert found.pytriton is None
    else:
        assert found.pytriton == Path(pytriton.__path__[0])


def test_probing_a_python_that_cannot_run_is_one_line(tmp_path):
    with pytest.raises(EnvironmentProblem, match=re.escape(f"--python {tmp_path}/nopython cannot be run (")):
        probe_serving_python(str(tmp_path / "nopython"))
    failing = touch(tmp_path / "failing")
    failing.write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(EnvironmentProblem, match=re.escape(f"--python {failing} failed: broken")):
        probe_serving_python(str(failing))


@pytest.mark.parametrize("numpy, message", [
    ("2.1.3", "has numpy 2.1.3; the local tritonserver's Python backend needs numpy<2"),
    ("2.0.0rc1", "has numpy 2.0.0rc1"),
    (None, "has no numpy, which Triton's Python backend needs"),
])
def test_numpy_2_or_none_cannot_serve(numpy, message):
    with pytest.raises(EnvironmentProblem) as raised:
        check_numpy("/venv/bin/python", serving(numpy=numpy))
    assert str(raised.value).startswith(f"--python /venv/bin/python {message}")


@pytest.mark.parametrize("numpy", ["1.26.4", "1.24.0"])
def test_numpy_1_serves(numpy):
    check_numpy("/venv/bin/python", serving(numpy=numpy))


# --- the backend folder and the server process -----------------------------------------------------

def wheel_triton(tmp_path: Path, version: str = "3.11") -> LocalTriton:
    package = pytriton_package(tmp_path / "site-packages")
    for name in PYTHON_BACKEND_FILES:
        (package / "tritonserver" / "backends" / "python" / name).write_text(f"the wheel's {name}")
    (package / "tritonserver" / "python_backend_stubs" / version / STUB).write_text(f"stub {version}")
    return find_local_triton(serving(version, package), None, on_path=None)


def test_the_backend_directory_holds_the_python_backend_with_the_pythons_stub(tmp_path):
    triton = wheel_triton(tmp_path)
    folder = backend_directory(triton, tmp_path / "ws" / "triton" / "backends")
    assert folder == tmp_path / "ws" / "triton" / "backends"
    python = folder / "python"
    assert sorted(p.name for p in python.iterdir()) == sorted([*PYTHON_BACKEND_FILES, STUB])
    assert (python / STUB).read_text() == "stub 3.11"
    for name in PYTHON_BACKEND_FILES:
        assert (python / name).read_text() == f"the wheel's {name}"
    assert not (triton.python_backend / STUB).exists(), "the wheel's folder is left alone"
    assert backend_directory(triton, folder) == folder  # again, over the copies


def local_server(tmp_path: Path, triton: LocalTriton, gpu_indices: list[str], bin: str = "/venv/bin",
                 models: tuple[str, ...] = ("onnx-fp32", "torchscript-trace-fp32")) -> LocalTritonServer:
    repository = tmp_path / "ws" / "triton" / "model_repository"
    repository.mkdir(parents=True, exist_ok=True)
    return LocalTritonServer(triton, tmp_path / "backends", serving(bin=bin), gpu_indices, repository,
                             list(models), "run1", tmp_path / "ws" / "triton" / "server.log", "none", "256m", 5.0)


def test_the_command_runs_the_binary_on_the_real_repository_with_its_backends(tmp_path, monkeypatch):
    triton = wheel_triton(tmp_path)
    monkeypatch.chdir(tmp_path)
    server = LocalTritonServer(triton, tmp_path / "backends", serving(), [], Path("ws/triton/model_repository"),
                               ["onnx-fp32", "torchscript-trace-fp32"], "run1", tmp_path / "server.log", "none",
                               "256m", 5.0)
    server.http_port, server.grpc_port = 8100, 8101
    command = server.command()
    assert command[0] == str(triton.binary)
    assert command[1] == f"--model-repository={(tmp_path / 'ws' / 'triton' / 'model_repository').resolve()}"
    assert f"--backend-directory={tmp_path / 'backends'}" in command
    assert "--model-control-mode=explicit" in command
    assert [c for c in command if c.startswith("--load-model=")] == ["--load-model=onnx-fp32",
                                                                    "--load-model=torchscript-trace-fp32"]
    for option in ("--http-address=127.0.0.1", "--http-port=8100", "--grpc-address=127.0.0.1", "--grpc-port=8101"):
        assert option in command
    assert f"--backend-config=python,shm-growth-byte-size={local.SHM_GROWTH_BYTES}" in command


class Launched:
    """Stands in for LocalProcess: records what the server would be started with."""

    calls: list[tuple[list[str], dict[str, str], Path]] = []

    def __init__(self, argv: list[str], environment: dict[str, str], log: Path):
        Launched.calls.append((argv, environment, log))


@pytest.fixture
def launched(monkeypatch) -> list[tuple[list[str], dict[str, str], Path]]:
    Launched.calls = []
    monkeypatch.setattr(local, "LocalProcess", Launched)
    return Launched.calls


def spec(command: list[str]) -> engine.ContainerSpec:
    return engine.ContainerSpec(image="tritonserver", command=command, mounts=[], labels={})


@pytest.mark.parametrize("gpu_indices, visible", [([], ""), (["0"], "0"), (["1", "3"], "1,3")])
def test_the_process_sees_the_pythons_bin_first_its_gpus_and_the_wheels_libraries(tmp_path, monkeypatch, launched,
                                                                                  gpu_indices, visible):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/cuda/lib64")
    server = local_server(tmp_path, wheel_triton(tmp_path), gpu_indices)
    running = server.launch(spec(["tritonserver", "--x"]))
    ((argv, environment, log),) = launched
    assert isinstance(running, Launched) and argv == ["tritonserver", "--x"]
    assert environment["PATH"] == "/venv/bin:/usr/bin:/bin"
    assert environment["CUDA_VISIBLE_DEVICES"] == visible and environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert environment["LD_LIBRARY_PATH"] == f"{server.triton.libraries}:/usr/local/cuda/lib64"
    assert environment["PYTHONUNBUFFERED"] == "1"
    assert log == tmp_path / "ws" / "triton" / "server.live.log"


def test_without_libraries_the_library_path_is_left_as_it_is(tmp_path, monkeypatch, launched):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    server = local_server(tmp_path, find_local_triton(serving(), install(tmp_path / "opt"), None), ["0"])
    server.launch(spec(["tritonserver"]))
    ((_, environment, _),) = launched
    assert "LD_LIBRARY_PATH" not in environment


def test_the_wheels_libraries_alone_when_there_was_no_library_path(tmp_path, monkeypatch, launched):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    server = local_server(tmp_path, wheel_triton(tmp_path), [])
    server.launch(spec(["tritonserver"]))
    ((_, environment, _),) = launched
    assert environment["LD_LIBRARY_PATH"] == str(server.triton.libraries)


def test_a_server_that_exits_at_once_fails_with_its_log_and_leaves_nothing_running(tmp_path):
    """The real process supervision, with a stand-in binary that prints what it was started with."""
    triton = wheel_triton(tmp_path)
    triton.binary.write_text('#!/bin/sh\necho "PATH=$PATH"\necho "CUDA=[$CUDA_VISIBLE_DEVICES]"\n'
                             'echo "LIBS=$LD_LIBRARY_PATH"\necho "ARGS=$*"\nexit 7\n')
    triton.binary.chmod(0o755)
    server = local_server(tmp_path, triton, [], bin=str(tmp_path / "venv" / "bin"), models=("mlp",))
    with pytest.raises(ServerFailed, match="tritonserver exited with code 7"):
        server.start()
    assert server.running is None
    log = server.log_path.read_text()
    assert f"PATH={tmp_path / 'venv' / 'bin'}:" in log
    assert "CUDA=[]" in log
    assert f"LIBS={triton.libraries}" in log
    assert f"--model-repository={server.repository}" in log and "--load-model=mlp" in log


# --- the stage's tools without Docker ----------------------------------------------------------------

def test_local_tools_serve_with_the_local_binary_and_measure_over_grpc(tmp_path):
    triton = wheel_triton(tmp_path)
    tools = local_tools(triton, serving(), "/envs/serve/bin/python", ["0"], tmp_path / "ws" / "triton" / "backends")
    assert tools.client == GRPC_CLIENT == "tritonclient-grpc" and tools.local_python == "/envs/serve/bin/python"
    assert tools.images("25.10") == (f"tritonserver {triton.binary}", "tritonclient")
    assert tools.require_image("anything") is None
    assert tools.image_backends("anything", "run") == {"python"}
    assert tools.image_tensorrt("anything", "run") is None
    server = tools.server(image="ignored", repository=tmp_path / "repo", models=["m"], run_id="r",
                          log_path=tmp_path / "server.log", gpus="none", shm_size="256m", ready_timeout_s=9.0)
    assert isinstance(server, LocalTritonServer) and server.gpu_indices == ["0"] and server.ready_timeout_s == 9.0
    assert (tmp_path / "ws" / "triton" / "backends" / "python" / STUB).is_file()
    perf = tools.perf(image="tritonclient", run_id="r", folder=tmp_path / "perf", settings=TritonSettings())
    assert isinstance(perf, GrpcLoad) and perf.folder == tmp_path / "perf" and perf.folder.is_dir()


class Notes:
    def __init__(self):
        self.lines: list[str] = []

    def stage(self, variant, stage, detail=""):
        self.lines.append(f"{variant}: {stage} {detail}")

    def note(self, text):
        self.lines.append(text)


def local_config(**triton) -> OptimizeConfig:
    return OptimizeConfig(model=parse_model(f"{EXAMPLES}/mlp.py:make_mlp", [], None), workspace="ws",
                          executor="local", python="/venv/bin/python", triton=triton)


def test_the_stage_tools_are_dockers_where_there_is_a_client(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "local_triton_for", lambda *a: pytest.fail("no local server with Docker"))
    tools = api.triton_stage_tools(object(), local_config(), [], Workspace(tmp_path / "ws"), Notes())
    assert tools is not None and tools.client == "perf_analyzer"


def test_the_local_stage_is_skipped_with_a_note_when_no_tritonserver_serves(tmp_path, monkeypatch):
    def none_here(python, given):
        assert (python, given) == ("/venv/bin/python", None)
        raise EnvironmentProblem("no tritonserver for the local Triton stage: install it")

    monkeypatch.setattr(api, "local_triton_for", none_here)
    notes = Notes()
    assert api.triton_stage_tools(None, local_config(), [], Workspace(tmp_path / "ws"), notes) is None
    assert notes.lines == ["Triton stage skipped: no tritonserver for the local Triton stage: install it"]


def test_a_named_tritonserver_that_cannot_serve_is_an_error(tmp_path, monkeypatch):
    def cannot(python, given):
        assert given == Path("/opt/tritonserver/bin/tritonserver")
        raise EnvironmentProblem(f"--tritonserver {given}: no such file")

    monkeypatch.setattr(api, "local_triton_for", cannot)
    with pytest.raises(EnvironmentProblem, match="no such file"):
        api.triton_stage_tools(None, local_config(tritonserver="/opt/tritonserver/bin/tritonserver"), [],
                               Workspace(tmp_path / "ws"), Notes())


def test_the_local_stage_serves_with_what_was_found(tmp_path, monkeypatch):
    triton = wheel_triton(tmp_path)
    monkeypatch.setattr(api, "local_triton_for", lambda python, given: (triton, serving()))
    notes = Notes()
    tools = api.triton_stage_tools(None, local_config(), ["2"], Workspace(tmp_path / "ws"), notes)
    assert tools is not None and tools.client == GRPC_CLIENT
    assert notes.lines == [f"triton: serving with {triton.binary}, measured with tritonclient over gRPC"]
    server = tools.server(image="", repository=tmp_path / "repo", models=["m"], run_id="r",
                          log_path=tmp_path / "server.log", gpus="none", shm_size="256m", ready_timeout_s=1.0)
    assert server.gpu_indices == ["2"] and server.backends == tmp_path / "ws" / "triton" / "backends"


# --- the gRPC load's arithmetic ----------------------------------------------------------------------

@pytest.mark.parametrize("throughputs, stable", [
    ([100.0, 104.0, 96.0], True),  # spread 8 % of the mean
    ([500.0, 10.0, 100.0, 105.0, 95.0], True),  # only the last three count
    ([100.0, 100.0, 111.0], False),  # 11 / 103.7 = 10.6 %
    ([100.0, 120.0, 100.0], False),
    ([100.0, 101.0], False),  # fewer than three windows
    ([], False),
    ([0.0, 0.0, 0.0], False),
])
def test_stable_tail_takes_three_windows_within_ten_percent(throughputs, stable):
    assert stable_tail(throughputs) is stable


def two_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"image": rng.standard_normal((3, 2, 4)).astype("float32"),
            "mask": rng.integers(0, 100, (3, 5)).astype("int64")}


def test_batched_requests_stack_the_samples_rows_to_the_batch_size_in_the_served_dtypes(tmp_path):
    samples = two_inputs()
    path = write_input_data(samples, ["INPUT__0", "INPUT__1"], True, tmp_path / "m-input.json")
    assert len(json.loads(path.read_text())["data"]) == 3
    arrays = requests_from(path, 5, {"INPUT__0": "FP16", "INPUT__1": "INT64"})
    assert sorted(arrays) == ["INPUT__0", "INPUT__1"]
    image, mask = arrays["INPUT__0"], arrays["INPUT__1"]
    assert image.shape == (5, 2, 4) and image.dtype == np.float16
    assert mask.shape == (5, 5) and mask.dtype == np.int64
    rows = [0, 1, 2, 0, 1]  # the samples' rows, repeated to the batch size
    np.testing.assert_array_equal(image, samples["image"][rows].astype(np.float16))
    np.testing.assert_array_equal(mask, samples["mask"][rows])
    one = requests_from(path, 1, {"INPUT__0": "FP32", "INPUT__1": "INT32"})
    assert one["INPUT__0"].shape == (1, 2, 4) and one["INPUT__1"].dtype == np.int32
    np.testing.assert_array_equal(one["INPUT__0"], samples["image"][:1])


def test_unbatched_requests_are_the_whole_sample(tmp_path):
    samples = two_inputs()
    path = write_input_data(samples, ["image", "mask"], False, tmp_path / "m-input.json")
    arrays = requests_from(path, None, {"image": "FP32", "mask": "INT64"})
    assert arrays["image"].shape == (3, 2, 4) and arrays["mask"].shape == (3, 5)
    np.testing.assert_array_equal(arrays["image"], samples["image"])
    np.testing.assert_array_equal(arrays["mask"], samples["mask"])
