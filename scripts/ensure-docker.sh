#!/usr/bin/env bash
# Make sure a Docker daemon answers: install Debian's docker.io and start dockerd when none does.
# For hosts without an init system (CI machines, containers); elsewhere start Docker your usual way.
# Also installs debootstrap, which `nav-orch images bootstrap` needs where no registry is reachable,
# and Debian's python3-venv, in which the tests install the wheel for a user other than root.
set -euo pipefail

if [ "$(id -u)" = 0 ] && { ! command -v debootstrap >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; }; then
  echo "ensure-docker: installing debootstrap and python3-venv from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap python3-venv >/dev/null
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-docker: no Docker daemon answers and this is not root: start Docker, then try again" >&2
  exit 3
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing docker.io from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
log="${TMPDIR:-/tmp}/nav-orch-dockerd.log"
echo "ensure-docker: starting dockerd (log: $log)" >&2
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see $log" >&2
exit 3
