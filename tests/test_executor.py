import signal

from orchestrator.run.executor import Executor, Exit, Mounts, describe_exit
from orchestrator.run.workspace import Workspace
from runners.contract.protocol import RESULT_FILE, Job, JobInputs, JobResult, to_json


def test_mount_plan_reuses_writable_folders_for_later_inputs(tmp_path):
    variant = tmp_path / "variants" / "onnx"
    variant.mkdir(parents=True)
    samples = tmp_path / "reference" / "samples.npz"
    samples.parent.mkdir()
    samples.write_bytes(b"x")
    table = Mounts()
    out = table.writable(variant)
    # The artifact does not exist yet: it resolves inside the writable mount.
    assert table.readable(variant / "model.onnx") == f"{out}/model.onnx"
    inside = table.readable(samples)
    assert inside.endswith("/samples.npz")
    mounts = {m.target: m for m in table.mounts}
    assert mounts[out].read_only is False
    assert mounts[inside.rsplit("/", 1)[0] + "/samples.npz"].read_only is True
    assert table.readable(samples) == inside  # mounted once


def test_exit_reasons_are_one_line():
    assert describe_exit(Exit(code=-signal.SIGKILL, timed_out=True), 30) == "timed out after 30 s"
    assert describe_exit(Exit(code=137, oom_killed=True), 30).startswith("out of memory")
    assert describe_exit(Exit(code=139), 30) == "runner died on SIGSEGV"
    assert describe_exit(Exit(code=-11), 30) == "runner died on SIGSEGV"
    assert describe_exit(Exit(code=3), 30) == "runner exited with code 3 before writing a result"
    assert describe_exit(Exit(code=0), 30) == "runner wrote no result"


class FakeProcess:
    """Writes the results it is given, then exits with `code` (or never, to time out)."""

    def __init__(self, workspace, results, code):
        self.workspace, self.results, self.code, self.stopped = workspace, results, code, False

    def poll(self):
        for result in self.results:
            (self.workspace.job_dir(result.job_id) / RESULT_FILE).write_text(to_json(result))
        return None if self.code is None else Exit(code=self.code)

    def stop(self):
        self.stopped = True

    def output(self):
        return "runner output\n"


class FakeExecutor(Executor):
    def __init__(self, workspace, results, code, timeout_s=60):
        super().__init__(workspace, timeout_s)
        self.process = FakeProcess(workspace, results, code)

    def start(self, name, image, jobs, gpu):
        return self.process


def jobs(tmp_path):
    return [Job(id=f"j{i}", kind="verify", runner="onnx", output_dir=str(tmp_path / "ws" / "jobs" / f"j{i}"))
            for i in range(2)]


