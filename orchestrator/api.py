"""The Python API: `optimize(config)` runs the whole pipeline and returns its results."""
from __future__ import annotations

import platform
import sys
import uuid
from typing import Literal, Optional

import numpy as np

from orchestrator import __version__, cache, docker_engine
from orchestrator.errors import BadInput, EnvironmentProblem, NavOrchError
from orchestrator.executor import DockerExecutor, Executor, LocalExecutor, check_readable_by_runner
from orchestrator.gpus import host_gpus, select_gpus
from orchestrator.images import image_for
from orchestrator.models import Environment, ImageRecord, OptimizeConfig, RunResults
from orchestrator.pipeline import REFERENCE, Pipeline, ReferenceFailed, Reporter
from orchestrator.samples import load_samples, random_samples, write_samples
from orchestrator.triton_stage import run_triton_stage
from orchestrator.workspace import Workspace

ExecutorKind = Literal["docker", "local"]


class SilentReporter:
    def stage(self, variant: str, stage: str, detail: str = "") -> None:
        pass

    def note(self, text: str) -> None:
        pass


def prepare_samples(config: OptimizeConfig) -> dict[str, np.ndarray]:
    if config.samples is not None:
        return load_samples(config.samples)
    if config.inputs:
        return random_samples(config.inputs, config.seed)
    raise BadInput("no samples: pass --samples FILE.npz or --input NAME:SHAPE:DTYPE for each model input")


def profile(config: OptimizeConfig, reporter: Optional[Reporter] = None, executor: ExecutorKind = "docker",
            python: Optional[str] = None, force: bool = False) -> RunResults:
    """Profile a Python callable (`config.model.kind == "function"`) on the samples: the optimize
    run with one profile-only variant, `python-function`, and no Triton stage (a bare function
    has no model to serve). Its best is that variant when the function ran, else None."""
    if config.model.kind != "function":
        raise BadInput(f"profile takes a file.py:function, not a {config.model.kind} model (use optimize)")
    config = config.model_copy(update={"triton": config.triton.model_copy(update={"enabled": False})})
    return optimize(config, reporter, executor, python, force)


def optimize(config: OptimizeConfig, reporter: Optional[Reporter] = None, executor: ExecutorKind = "docker",
             python: Optional[str] = None, force: bool = False) -> RunResults:
    """Export, verify, profile and select; results.json is kept up to date in the workspace.

    Jobs finished earlier in the same workspace under the same content key are reused
    unless `force`. Raises BadInput when the source model cannot run on the samples and EnvironmentProblem
    when Docker or the image is missing; KeyboardInterrupt leaves results marked interrupted.
    """
    reporter = reporter or SilentReporter()
    workspace = Workspace(config.workspace).create()
    arrays = prepare_samples(config)
    gpus = select_gpus(config.gpus, host_gpus())
    samples = write_samples(arrays, workspace.inputs / "samples.npz")
    tag = image_for(config.model.framework, config.images)
    environment = Environment(nav_orch=__version__, host_python=platform.python_version())
    run_id = uuid.uuid4().hex[:12]
    client = None
    if executor == "docker":
        client = docker_engine.connect()
        environment.docker = docker_engine.engine_version(client)
        info = docker_engine.inspect_image(client, tag)
        if info is None:
            build = ("--flavor cpu" if config.images == "cpu"
                     else f"--flavor cuda --set NGC_RELEASE={config.images}")
            raise EnvironmentProblem(f"image {tag} is not built: run `nav-orch images build {build}`")
        image = ImageRecord(tag=tag, id=info.id, labels=info.labels)
        # The model's folder is what gets mounted; the file in it must be readable too.
        check_readable_by_runner(config.model.path)
        runner: Executor = DockerExecutor(workspace, config.job_timeout_s, client, run_id,
                                          config.memory, config.pids)
    else:
        python = python or sys.executable
        image = ImageRecord(tag="local", id=python)
        runner = LocalExecutor(workspace, config.job_timeout_s, python)
    environment.images.append(image)
    results = RunResults(environment=environment)
    base_key = cache.base_key(config.model.path, arrays, image.id)
    pipeline = Pipeline(config, workspace, runner, image, reporter, results, base_key, gpus, force)
    try:
        pipeline.execute(samples)
        if client is not None:  # the Triton stage; its failures are recorded, never raised
            run_triton_stage(client, workspace, results, pipeline.io, run_id, config, gpus, reporter, pipeline.save)
        elif config.triton.enabled:
            reporter.note("Triton stage skipped: it needs Docker (--executor docker)")
        return results
    except ReferenceFailed as error:
        results.state, results.error = "failed", f"the source model failed on the samples: {error}"
        details = "" if "(log:" in str(error) else f" (traceback: {workspace.jobs / REFERENCE / 'runner.log'})"
        raise BadInput(results.error + details) from None
    except KeyboardInterrupt:
        results.state = "interrupted"
        raise
    except NavOrchError as error:
        results.state, results.error = "failed", str(error)
        raise
    finally:
        if results.state == "running":
            results.state = "failed"
        pipeline.save()
        if client is not None:
            docker_engine.remove_labelled(client, run_id)
