"""`--gpus` values and nvidia-smi's output, on the host and in the runners (no GPU, no nvidia-smi)."""
from __future__ import annotations

import pytest

from orchestrator.containers.engine import gpu_requests
from orchestrator.containers.gpus import GpuRequest, HostGpu, host_gpus, resolve_gpus, select_gpus
from orchestrator.errors import BadInput, EnvironmentProblem
from runners import nvidia_smi
from runners.common import gpu_info
from runners.protocol import GpuInfo

H100 = "NVIDIA H100 80GB HBM3"
TWO_GPUS = [HostGpu("0", H100, "GPU-aaaa", "580.95.05"), HostGpu("1", H100, "GPU-bbbb", "580.95.05")]


class FakeSmi:
    """nvidia-smi as a function: records each command, answers with `out`."""

    def __init__(self, out):
        self.out = out
        self.commands: list[list[str]] = []

    def __call__(self, argv):
        self.commands.append(list(argv))
        return self.out


@pytest.mark.parametrize("text, request_", [
    ("all", GpuRequest(all=True)),
    (" 2 ", GpuRequest(count=2)),
    ("device=0,2", GpuRequest(devices=("0", "2"))),
    ("device=GPU-aaaa", GpuRequest(devices=("GPU-aaaa",))),
    ("none", GpuRequest()),
    ("", GpuRequest()),
    ("0", GpuRequest()),
])
def test_docker_syntax_parses_once_into_a_request(text, request_):
    parsed = GpuRequest.parse(text)
    assert parsed == request_
    assert GpuRequest.parse(str(parsed)) == parsed  # str() gives Docker's syntax back


@pytest.mark.parametrize("text", ["two", "device=", "device=0,", "-1", "²", "gpu=0"])
def test_anything_else_is_bad_input(text):
    with pytest.raises(BadInput, match="not docker's syntax"):
        GpuRequest.parse(text)


def test_device_requests_come_from_the_parsed_request():
    assert gpu_requests("none") == gpu_requests("0") == []
    (every,) = gpu_requests("all")
    assert every["Count"] == -1 and every["Capabilities"] == [["gpu"]]
    assert gpu_requests("2")[0]["Count"] == 2
    assert gpu_requests("device=0, 2")[0]["DeviceIDs"] == ["0", "2"]
    with pytest.raises(BadInput):
        gpu_requests("device=")


def test_indices_come_from_the_same_request():
    assert select_gpus("all", TWO_GPUS) == ["0", "1"]
    assert select_gpus(GpuRequest(count=1), TWO_GPUS) == ["0"]
    assert select_gpus("device=1,0", TWO_GPUS) == ["1", "0"]
    assert select_gpus("device=GPU-bbbb", TWO_GPUS) == ["1"]  # a UUID, as Docker takes it
    assert select_gpus("none", []) == []


@pytest.mark.parametrize("text, available, message", [
    ("3", TWO_GPUS, "--gpus 3: this host has only 2 GPU"),
    ("device=0,7", TWO_GPUS, r"--gpus device=0,7: no GPU 7 on this host \(it has 0, 1\)"),
    ("all", [], "--gpus all: this host has no NVIDIA GPU"),
])
def test_gpus_the_host_lacks_are_an_environment_problem(text, available, message):
    with pytest.raises(EnvironmentProblem, match=message):
        select_gpus(text, available)


def test_the_cli_checks_and_normalizes_gpus():
    assert resolve_gpus(" device=0 ", "25.10") == "device=0"
    assert resolve_gpus("auto", "25.10", driver_loaded=lambda: True) == "all"
    assert resolve_gpus("auto", "25.10", driver_loaded=lambda: False) == "none"
    assert resolve_gpus("auto", "cpu", driver_loaded=lambda: True) == "none"
    with pytest.raises(BadInput):
        resolve_gpus("many", "cpu")


def test_host_gpus_ask_only_for_what_every_driver_knows():
    smi = FakeSmi("0, NVIDIA H100 80GB HBM3, GPU-aaaa, 580.95.05\n1, NVIDIA H100 80GB HBM3, GPU-bbbb, 580.95.05\n")
    assert host_gpus(smi) == TWO_GPUS
    assert smi.commands == [["nvidia-smi", "--query-gpu=index,name,uuid,driver_version",
                             "--format=csv,noheader,nounits"]]


@pytest.mark.parametrize("out", [None, "", "No devices were found\n"])
def test_no_nvidia_smi_or_no_devices_means_no_gpus(out):
    assert host_gpus(FakeSmi(out)) == []
    assert gpu_info({}, FakeSmi(out)) is None


def test_a_runner_reads_the_first_visible_gpu_with_its_clocks():
    smi = FakeSmi("2, NVIDIA H100 80GB HBM3, GPU-cccc, 580.95.05, 9.0, 1980, 2619, [N/A]\n")
    info = gpu_info({"CUDA_VISIBLE_DEVICES": "GPU-cccc,GPU-dddd"}, smi)
    assert info == GpuInfo(H100, "GPU-cccc", "580.95.05", "9.0", 1980, 2619, None)
    (command,) = smi.commands
    assert command[-2:] == ["-i", "GPU-cccc"]
    assert command[1] == ("--query-gpu=index,name,uuid,driver_version,compute_cap,clocks.sm,clocks.mem,"
                          "clocks.max.sm")
    gpu_info({}, smi)
    assert smi.commands[-1][-2:] == ["-i", "0"]  # no CUDA_VISIBLE_DEVICES: the container's first GPU


def test_rows_of_another_width_are_skipped():
    text = "0, A, GPU-a, 580\nWARNING: infoROM is corrupted at gpu 0000:01:00.0\n1, B, GPU-b, 580\n"
    assert [gpu.name for gpu in nvidia_smi.parse_csv(text, nvidia_smi.HOST_FIELDS)] == ["A", "B"]
