"""Which nav-orch containers outlived the run that started them (engine.abandoned), judged by the
owner label every container gets: host, pid and the process's start time."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from orchestrator.containers.engine import OWNER_LABEL, RUN_LABEL, abandoned, process_owner, process_start


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
