"""A zoo on a Ray cluster: one Ray task per model, each running the normal single-host pipeline
on its node with that node's Docker and images (orchestrator/zoo/task.py).

- Before any model starts, a preflight task on every node checks its Docker daemon, the images
  the zoo needs (built there with --build-images) and its GPUs.
- A task requests the GPUs its model asks for; Ray runs it again elsewhere when its node dies
  (`max_retries`), and a tracker actor on the driver's node counts the attempts, so the zoo says so.
- Without a shared filesystem the model's folder and samples travel to the node, and the
  workspace comes back, through Ray's object store as archives; with `results_dir` (shared by every
  node) the runs read and write their paths as they are.
- Ctrl-C or SIGTERM cancels every task: each task stops its run with SIGTERM, which removes its
  containers on its node.

`ray` is imported only here, only for `nav-orch zoo --ray` (the `nav-orch[ray]` extra).
"""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from orchestrator.config import OptimizeConfig
from orchestrator.containers.images import CPU_RELEASE, image_for
from orchestrator.errors import EnvironmentProblem
from orchestrator.triton.stage import triton_images
from orchestrator.zoo.outcome import ZooEntry, ZooResults, entry_for
from orchestrator.zoo.spec import ZooModel
from orchestrator.zoo.task import last_line, last_nonempty, pack, run_optimize, unpack

MAX_RETRIES = 2  # a task runs up to 3 times: its node lost twice is a cluster problem, not the model's


def needed_images(models: list[ZooModel]) -> dict[str, str]:
    """Each image tag the zoo's runs use on a node, with the release it belongs to."""
    tags: dict[str, str] = {}
    for model in models:
        config = model.config
        if config.python is not None:  # the local executor needs no image
            continue
        tags[image_for(config.model.framework, config.images)] = config.images
        if config.triton.enabled:
            tags.update({tag: config.images for tag in triton_images(config.images)})
    return tags


def build_command(release: str) -> list[str]:
    flavor = ["--flavor", "cpu"] if release == CPU_RELEASE else ["--flavor", "cuda", "--set", f"NGC_RELEASE={release}"]
    return [sys.executable, "-m", "orchestrator.cli", "images", "build", *flavor]


# --- what runs on the nodes ---------------------------------------------------------------------

def check_node(images: dict[str, str], build: bool) -> dict[str, Any]:
    """Preflight on one node: its Docker daemon, the images (built where missing with `build`), its GPUs."""
    from orchestrator.containers import engine
    from orchestrator.containers.gpus import host_gpus

    report: dict[str, Any] = {"node": node_address(), "gpus": len(host_gpus())}
    if not images:
        return report
    try:
        client = engine.connect()
        report["docker"] = engine.engine_version(client)
    except Exception as error:  # noqa: BLE001 - whatever Docker says is the node's report
        report["error"] = f"Docker: {error}"
        return report
    missing = [tag for tag in images if engine.inspect_image(client, tag) is None]
    for release in sorted({images[tag] for tag in missing}) if build else []:
        built = subprocess.run(build_command(release), capture_output=True, text=True)
        if built.returncode != 0:
            report["error"] = f"building the {release} images failed: {last_nonempty(built.stderr, 300)}"
            return report
    report["missing"] = [tag for tag in missing if engine.inspect_image(client, tag) is None]
    return report


def node_address() -> str:
    """This Ray node as the zoo names it: its address and the start of its ID (nodes may share a host)."""
    try:
        import ray

        return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"
    except Exception:  # noqa: BLE001 - outside a Ray worker: the host's name
        return socket.gethostname()


def optimize_on_node(name: str, config_json: str, inputs: Optional[dict[str, bytes]], tracker: Any) -> dict[str, Any]:
    """One model's optimize on this node. `inputs`: the model folder, samples and calibration as
    archives/bytes (None: the paths are on a shared filesystem). Returns the exit code, the log's
    last line, this node, the attempt, and the workspace as an archive (None when shared)."""
    import ray

    node = node_address()
    attempt = ray.get(tracker.started.remote(name, node))
    config = OptimizeConfig.model_validate_json(config_json)
    gpu_ids = [str(int(i)) for i in ray.get_gpu_ids()]
    # The GPUs Ray gave this task, as nvidia-smi indices (Ray hands out the node's own GPU ids).
    config = config.model_copy(update={"gpus": f"device={','.join(gpu_ids)}" if gpu_ids else "none"})
    with tempfile.TemporaryDirectory(prefix=f"nav-orch-zoo-{name}-") as scratch:
        here = Path(scratch)
        if inputs is not None:
            config = localize(config, inputs, here, name)
        log = config.workspace.parent / f"{name}.log"
        code = run_optimize(config, log)
        archive = pack(config.workspace) if inputs is not None else None
        return {"code": code, "line": last_line(log), "node": node, "attempt": attempt, "archive": archive,
                "log": log.read_bytes() if inputs is not None and log.is_file() else None}


def shipped_inputs(config: OptimizeConfig, earlier: Path) -> dict[str, bytes]:
    """What a node without the submitter's filesystem needs: the model's folder (its runners mount
    it: a factory's sibling modules import), the samples and the calibration file, and the
    model's workspace from an earlier zoo run (`earlier`, where it exists), whose finished jobs the
    run reuses by their content keys."""
    shipped = {"model": pack(config.model.path.parent)}
    if (earlier / "results.json").is_file():
        shipped["workspace"] = pack(earlier)
    if config.samples is not None:
        shipped["samples"] = config.samples.read_bytes()
    if config.calibration is not None:
        shipped["calibration"] = config.calibration.read_bytes()
    return shipped


