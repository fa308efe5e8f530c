"""Which of the CUDA PyTorch image's pins pip installs, for images/pytorch/Dockerfile (standard library
only: it runs on the NGC base's Python before anything is installed).

NGC's PyTorch containers pin every Python package they were built with in /etc/pip/constraint.txt,
which PIP_CONSTRAINT hands to every pip install (NVIDIA's PyTorch release notes, from 25.03 on). A pin
that differs from one of those fails pip's resolver, and with it the build. So each pin is decided
before pip runs:
  --exact       a version nav-orch depends on and states in the image's labels: installed as pinned;
                a base that has another version stops the build with one line naming both
  --base-first  a dependency whose exact version does not matter: the base's where it has one
                (installed, or pinned by its constraints), else the pin

    python pins.py --requirements OUT --record RECORD --exact NAME==VERSION ... --base-first NAME==VERSION ...

OUT: the requirements pip installs; RECORD: every pin's version in the image and where it came from.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

CONSTRAINT_ENV = "PIP_CONSTRAINT"
# Where NGC's PyTorch containers keep theirs: read even where PIP_CONSTRAINT does not name it (a pip
# configuration file may), as pip may enforce it all the same.
NGC_CONSTRAINTS = "/etc/pip/constraint.txt"
# NAME==VERSION (or ===), with optional extras; markers, hashes and comments after it are ignored.
PINNED = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*===?\s*([^\s;#,\\]+)")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    exact: bool


@dataclass(frozen=True)
class Decision:
    """What the image holds of one pin: `version`, from "base" (already installed), "constraint"
    (the base's pinned version, installed now) or "pin" (installed as pinned)."""

    pin: Pin
    version: str
    source: str

    @property
    def installs(self) -> bool:
        return self.source != "base"


class PinConflict(Exception):
    """An exact pin the base holds at another version."""


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(a: str, b: str) -> bool:
    """Equal as pip's == compares them for plain versions: trailing zeros of the release aside."""
    def key(version: str) -> tuple[tuple[int, ...], str]:
        match = re.match(r"v?(\d+(?:\.\d+)*)(.*)$", version.strip().lower())
        if match is None:
            return (), version.strip().lower()
        release = [int(part) for part in match.group(1).split(".")]
        while len(release) > 1 and release[-1] == 0:
            release.pop()
        return tuple(release), match.group(2)

    return key(a) == key(b)


def parse_pin(text: str, exact: bool) -> Pin:
    match = PINNED.match(text)
    if match is None or match.end() != len(text.rstrip()):
        raise ValueError(f"not a NAME==VERSION pin: {text!r}")
    return Pin(match.group(1), match.group(2), exact)


def parse_constraints(text: str) -> dict[str, str]:
    """The NAME==VERSION lines of a pip constraints file, by canonical name; any other line (a
    comment, an option, a range, a URL) pins nothing this needs to know."""
    found = {}
    for line in text.splitlines():
        match = PINNED.match(line)
        if match is not None:
            found[canonical(match.group(1))] = match.group(2)
    return found


def decide(pins: Sequence[Pin], installed: Mapping[str, str], constrained: Mapping[str, str]) -> list[Decision]:
    """Each pin's version in the image, from what the base has installed and what its constraints pin
    (both by canonical name); PinConflict, one line naming each package and both versions, where an
    exact pin disagrees with the base."""
    decisions, conflicts = [], []
    for pin in pins:
        name = canonical(pin.name)
        has, pinned = installed.get(name), constrained.get(name)
        if pin.exact:
            base = has if has is not None else pinned
            where = "installed" if has is not None else "pinned by its pip constraints"
            if base is not None and not same_version(base, pin.version):
                conflicts.append(f"{pin.name} must be {pin.version}, but the base image has {base} ({where})")
                continue
            decisions.append(Decision(pin, pin.version, "base" if has is not None else "pin"))
        elif has is not None:
            decisions.append(Decision(pin, has, "base"))
        elif pinned is not None:
            decisions.append(Decision(pin, pinned, "constraint"))
        else:
            decisions.append(Decision(pin, pin.version, "pin"))
    if conflicts:
        raise PinConflict("; ".join(conflicts))
    return decisions


def requirements(decisions: Sequence[Decision]) -> str:
    return "".join(f"{d.pin.name}=={d.version}\n" for d in decisions if d.installs)


def record(decisions: Sequence[Decision]) -> str:
    """One line a pin: NAME==VERSION and where the version came from."""
    origin = {"base": "the base image's", "constraint": "the base image's pip constraint", "pin": "nav-orch's pin"}
    return "".join(f"{d.pin.name}=={d.version}  # {origin[d.source]}\n" for d in decisions)


def installed_versions() -> dict[str, str]:
    return {canonical(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
            if dist.metadata["Name"]}


def constraint_files(environ: Mapping[str, str]) -> list[str]:
    """The constraints files pip may apply here: PIP_CONSTRAINT's (whitespace-separated) and NGC's."""
    return list(dict.fromkeys([*environ.get(CONSTRAINT_ENV, "").split(), NGC_CONSTRAINTS]))


def read_constraints(paths: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in paths:
        if os.path.isfile(path):
            with open(path) as constraints:
                found.update(parse_constraints(constraints.read()))
    return found


def arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--exact", nargs="*", default=[])
    parser.add_argument("--base-first", nargs="*", default=[])
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = arguments(argv)
    pins = [parse_pin(text, True) for text in args.exact] + [parse_pin(text, False) for text in args.base_first]
    try:
        decisions = decide(pins, installed_versions(), read_constraints(constraint_files(os.environ)))
    except PinConflict as conflict:
        print(f"nav-orch image build: {conflict}; change the pin in docker-bake.hcl or images/pytorch/Dockerfile "
              "to the base's version, or use an NGC_RELEASE whose base has it", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
    with open(args.requirements, "w") as out:
        out.write(requirements(decisions))
    with open(args.record, "w") as out:
        out.write(record(decisions))
    print(record(decisions), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