def test_jobs_without_result_fail_with_the_reason(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    seen = []
    executor = FakeExecutor(workspace, [JobResult("j0", "verify", "ok")], code=139)
    results = executor.run("session", "image", jobs(tmp_path), seen.append)
    assert results["j0"].status == "ok"
    assert results["j1"].status == "failed"
    assert results["j1"].error.startswith("runner died on SIGSEGV")
    assert [r.job_id for r in seen] == ["j0", "j1"]
    assert (workspace.logs / "session.log").read_text() == "runner output\n"
    assert executor.process.stopped


def test_a_hanging_session_times_out(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    executor = FakeExecutor(workspace, [], code=None, timeout_s=0.2)
    results = executor.run("session", "image", jobs(tmp_path), lambda r: None)
    assert {r.error.split(" (")[0] for r in results.values()} == {"timed out after 0 s"}


def test_an_invalid_result_file_is_a_failure(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()

    class Garbage(FakeProcess):
        def poll(self):
            (workspace.job_dir("j0") / RESULT_FILE).write_text('{"job_id": "j0", "status": 5}')
            return Exit(code=0)

    executor = FakeExecutor(workspace, [], code=0)
    executor.process = Garbage(workspace, [], 0)
    results = executor.run("session", "image", jobs(tmp_path)[:1], lambda r: None)
    assert results["j0"].status == "failed" and "invalid result" in results["j0"].error


# --- runner output is untrusted ------------------------------------------------------------------

def test_an_artifact_path_outside_the_job_folder_fails_the_job(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    for artifact in ("../../../etc/passwd", "/etc/passwd", "a/../../b"):
        executor = FakeExecutor(workspace, [JobResult("j0", "export", "ok", artifact=artifact)], code=0)
        result = executor.run("session", "image", jobs(tmp_path)[:1], lambda r: None)["j0"]
        assert result.status == "failed"
        assert result.error.startswith("runner output not trusted: the artifact path"), result.error


def test_an_oversized_result_fails_the_job_unread(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()

    class Huge(FakeProcess):
        def poll(self):
            (workspace.job_dir("j0") / RESULT_FILE).write_text(to_json(JobResult("j0", "verify", "ok"))
                                                               + " " * (2 << 20))
            return Exit(code=0)

    executor = FakeExecutor(workspace, [], code=0)
    executor.process = Huge(workspace, [], 0)
    result = executor.run("session", "image", jobs(tmp_path)[:1], lambda r: None)["j0"]
    assert result.status == "failed"
    assert "jobs/j0/result.json is 2.0 MiB (limit 1.0 MiB)" in result.error


def test_a_link_left_behind_fails_the_job_and_is_removed(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    output = workspace.variant_dir("onnx-fp32")

    class LeavesALink(FakeProcess):
        def poll(self):
            (workspace.job_dir("j0") / RESULT_FILE).write_text(to_json(JobResult("j0", "export", "ok",
                                                                                 artifact="model.onnx")))
            (output / "model.onnx").symlink_to(secret)
            return Exit(code=0)

    executor = FakeExecutor(workspace, [], code=0)
    executor.process = LeavesALink(workspace, [], 0)
    seen = []
    job = Job(id="j0", kind="export", runner="torch", output_dir=str(output))
    result = executor.run("session", "image", [job], seen.append)["j0"]
    assert result.status == "failed"
    assert result.error == ("runner output not trusted: variants/onnx-fp32/model.onnx is a symbolic link (removed)")
    assert [r.status for r in seen] == ["ok", "failed"]  # reported, then failed once the runner was gone
    assert not (output / "model.onnx").is_symlink() and secret.read_text() == "host secret"


def test_an_input_a_runner_turned_into_a_link_is_refused_before_the_session(tmp_path):
    workspace = Workspace(tmp_path / "ws").create()
    (workspace.variant_dir("onnx-fp32") / "model.onnx").symlink_to(tmp_path / "secret.txt")
    executor = FakeExecutor(workspace, [JobResult("j1", "verify", "ok")], code=0)
    started = []
    executor.start = lambda *args: started.append(args) or executor.process
    profile = Job(id="j0", kind="profile", runner="onnx", output_dir=str(workspace.job_dir("j0")),
                  inputs=JobInputs(artifact=str(workspace.variants / "onnx-fp32" / "model.onnx")))
    other = Job(id="j1", kind="verify", runner="onnx", output_dir=str(workspace.job_dir("j1")))
    results = executor.run("session", "image", [profile, other], lambda r: None)
    assert results["j0"].status == "failed"
    assert results["j0"].error == "runner output not trusted: variants/onnx-fp32/model.onnx is a symbolic link"
    assert results["j1"].status == "ok"
    assert [job.id for job in started[0][2]] == ["j1"]  # the refused job never reached a runner


# --- the local executor's Python ---------------------------------------------------------------------

def bare_python(tmp_path):
    import subprocess
    import sys
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv


def test_a_local_python_without_the_framework_is_refused_up_front(tmp_path):
    import subprocess
    import sys

    import pytest

    from orchestrator.errors import EnvironmentProblem
    from orchestrator.run.executor import probe_python

    python = str(bare_python(tmp_path) / "bin" / "python")
    with pytest.raises(EnvironmentProblem, match="cannot import numpy, torch, which the torch runner needs"):
        probe_python(python, "torch")
    run = subprocess.run([sys.executable, "-m", "orchestrator.cli", "optimize", "examples/mlp.py:make_mlp",
                          "--input", "input:2,64:float32", "--executor", "local", "--python", python,
                          "--workspace", str(tmp_path / "ws"), "--progress", "plain"],
                         capture_output=True, text=True, cwd=__import__("conftest").ROOT, timeout=120)
    assert run.returncode == 3
    assert run.stderr.count("\n") == 1 and "cannot import numpy, torch" in run.stderr
    assert "scripts/runners_venv.py" in run.stderr and "Traceback" not in run.stderr


def test_the_local_pythons_packages_are_part_of_its_key(tmp_path):
    from orchestrator.run.executor import probe_python

    venv = bare_python(tmp_path)
    python = str(venv / "bin" / "python")
    (site,) = venv.glob("lib/python3.*/site-packages")
    for module in ("numpy", "torch"):  # importable stand-ins: the probe only looks them up
        (site / module).mkdir()
        (site / module / "__init__.py").write_text("")
    first = probe_python(python, "torch").packages
    assert probe_python(python, "torch").packages == first
    info = site / "torch-2.13.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n")
    upgraded = probe_python(python, "torch").packages
    assert upgraded != first
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.14.0\n")
    assert probe_python(python, "torch").packages not in (first, upgraded)


def test_the_rerun_command_has_the_same_sandbox_mounts_and_limits(tmp_path):
    from pathlib import Path

    from orchestrator.containers import engine

    spec = engine.ContainerSpec(image="nav-orch/pytorch:cpu",
                                command=["python", "-m", "runners.harness.main", "/nav/io/1/job.json"],
                                mounts=[engine.Mount(Path("/ws/jobs/j"), "/nav/io/1", read_only=False),
                                        engine.Mount(Path("/home/me/model"), "/nav/io/2", read_only=True)],
                                labels={engine.RUN_LABEL: "run"}, environment={"PYTHONPATH": "/nav/code"},
                                gpus="device=1", memory="8g", pids=4096)
    command = engine.docker_run_command(spec)
    assert command[:3] == ["docker", "run", "--rm"]
    joined = " ".join(command)
    for part in ("--network none", f"--user {engine.container_user()}", "--read-only", "--cap-drop ALL",
                 "--security-opt no-new-privileges", "--tmpfs /tmp:rw,exec,size=2g", "--pids-limit 4096",
                 "--memory 8g", "--gpus device=1", "--env HOME=/tmp", "--env PYTHONPATH=/nav/code",
                 "--volume /ws/jobs/j:/nav/io/1:rw", "--volume /home/me/model:/nav/io/2:ro", "--init"):
        assert part in joined, part
    assert command[-5:] == ["nav-orch/pytorch:cpu", "python", "-m", "runners.harness.main", "/nav/io/1/job.json"]