def localize(config: OptimizeConfig, inputs: dict[str, bytes], here: Path, name: str) -> OptimizeConfig:
    """`config` with its paths in `here`, where `inputs` are unpacked."""
    unpack(inputs["model"], here / "model")
    if "workspace" in inputs:
        unpack(inputs["workspace"], here / "zoo" / name)
    model = config.model.model_copy(update={"path": here / "model" / config.model.path.name})
    update: dict[str, Any] = {"model": model, "workspace": here / "zoo" / name}
    for key in ("samples", "calibration"):
        if key in inputs:
            (here / f"{key}.npz").write_bytes(inputs[key])
            update[key] = here / f"{key}.npz"
    return config.model_copy(update=update)


class Tracker:
    """On the driver's node: each model's attempts and nodes, so the zoo can say when one was retried."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[str]] = {}
        self.events: list[str] = []

    def started(self, name: str, node: str) -> int:
        nodes = self.attempts.setdefault(name, [])
        nodes.append(node)
        if len(nodes) > 1:
            self.events.append(f"{name}: started again on {node} (attempt {len(nodes)}; "
                               f"its node {nodes[-2]} was lost)")
        return len(nodes)

    def attempts_of(self, name: str) -> int:
        return len(self.attempts.get(name, []))

    def take_events(self) -> list[str]:
        events, self.events = self.events, []
        return events


# --- the driver -----------------------------------------------------------------------------------

def run_on_ray(models: list[ZooModel], folder: Path, address: str, results_dir: Optional[Path], build_images: bool,
               cpus_per_model: float, results: ZooResults, say: Callable[[str], None],
               on_done: Callable[[ZooEntry], None]) -> None:
    """Run every model as a Ray task on the cluster at `address`; entries go into `results`."""
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise EnvironmentProblem("--ray needs Ray: pip install 'nav-orch[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise EnvironmentProblem(f"--ray {address}: no Ray cluster answers ({error}); start one with "
                                     "`ray start --head` or give its address") from None
    preflight(models, build_images, say, ray, NodeAffinitySchedulingStrategy)
    driver_node = ray.get_runtime_context().get_node_id()
    tracker: Any = ray.remote(Tracker).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False)).remote()
    task = ray.remote(optimize_on_node)
    pending: dict[Any, tuple[ZooModel, float]] = {}
    for model in models:
        config = model.config
        if results_dir is not None:
            config = config.model_copy(update={"workspace": results_dir / model.name})
        inputs = None if results_dir is not None else shipped_inputs(config, folder / model.name)
        ref = task.options(num_cpus=cpus_per_model, num_gpus=model.gpus, max_retries=MAX_RETRIES,
                           retry_exceptions=False).remote(model.name, config.model_dump_json(), inputs, tracker)
        pending[ref] = (model, time.monotonic())
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for line in ray.get(tracker.take_events.remote()):
                say(line)
            for ref in done:
                model, start = pending.pop(ref)
                entry = collect(ray, ref, model, folder, results_dir, time.monotonic() - start, tracker)
                results.models.append(entry)
                on_done(entry)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)  # raises KeyboardInterrupt in the task: its run stops and removes its containers
        ray.wait(list(pending), num_returns=len(pending), timeout=120)
        raise


def collect(ray: Any, ref: Any, model: ZooModel, folder: Path, results_dir: Optional[Path], wall_s: float,
            tracker: Any) -> ZooEntry:
    """A finished task's entry; its workspace unpacked into the zoo's folder where it came as an archive."""
    try:
        outcome = ray.get(ref)
    except Exception as error:  # noqa: BLE001 - a task that failed for good (its nodes lost) is its model's entry
        attempts = ray.get(tracker.attempts_of.remote(model.name))
        return ZooEntry(name=model.name, status="failed", workspace=model.name, attempts=max(1, attempts),
                        error=f"the task failed on the cluster: {type(error).__name__}: {str(error).splitlines()[0]}",
                        wall_s=wall_s)
    workspace = folder / model.name
    if outcome["archive"] is not None:
        unpack(outcome["archive"], workspace)
        if outcome["log"] is not None:
            (folder / f"{model.name}.log").write_bytes(outcome["log"])
    elif results_dir is not None and results_dir.resolve() != folder.resolve():
        workspace = results_dir / model.name
    entry = entry_for(model.name, workspace, outcome["code"], outcome["line"], outcome["node"], outcome["attempt"],
                      wall_s)
    return entry.model_copy(update={"workspace": str(workspace.relative_to(folder)) if workspace.is_relative_to(folder)
                                    else str(workspace)})


def preflight(models: list[ZooModel], build_images: bool, say: Callable[[str], None], ray: Any,
              affinity: Any) -> None:
    """Check every alive node before any model starts; EnvironmentProblem naming the nodes that fail."""
    images = needed_images(models)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    check = ray.remote(check_node)
    reports = ray.get([check.options(num_cpus=0, scheduling_strategy=affinity(node["NodeID"], soft=False))
                       .remote(images, build_images) for node in nodes])
    problems = []
    for report in reports:
        missing = report.get("missing") or []
        if report.get("error"):
            problems.append(f"{report['node']}: {report['error']}")
        elif missing:
            problems.append(f"{report['node']}: images missing: {', '.join(missing)} (--build-images builds them)")
        else:
            say(f"node {report['node']}: ready (Docker {report.get('docker', '-')}, {report['gpus']} GPUs)")
    if problems:
        raise EnvironmentProblem("zoo preflight failed on " + "; ".join(problems))
    wanted = max((m.gpus for m in models), default=0)
    if wanted and max((r["gpus"] for r in reports), default=0) < wanted:
        raise EnvironmentProblem(f"a model asks for {wanted} GPUs and no node has as many")
