"""Which nav-orch containers outlived the run that started them (engine.abandoned), judged by the
owner label every container gets: host, pid and the process's start time; and a removal that
returns only once Docker no longer lists the container."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import docker.errors
import pytest

from orchestrator.containers.engine import (
    OWNER_LABEL,
    RUN_LABEL,
    abandoned,
    process_owner,
    process_start,
    remove_container,
)


def labels(owner: str) -> dict[str, str]:
    return {RUN_LABEL: "abc", OWNER_LABEL: owner}


def test_a_living_owner_keeps_its_containers_running_or_not():
    me = process_owner(os.getpid())
    assert me.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert not abandoned(labels(me), running=True)
    assert not abandoned(labels(me), running=False)


def test_a_dead_owner_abandons_its_containers_even_running_ones():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = process_owner(child.pid)
    child.wait()
    assert process_start(child.pid) is None
    assert abandoned(labels(owner), running=True)


def test_a_reused_pid_is_not_the_owner():
    host, pid, started = process_owner(os.getpid()).split(":")
    assert started, "this host has /proc: a start time is recorded"
    assert abandoned(labels(f"{host}:{pid}:{int(started) + 1}"), running=True)


def test_another_hosts_containers_are_never_judged():
    assert not abandoned(labels(f"not-{socket.gethostname()}:1:1"), running=False)
    assert not abandoned(labels(f"{socket.gethostname()}:garbage"), running=False)


def test_an_older_nav_orchs_container_is_abandoned_only_once_stopped():
    assert abandoned({RUN_LABEL: "abc"}, running=False)
    assert not abandoned({RUN_LABEL: "abc"}, running=True)


class RemovedElsewhere:
    """A container whose removal another call began: Docker answers 409 until it is gone."""

    def __init__(self, listed_for: int):
        self.listed_for = listed_for  # reloads that still find it
        self.reloads = 0

    def remove(self, force: bool) -> None:
        raise docker.errors.APIError("removal of container abc is already in progress")

    def reload(self) -> None:
        self.reloads += 1
        if self.reloads > self.listed_for:
            raise docker.errors.NotFound("No such container: abc")


class Refused(RemovedElsewhere):
    def remove(self, force: bool) -> None:
        raise docker.errors.APIError("permission denied")


def test_a_removal_already_under_way_is_waited_for_until_docker_no_longer_lists_it():
    container = RemovedElsewhere(listed_for=3)
    remove_container(container, wait_s=5, poll_s=0)  # type: ignore[arg-type]
    assert container.reloads == 4


def test_a_removal_that_never_ends_is_waited_for_only_so_long():
    container = RemovedElsewhere(listed_for=10**9)
    remove_container(container, wait_s=0.05, poll_s=0.01)  # type: ignore[arg-type]
    assert 1 <= container.reloads < 100


def test_another_docker_error_on_removal_is_raised():
    with pytest.raises(docker.errors.APIError, match="permission denied"):
        remove_container(Refused(listed_for=0), wait_s=5, poll_s=0)  # type: ignore[arg-type]
