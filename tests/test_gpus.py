"""`--gpus` values and nvidia-smi's output, on the host and in the runners (no GPU, no nvidia-smi)."""
from __future__ import annotations

import pytest

from orchestrator.containers.engine import ContainerSpec, docker_run_command, gpu_requests
from orchestrator.containers.gpus import GpuRequest, HostGpu, docker_gpus, host_gpus, resolve_gpus, select_gpus
from orchestrator.errors import BadInput, EnvironmentProblem
from runners.contract import nvidia_smi
from runners.contract.protocol import GpuInfo
from runners.harness.common import gpu_info

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
    # Docker's documented forms (docker/cli opts/gpus.go reads the value as one CSV record).
    ('"device=0,2"', GpuRequest(devices=("0", "2"))),
    (' "device=0, 2" ', GpuRequest(devices=("0", "2"))),
    ("count=2", GpuRequest(count=2)),
    ("count=all", GpuRequest(all=True)),
    ("count=0,capabilities=utility", GpuRequest()),
    ("all,capabilities=utility", GpuRequest(all=True, capabilities=("utility",))),
    ('2,"capabilities=compute,utility"', GpuRequest(count=2, capabilities=("compute", "utility"))),
    ('"device=0,2",capabilities=compute,driver=nvidia',
     GpuRequest(devices=("0", "2"), capabilities=("compute",), driver="nvidia")),
    ('"options=mode=fast,debug",count=1', GpuRequest(count=1, options=(("mode", "fast"), ("debug", "")))),
    # Without a count or devices Docker asks for one GPU.
    ("capabilities=utility", GpuRequest(count=1, capabilities=("utility",))),
    ("driver=nvidia", GpuRequest(count=1, driver="nvidia")),
    # Unquoted lists Docker would refuse: a bare item continues the list, unless it is a count.
    ("capabilities=compute,utility", GpuRequest(count=1, capabilities=("compute", "utility"))),
    ("capabilities=compute,2", GpuRequest(count=2, capabilities=("compute",))),
])
def test_docker_syntax_parses_once_into_a_request(text, request_):
    parsed = GpuRequest.parse(text)
    assert parsed == request_
    assert GpuRequest.parse(str(parsed)) == parsed  # str() gives Docker's syntax back


@pytest.mark.parametrize("text, reason", [
    ("two", "count 'two' is neither all nor a whole number"),
    ("-1", "count '-1' is neither"),
    ("²", "neither all nor a whole number"),
    ("device=", "an empty device"),
    ("device=0,", "an empty device"),
    ("gpu=0", "unknown key 'gpu'"),
    ("count=2,device=0", "count and device exclude each other"),
    ("device=0,device=1", "device given twice"),
    ("2,count=3", "count given twice"),
    ('"device=0,2', "unbalanced quotes"),
    ('device="0"', "a quote inside"),
    ("capabilities=", "an empty capabilities"),
])
def test_anything_else_is_one_line_of_bad_input(text, reason):
    with pytest.raises(BadInput) as caught:
        GpuRequest.parse(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--gpus {text!r} is not docker's syntax: ")
    assert reason in message and "; use all, a count, device=0,2" in message


def test_device_requests_come_from_the_parsed_request():
    assert gpu_requests("none") == gpu_requests("0") == gpu_requests("count=0") == []
    (every,) = gpu_requests("all")
    assert every["Count"] == -1 and every["Capabilities"] == [["gpu"]] and every["DeviceIDs"] == []
    assert gpu_requests("2")[0]["Count"] == 2
    assert gpu_requests("device=0, 2")[0]["DeviceIDs"] == ["0", "2"]
    with pytest.raises(BadInput):
        gpu_requests("device=")


def test_device_requests_carry_what_docker_cli_would_send():
    # As docker/cli's GpuOpts.Set: "gpu" added to the capabilities, devices without a count.
    (quoted,) = gpu_requests('"device=0,2",capabilities=compute,driver=nvidia')
    assert quoted == {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "2"],
                      "Capabilities": [["compute", "gpu"]], "Options": {}}
    (counted,) = gpu_requests('count=2,"capabilities=compute,utility","options=mode=fast"')
    assert counted == {"Driver": "", "Count": 2, "DeviceIDs": [], "Capabilities": [["compute", "utility", "gpu"]],
                       "Options": {"mode": "fast"}}
    assert gpu_requests("capabilities=gpu,utility")[0]["Capabilities"] == [["gpu", "utility"]]
    assert gpu_requests("driver=nvidia")[0]["Count"] == 1  # Docker's default


def test_docker_run_command_passes_a_device_list_quoted():
    def gpus_argument(gpus: str) -> list[str]:
        args = docker_run_command(ContainerSpec(image="i", command=["c"], mounts=[], labels={}, gpus=gpus))
        return [args[i + 1] for i, arg in enumerate(args) if arg == "--gpus"]

    # Unquoted, Docker's CLI would read device=0,2 as device 0 and a count of 2, which its daemon refuses.
    assert gpus_argument("device=0,2") == ['"device=0,2"']
    assert gpus_argument("device=1") == ["device=1"]
    assert gpus_argument("all,capabilities=compute,utility") == ['all,"capabilities=compute,utility"']
    assert gpus_argument("none") == []


def test_indices_come_from_the_same_request():
    assert select_gpus("all", TWO_GPUS) == ["0", "1"]
    assert select_gpus(GpuRequest(count=1), TWO_GPUS) == ["0"]
    assert select_gpus("device=1,0", TWO_GPUS) == ["1", "0"]
    assert select_gpus("device=GPU-bbbb", TWO_GPUS) == ["1"]  # a UUID, as Docker takes it
    assert select_gpus("none", []) == []
    assert select_gpus('"device=1,0",capabilities=compute', TWO_GPUS) == ["1", "0"]
    assert select_gpus("count=2", TWO_GPUS) == ["0", "1"]
    assert select_gpus("capabilities=utility", TWO_GPUS) == ["0"]  # Docker's default count of one


@pytest.mark.parametrize("text, available, message", [
    ("3", TWO_GPUS, "--gpus 3: this host has only 2 GPU"),
    ("device=0,7", TWO_GPUS, r'--gpus "device=0,7": no GPU 7 on this host \(it has 0, 1\)'),
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


def test_containers_get_their_placed_gpus_with_the_users_capabilities_driver_and_options():
    narrowed = docker_gpus("count=2,capabilities=compute,driver=nvidia", ["3"])
    assert narrowed == "device=3,capabilities=compute,driver=nvidia"
    assert docker_gpus('"device=0,2",capabilities=compute', ["0", "2"]) == '"device=0,2",capabilities=compute'
    assert docker_gpus("all", ["1"]) == "device=1" and docker_gpus("auto", ["1"]) == "device=1"
    assert docker_gpus("all", []) == "none"
