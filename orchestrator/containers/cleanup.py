"""`nav-orch clean`: which nav-orch containers go (those whose run was killed; every one with
--all) and which stay (those of runs still going), shown before anything is removed."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Protocol

import docker
import docker.errors

from orchestrator.containers import engine
from orchestrator.errors import BadInput

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunContainer:
    """A container a nav-orch run started, and whether that run is gone (engine.abandoned)."""

    id: str
    name: str
    run: str
    owner: str  # host:pid:start of the process that started it; "" from an older nav-orch
    running: bool
    abandoned: bool

    def describe(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{self.name} (run {self.run}, {state}, started by {self.owner or 'an older nav-orch'})"


class Containers(Protocol):
    """Where the containers are: the Docker daemon (DockerContainers), or a test's stand-in."""

    def listed(self) -> list[RunContainer]: ...

    def remove(self, container: RunContainer) -> None: ...


class DockerContainers:
    """The nav-orch containers of a Docker daemon, found by their run label."""

    def __init__(self, client: docker.DockerClient):
        self.client = client

    def listed(self) -> list[RunContainer]:
        found = []
        for container in self.client.containers.list(all=True, filters={"label": engine.RUN_LABEL}):
            labels, running = dict(container.labels), container.status == "running"
            found.append(RunContainer(id=container.id or "", name=container.name or "", running=running,
                                      run=labels.get(engine.RUN_LABEL, ""), owner=labels.get(engine.OWNER_LABEL, ""),
                                      abandoned=engine.abandoned(labels, running)))
        return found

    def remove(self, container: RunContainer) -> None:
        try:
            engine.remove_container(self.client.containers.get(container.id))
        except docker.errors.NotFound:
            pass  # gone already: its run ended meanwhile


@dataclass
class CleanPlan:
    remove: list[RunContainer]
    keep: list[RunContainer]  # of runs still going (or of another host, which is never judged)

    @property
    def live(self) -> list[RunContainer]:
        """The containers to remove whose run is still going: what --all takes beyond a plain clean."""
        return [container for container in self.remove if not container.abandoned]


def plan_clean(containers: list[RunContainer], every: bool) -> CleanPlan:
    return CleanPlan(remove=[c for c in containers if every or c.abandoned],
                     keep=[c for c in containers if not (every or c.abandoned)])


def clean(containers: Containers, every: bool, dry_run: bool, confirm: Optional[Callable[[str], bool]],
          echo: Echo) -> int:
    """Remove the abandoned containers (`every`: all of them) and say which stayed; how many went.
    `dry_run` only says what would go. `every` needs `confirm` to say yes, and None for it (no one
    to ask, no --yes) is refused before anything is listed."""
    require_confirmation(every, dry_run, confirm)
    plan = plan_clean(containers.listed(), every)
    if dry_run:
        for container in plan.remove:
            echo(f"would remove {container.describe()}")
        say_kept(plan.keep, echo)
        echo(f"would remove {len(plan.remove)} container(s), keep {len(plan.keep)} (dry run: nothing removed)")
        return 0
    if every and plan.remove:
        for container in plan.live:
            echo(f"run still going: {container.describe()}")
        assert confirm is not None  # refused above without one
        if not confirm(f"Remove all {len(plan.remove)} nav-orch container(s), {len(plan.live)} of them of runs "
                       "still going?"):
            echo("removed nothing")
            return 0
    for container in plan.remove:
        containers.remove(container)
    echo(f"removed {len(plan.remove)} container(s)")
    say_kept(plan.keep, echo)
    return len(plan.remove)


def require_confirmation(every: bool, dry_run: bool, confirm: Optional[Callable[[str], bool]]) -> None:
    """--all removes what runs still going need: refused where no one can say yes (no terminal, no --yes)."""
    if every and not dry_run and confirm is None:
        raise BadInput("--all removes the containers of runs still going too: add --yes to confirm "
                       "(no terminal here to ask on), or see what it would remove with --dry-run")


def say_kept(kept: list[RunContainer], echo: Echo) -> None:
    for container in kept:
        echo(f"kept {container.describe()}: its run is still going, or on another host (--all removes it too)")
