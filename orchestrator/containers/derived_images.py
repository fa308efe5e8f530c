"""Runner images with a model's own libraries: a toolchain image plus the requirements a run names
(`--requirements`), built once per base image and requirement set.

The derived image's tag carries a digest of the base image's ID and the normalized requirements
(`nav-orch/pytorch:cpu-req-1a2b3c4d5e6f`), so a second run with the same requirements finds it and
starts at once, and a rebuilt base image gets a new one. It is built from images/derived/ through
the same machinery as the runner images (the host's pip configuration and CA bundle, a wheel folder
for air-gapped hosts). The base image's packages are pip constraints: a requirement that would
replace one is refused before the build, in one line.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import docker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from orchestrator.containers import engine
from orchestrator.containers.bake import BakeTarget
from orchestrator.containers.image_builds import (
    EXTRAS_DIR,
    OnLine,
    build_target,
    host_ca_bundle,
    host_pip_config,
    pip_config_for_build,
    user_cache,
)
from orchestrator.errors import BadInput, EnvironmentProblem
from orchestrator.resources import shipped

RECIPE = "derived"  # the folder of images/ with its Dockerfile and installed.py
BASE_LABEL = "org.nav-orch.derived-from"
BASE_ID_LABEL = "org.nav-orch.derived-from-id"
REQUIREMENTS_LABEL = "org.nav-orch.requirements"  # a JSON list of the requirement lines
TAG_MARK = "-req-"


@dataclass(frozen=True)
class DerivedImage:
    tag: str
    info: engine.ImageInfo
    base: str  # the toolchain image it is built on
    built_s: Optional[float]  # None: found, built by an earlier run


def requirements_digest(base_id: str, requirements: Sequence[str], wheels: Sequence[str]) -> str:
    """What a derived image is: its base image and requirement lines (normalized by the config), and
    the names of the wheels it could install from."""
    text = json.dumps({"base": base_id, "requirements": sorted(requirements), "wheels": sorted(wheels)})
    return hashlib.sha256(text.encode()).hexdigest()


def derived_tag(base_tag: str, digest: str) -> str:
    """`nav-orch/pytorch:cpu` with a digest -> `nav-orch/pytorch:cpu-req-<12 hex digits>`."""
    repository, _, tag = base_tag.rpartition(":")
    return f"{repository}:{tag}{TAG_MARK}{digest[:12]}"


def conflicts(requirements: Sequence[str], installed: dict[str, str], image: str) -> Optional[str]:
    """Why a requirement would replace a package the image holds (its version outside the
    requirement's specifier), as one line; None where none would."""
    for line in requirements:
        requirement = Requirement(line)
        have = installed.get(canonicalize_name(requirement.name))
        if have is not None and not requirement.specifier.contains(have, prereleases=True):
            return (f"--requirements: {line} conflicts with {requirement.name} {have} in {image}: the image's own "
                    f"packages cannot be replaced (leave {requirement.name} out, or allow {have})")
    return None


def parse_installed(listing: str) -> dict[str, str]:
    """`installed.py constraints` output (NAME==VERSION lines) by canonical name."""
    found: dict[str, str] = {}
    for line in listing.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and name:
            found[canonicalize_name(name)] = version
    return found


def pip_failure(lines: Sequence[str]) -> Optional[str]:
    """pip's reason for a failed install, from its output: its first ERROR line and, for a conflict,
    what pip says caused it; None where pip said nothing of the kind (then the build failed elsewhere)."""
    errors = [line.strip() for line in lines if line.strip().startswith("ERROR:")]
    if not errors:
        return None
    reason = errors[-1] if errors[-1].startswith("ERROR: No matching distribution") else errors[0]
    reason = reason.removeprefix("ERROR:").strip()
    causes = []
    for index, line in enumerate(lines):
        if line.strip().startswith("The conflict is caused by"):
            causes = [cause.strip() for cause in lines[index + 1:index + 6] if cause.startswith(("  ", "\t"))]
            break
    return reason + (f" ({'; '.join(causes)})" if causes else "")


def image_packages(client: docker.DockerClient, image: str, recipe: Path, run_id: str) -> dict[str, str]:
    """The packages `image` holds (a short container of the run `run_id` runs installed.py, no network)."""
    spec = engine.ContainerSpec(
        image=image, command=["python", "/nav/recipe/installed.py", "constraints"],
        mounts=[engine.Mount(source=recipe, target="/nav/recipe", read_only=True)],
        labels={engine.RUN_LABEL: run_id, engine.ROLE_LABEL: "derived-image-packages"}, pids=64)
    state, output = engine.run_to_exit(client, spec, timeout_s=120)
    if state is None or state.code != 0:
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        raise EnvironmentProblem(f"cannot list the packages of {image}: {last}")
    return parse_installed(output)


def ensure_derived_image(client: docker.DockerClient, base_tag: str, base: engine.ImageInfo,
                         requirements: Sequence[str], find_links: Optional[Path], run_id: str, on_line: OnLine,
                         log: Callable[[str], None]) -> DerivedImage:
    """The image of `base_tag` plus `requirements`: found when built before, else built (the build's
    output goes to `log`, progress to `on_line`). BadInput for a requirement that would replace one of
    the image's packages or that pip cannot install; EnvironmentProblem for another failed build."""
    recipe = shipped("images") / RECIPE
    wheels = sorted(find_links.glob("*.whl")) if find_links is not None else []
    if find_links is not None and not find_links.is_dir():
        raise BadInput(f"--find-links {find_links}: no such folder")
    tag = derived_tag(base_tag, requirements_digest(base.id, requirements, [wheel.name for wheel in wheels]))
    found = engine.inspect_image(client, tag)
    if found is not None:
        return DerivedImage(tag, found, base_tag, None)
    problem = conflicts(requirements, image_packages(client, base_tag, recipe, run_id), base_tag)
    if problem is not None:
        raise BadInput(problem)
    started = time.monotonic()
    output: list[str] = []

    def builder_line(line: str) -> None:
        output.append(line)
        log(line)

    cache = user_cache()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="derived-", dir=cache) as scratch:
        context = Path(scratch) / RECIPE
        shutil.copytree(recipe, context, ignore=shutil.ignore_patterns(EXTRAS_DIR, "__pycache__"))
        extras = context / EXTRAS_DIR
        (extras / "wheels").mkdir(parents=True)
        (extras / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))
        shutil.copyfile(recipe / "installed.py", extras / "installed.py")
        for wheel in wheels:
            shutil.copyfile(wheel, extras / "wheels" / wheel.name)
        pip_text = host_pip_config()
        ca = host_ca_bundle(pip_text)
        pip_text = pip_config_for_build(pip_text)
        if pip_text is not None:
            (extras / "pip.conf").write_text(pip_text)
        if ca is not None:
            shutil.copyfile(ca, extras / "ca.crt")
        title = base.labels.get("org.opencontainers.image.title", base_tag)
        target = BakeTarget(name=tag, context=RECIPE, args={"BASE_IMAGE": base_tag}, tags=[tag], labels={
            "org.opencontainers.image.title": f"{title} + requirements",
            BASE_LABEL: base_tag, BASE_ID_LABEL: base.id, REQUIREMENTS_LABEL: json.dumps(list(requirements))})
        try:
            build_target(client, Path(scratch), target, rebuild=False, on_line=on_line,
                         on_output=lambda _target, line: builder_line(line))
        except EnvironmentProblem as error:
            reason = pip_failure(output)
            if reason is not None:
                raise BadInput(f"--requirements cannot be installed into {base_tag}: {reason}") from None
            raise EnvironmentProblem(f"building {tag} failed: {error}") from None
    info = engine.inspect_image(client, tag)
    if info is None:
        raise EnvironmentProblem(f"building {tag} left no image")
    return DerivedImage(tag, info, base_tag, time.monotonic() - started)


def derived_images(client: docker.DockerClient) -> list[engine.ImageInfo]:
    """Every derived image on this host (found by its label)."""
    return engine.labelled_images(client, BASE_LABEL)


def stale(client: docker.DockerClient, image: engine.ImageInfo) -> bool:
    """Whether no run can use a derived image again: its base tag names another image now (rebuilt), or none."""
    current = engine.inspect_image(client, image.labels[BASE_LABEL])
    return current is None or current.id != image.labels.get(BASE_ID_LABEL)


def stale_images(client: docker.DockerClient) -> list[engine.ImageInfo]:
    return [image for image in derived_images(client) if stale(client, image)]
