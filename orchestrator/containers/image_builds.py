"""Making the runner images: the local Debian base from Debian's own packages (debootstrap, no
registry), and the images of docker-bake.hcl (buildx bake where it exists, else the Docker API from
the same parsed definition), built from a temporary copy of their build contexts with the host's
pip configuration and CA bundle."""
from __future__ import annotations

import configparser
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import docker

from orchestrator.containers import engine
from orchestrator.containers.bake import BakeFile, BakeTarget, load_bake_file
from orchestrator.containers.images import FLAVOR_LABEL
from orchestrator.errors import BadInput, EnvironmentProblem

DEBIAN_BASE = "nav-orch/debian:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_FALLBACK_MIRROR = "http://deb.debian.org/debian"
# Python of the CPU images (Debian bookworm's python3): the torch wheel must match it.
CPU_IMAGE_PYTHON = "3.11"

EXTRAS_DIR = ".build-extras"  # in each target's context, as builds copy it into a temporary folder
# pip.conf and ca.crt say where pip downloads from and whom it trusts, not what goes into an
# image (the Dockerfiles pin the versions): a change to them alone leaves images up to date.
UNHASHED_EXTRAS = ("pip.conf", "ca.crt")
# The digest of an image's build inputs, which lets `nav-orch images build` skip unchanged targets.
BUILD_INPUTS_LABEL = "org.nav-orch.build-inputs"
# Host pip settings given as environment variables that are worth carrying into builds.
PIP_ENV_SETTINGS = ("INDEX_URL", "EXTRA_INDEX_URL", "TRUSTED_HOST", "PROXY", "DEFAULT_TIMEOUT", "RETRIES")

OnLine = Callable[[str], None]
# A tool's own output (the builder's steps, debootstrap's lines): where it came from, and the line.
OnOutput = Callable[[str, str], None]


# --- the Debian base ------------------------------------------------------------------------

def bootstrap_base(client: docker.DockerClient, tag: str = DEBIAN_BASE, mirror: Optional[str] = None,
                   on_line: OnLine = lambda line: None, on_output: Optional[OnOutput] = None) -> str:
    """Make the Debian base image from Debian's own packages (debootstrap + import), with no
    registry. Returns the image ID."""
    if shutil.which("debootstrap") is None:
        raise EnvironmentProblem("debootstrap is missing: install it (`apt-get install debootstrap`) "
                                 "and run `nav-orch images bootstrap` again")
    if os.geteuid() != 0:
        raise EnvironmentProblem("debootstrap needs root: run `sudo nav-orch images bootstrap`")
    if mirror is None:
        mirror = host_debian_mirror(DEBIAN_SUITE)
        if mirror is None:
            mirror = DEBIAN_FALLBACK_MIRROR
            on_line(f"no {DEBIAN_SUITE} mirror in this host's apt sources; using {mirror} (--mirror to change)")
    on_line(f"debootstrap --variant=minbase {DEBIAN_SUITE} from {mirror}")
    scratch = Path(tempfile.mkdtemp(prefix="nav-orch-rootfs-"))
    rootfs = scratch / "rootfs"
    try:
        _stream(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), mirror],
                output_of("debootstrap", on_line, on_output),
                failure=f"debootstrap of {DEBIAN_SUITE} from {mirror} failed")
        on_line(f"importing the root filesystem as {tag}")
        return engine.import_rootfs(client, rootfs, tag)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def host_debian_mirror(suite: str = DEBIAN_SUITE, sources_dir: Path = Path("/etc/apt")) -> Optional[str]:
    """The mirror this host's apt uses for `suite` (deb822 `.sources` files first, then
    sources.list), or None."""
    for uri, suites in _apt_sources(sources_dir):
        if suite in suites and uri.split(":", 1)[0] in ("http", "https", "file"):
            return uri.rstrip("/")
    return None


def _apt_sources(sources_dir: Path) -> Iterable[tuple[str, list[str]]]:
    """(uri, suites) of each enabled `deb` source."""
    parts = sources_dir / "sources.list.d"
    for path in sorted(parts.glob("*.sources")) if parts.is_dir() else []:
        for paragraph in _deb822(_read(path)):
            if paragraph.get("enabled", "yes").lower() == "no" or "deb" not in paragraph.get("types", "").split():
                continue
            for uri in paragraph.get("uris", "").split():
                yield uri, paragraph.get("suites", "").split()
    lists = [sources_dir / "sources.list"]
    lists += sorted(parts.glob("*.list")) if parts.is_dir() else []
    for path in lists:
        for line in _read(path).splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2:
                yield words[0], [words[1]]


def _deb822(text: str) -> list[dict[str, str]]:
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key: Optional[str] = None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    return paragraphs


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# --- building ---------------------------------------------------------------------------------

def build_images(client: docker.DockerClient, bake_file: Path,
                 flavor_or_targets: Union[str, Sequence[str]], overrides: Mapping[str, str],
                 pip_config: Optional[Path], ca_bundle: Optional[Path],
                 on_line: OnLine = lambda line: None, rebuild: bool = False,
                 cache: Optional[Path] = None, buildx: Optional[bool] = None,
                 on_output: Optional[OnOutput] = None) -> list[str]:
    """Build a bake group (`cpu`, `cuda`, `default`) or the named targets; returns their tags.

    pip_config / ca_bundle: what pip uses inside builds (only in build stages, never in the
    final images); None means the host's own (see `host_pip_config` and `host_ca_bundle`).
    Through the Docker API a target whose image was built from the same inputs is skipped, and a
    build leaves no untagged images; `rebuild` builds every target anew, without cache.
    Builds run from a temporary copy of the bake file and the contexts in `cache` (None: the
    user's, see `user_cache`), which also keeps the torch wheel between builds: nothing is
    written next to the bake file. `buildx`: build with `docker buildx bake` (None: where it exists).
    `on_output` gets the builder's own lines, by target (None: `on_line` gets them too).
    """
    bake = load_bake_file(Path(bake_file))
    variables = bake.resolve_variables(overrides)
    # Images built FROM another target's image come after it (and bring it along when asked alone).
    names = bake.build_order(bake.target_names(flavor_or_targets))
    targets = [bake.resolve_target(name, variables) for name in names]
    _warn_stale_ngc_versions(bake, variables, targets, on_line)

    pip_text = _pip_config_text(pip_config, on_line)
    ca_path = _ca_bundle_path(ca_bundle, pip_text, on_line)
    pip_text = pip_config_for_build(pip_text)

    for target in targets:
        base = target.args.get("BASE_IMAGE")
        if base and base == variables.get("DEBIAN_BASE") and engine.inspect_image(client, base) is None:
            option = "" if base == DEBIAN_BASE else f" --tag {base}"
            raise EnvironmentProblem(f"base image {base} is missing: run `nav-orch images bootstrap{option}` first")

    cache = user_cache() if cache is None else Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EnvironmentProblem(f"cannot make nav-orch's cache folder {cache} ({error.strerror}): "
                                 "set XDG_CACHE_HOME to a folder you may write") from None
    # In the cache rather than /tmp: on the wheels' file system, the torch wheel is linked, not copied.
    with tempfile.TemporaryDirectory(prefix="build-", dir=cache) as scratch:
        staged = stage_build(bake, targets, Path(scratch))
        for target in targets:
            prepare_extras(staged.parent / target.context, target, pip_text, ca_path, cache / "wheels", on_line)
        if engine.buildx_available() if buildx is None else buildx:
            on_line(f"building {', '.join(t.name for t in targets)} with docker buildx bake")
            engine.bake(staged, [t.name for t in targets], dict(overrides), no_cache=rebuild)
        else:
            replaced: list[str] = []
            try:
                for target in targets:
                    previous = build_target(client, staged.parent, target, rebuild, on_line, on_output)
                    if previous is not None:
                        replaced.append(previous)
            finally:
                # The images that lost their tag to a new build, the last built first: an old
                # nav-orch/triton:cpu goes before the old nav-orch/pytorch:cpu it is built on.
                engine.remove_untagged(client, reversed(replaced), on_line)
    return [tag for target in targets for tag in target.tags]


def user_cache(environ: Optional[Mapping[str, str]] = None, home: Optional[Path] = None) -> Path:
    """nav-orch's folder in the user's cache: $XDG_CACHE_HOME/nav-orch, else ~/.cache/nav-orch."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        base = str((Path.home() if home is None else home) / ".cache")
    return Path(base) / "nav-orch"


def stage_build(bake: BakeFile, targets: Sequence[BakeTarget], into: Path) -> Path:
    """Copy the bake file and each target's context (and its Dockerfile, where that lies outside)
    from the bake file's folder into `into`, at the same relative paths; returns the copied bake
    file. A context's .build-extras/, which builds of earlier versions left there, stays behind."""
    for target in targets:
        context = _below(bake.root, target.context, target.name)
        dockerfile = _below(bake.root, str(context / target.dockerfile), target.name)
        if not (bake.root / dockerfile).is_file():
            raise BadInput(f"target {target.name}: {bake.root / dockerfile} does not exist")
        if not (into / context).exists():  # else copied for another target already
            for path in _tree(bake.root / context):
                relative = path.relative_to(bake.root / context)
                if relative.parts[0] != EXTRAS_DIR:
                    _place(path, into / context / relative)
        if not (into / dockerfile).exists():
            _place(bake.root / dockerfile, into / dockerfile)
    _place(bake.path, into / bake.path.name)
    return into / bake.path.name


def _below(root: Path, relative: str, target: str) -> Path:
    """`relative` as a path below `root`, which is all a build copies."""
    path = Path(os.path.normpath(relative))
    if path.is_absolute() or path.parts[:1] == ("..",):
        raise BadInput(f"target {target}: {relative} is outside {root}: contexts and Dockerfiles must lie "
                       "below the bake file's folder")
    return path


def _place(source: Path, destination: Path, link: bool = False) -> None:
    """Copy a file or symbolic link to `destination`; a file gets the mode git would give it (0755
    when its owner may run it, else 0644), so that the build digest follows what the files hold,
    not the umask of whoever installed or downloaded them. `link`: hard-link instead where the
    mode fits already (the 200 MB torch wheel)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
        return
    mode = 0o755 if source.stat().st_mode & stat.S_IXUSR else 0o644
    if link and stat.S_IMODE(source.stat().st_mode) == mode:
        try:
            os.link(source, destination)
            return
        except OSError:
            pass  # another file system, or another user's file (protected hard links): copy
    shutil.copyfile(source, destination)
    destination.chmod(mode)


def build_target(client: docker.DockerClient, root: Path, target: BakeTarget, rebuild: bool,
                 on_line: OnLine, on_output: Optional[OnOutput] = None) -> Optional[str]:
    """Build one target through the Docker API, unless its image was built from the same inputs
    (`rebuild`: build anyway, without the builder's cache), and remove the build stages' images.
    Returns the ID of the image the target's tag named before, when the build moved the tag."""
    context = root / target.context
    dockerfile = context / target.dockerfile
    bases = {name: _base_image(client, name, target.name, on_line).id
             for name in dockerfile_bases(dockerfile.read_text(), target.args, str(dockerfile))}
    digest = build_inputs_digest(context, target.dockerfile, target.args, target.labels, bases)
    existing = [engine.inspect_image(client, tag) for tag in target.tags]
    if not rebuild and up_to_date(existing, digest):
        on_line(f"{target.name} ({', '.join(target.tags)}) is up to date")
        return None
    on_line(f"building {target.name} ({', '.join(target.tags)}) through the Docker API")
    started = time.monotonic()
    built = engine.build_image(client, context, target.dockerfile, target.tags, target.args,
                               {**target.labels, BUILD_INPUTS_LABEL: digest},
                               output_of(target.name, on_line, on_output), no_cache=rebuild)
    on_line(f"{target.name} built in {time.monotonic() - started:.0f} s: {built.size / 1e9:.2f} GB")
    # The final stage has copied what it needs out of the earlier ones: their images would only
    # show as <none> in `docker images`. Their loss costs no time later, as unchanged targets
    # are skipped. A stage without steps ends on its base image, which is not the build's.
    engine.remove_untagged(client, [i for i in built.stage_ids if i not in bases.values()], on_line)
    previous = existing[0] if existing else None
    return previous.id if previous is not None and previous.id != built.id else None


def up_to_date(existing: Sequence[Optional[engine.ImageInfo]], digest: str) -> bool:
    """Whether the images a target's tags name (None: no such image) are one image built from
    inputs of this digest."""
    return (bool(existing) and len({info.id if info else None for info in existing}) == 1
            and all(info is not None and info.labels.get(BUILD_INPUTS_LABEL) == digest for info in existing))


def build_inputs_digest(context: Path, dockerfile: str, build_args: Mapping[str, str],
                        labels: Mapping[str, str], base_ids: Mapping[str, str]) -> str:
    """A digest of what a target's image is built from: the Dockerfile, each file of the context
    (path, mode, content; pip.conf and ca.crt of .build-extras/ aside), the build args, the
    labels and the IDs of the base images."""
    digest = hashlib.sha256(json.dumps({"scheme": 1, "dockerfile": dockerfile, "args": dict(build_args),
                                        "labels": dict(labels), "bases": dict(base_ids)}, sort_keys=True).encode())
    unhashed = {Path(EXTRAS_DIR, name) for name in UNHASHED_EXTRAS}
    # The Dockerfile first: it may lie outside the context.
    for path, relative in [(context / dockerfile, Path(dockerfile))] + [
            (path, path.relative_to(context)) for path in _tree(context)]:
        if relative in unhashed:
            continue
        info = path.lstat()
        digest.update(f"\0{relative.as_posix()}\0{stat.S_IMODE(info.st_mode):o}\0{info.st_size}\0".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
            continue
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _tree(folder: Path) -> Iterator[Path]:
    """Every file and link below `folder`, in a fixed order (links to folders not followed)."""
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.is_symlink():
            yield from _tree(path)
        else:
            yield path


_DOCKERFILE_ARG = re.compile(r"ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?", re.IGNORECASE)
_DOCKERFILE_FROM = re.compile(r"FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE)
_DOCKERFILE_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def dockerfile_bases(text: str, build_args: Mapping[str, str], where: str = "Dockerfile") -> list[str]:
    """The images a Dockerfile's stages start FROM, with the ARGs before the first FROM (or the
    build args given for them) put in; other stages and `scratch` left out."""
    values: dict[str, str] = {}
    stages = {"scratch"}  # what FROM may name that is no image
    bases: list[str] = []
    seen_from = False
    for line in _dockerfile_instructions(text):
        arg = _DOCKERFILE_ARG.fullmatch(line)
        if arg and not seen_from:
            values[arg.group(1)] = build_args.get(arg.group(1), (arg.group(2) or "").strip().strip("\"'"))
            continue
        found = _DOCKERFILE_FROM.fullmatch(line)
        if not found:
            continue
        seen_from = True
        image = _DOCKERFILE_VAR.sub(lambda m: values.get(m.group(1) or m.group(2), ""), found.group(1))
        if not image or "$" in image:
            raise BadInput(f"{where}: cannot tell the image of `{line}`: only $VAR and ${{VAR}} of the "
                           "ARGs before the first FROM are understood")
        if image.lower() not in stages and image not in bases:
            bases.append(image)
        if found.group(2):
            stages.add(found.group(2).lower())
    return bases


def _dockerfile_instructions(text: str) -> Iterator[str]:
    """Instructions one per line: comments and blank lines dropped, `\\` continuations joined."""
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        yield current + line
        current = ""
    if current:
        yield current.strip()


def _base_image(client: docker.DockerClient, name: str, target: str, on_line: OnLine) -> engine.ImageInfo:
    info = engine.inspect_image(client, name)
    if info is None:  # the builder would pull it: pull it first, so that its ID is known
        on_line(f"pulling {name}, the base image of {target}")
        info = engine.pull_image(client, name)
    return info


def prepare_extras(context: Path, target: BakeTarget, pip_text: Optional[str], ca_path: Optional[Path],
                   wheel_cache: Path, on_line: OnLine) -> Path:
    """Fill `<context>/.build-extras/` of a staged context: pip.conf and ca.crt (when given) and,
    for targets that install the CPU torch, `wheels/` with that wheel from `wheel_cache`."""
    extras = context / EXTRAS_DIR
    wheels = extras / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)  # the Dockerfiles COPY .build-extras/
    if pip_text is not None:
        (extras / "pip.conf").write_text(pip_text)
    if ca_path is not None:
        shutil.copyfile(ca_path, extras / "ca.crt")
    version = target.args.get("TORCH_CPU_VERSION")
    if version:
        wheel = torch_cpu_wheel(version, wheel_cache, on_line)
        _place(wheel, wheels / wheel.name, link=True)
    return extras


def torch_cpu_wheel(version: str, wheels: Path, on_line: OnLine) -> Path:
    """The torch wheel for the CPU images, fetched into `wheels` by the host's pip (which knows
    where the CPU build lies); reused when already there, other torch versions removed."""
    def matching() -> list[Path]:
        return sorted(p for p in wheels.glob("torch-*.whl")
                      if p.name.split("-")[1].split("+")[0] == version)

    wheels.mkdir(parents=True, exist_ok=True)
    for stale in set(wheels.glob("torch-*.whl")) - set(matching()):
        stale.unlink()
    found = matching()
    if not found:
        on_line(f"fetching the torch {version} wheel with the host's pip")
        _stream([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                 "--python-version", CPU_IMAGE_PYTHON, f"torch=={version}", "-d", str(wheels)], on_line,
                failure=f"`pip download torch=={version}` failed: the host's pip must be able to find "
                        "that torch (a CPU build, for Python " + CPU_IMAGE_PYTHON + ")")
        found = matching()
        if not found:
            raise EnvironmentProblem(f"pip download torch=={version} left no torch wheel in {wheels}")
        found[-1].chmod(0o644)  # whatever the umask: builds link it, and modes count in the digest
    wheel = found[-1]
    if "+cpu" not in wheel.name:
        on_line(f"warning: {wheel.name} is not a +cpu build: the CPU image will pull CUDA libraries")
    return wheel


# --- the host's pip configuration -------------------------------------------------------------

def host_pip_config_files(environ: Optional[Mapping[str, str]] = None, home: Optional[Path] = None) -> list[Path]:
    """The existing pip configuration files, lowest priority first (pip's order: global, user,
    site, then PIP_CONFIG_FILE; the user files are skipped when PIP_CONFIG_FILE exists)."""
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    candidates = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs if d] + [Path("/etc/pip.conf")]
    if not (env_file and Path(env_file).is_file()):
        config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
        candidates += [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    candidates.append(Path(sys.prefix) / "pip.conf")
    if env_file:
        candidates.append(Path(env_file))
    seen, found = set(), []
    for path in candidates:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            found.append(path)
    return found


def host_pip_config(environ: Optional[Mapping[str, str]] = None, home: Optional[Path] = None) -> Optional[str]:
    """The host's pip configuration merged into one file (later files win, as in pip), plus
    the PIP_INDEX_URL-like settings of the environment; None when there is nothing."""
    environ = os.environ if environ is None else environ
    parser = configparser.RawConfigParser()
    for path in host_pip_config_files(environ, home):
        try:
            parser.read(path)
        except configparser.Error as error:
            raise BadInput(f"cannot read the pip configuration {path}: {error}") from None
    for setting in PIP_ENV_SETTINGS:
        if environ.get(f"PIP_{setting}"):
            if not parser.has_section("global"):
                parser.add_section("global")
            parser.set("global", setting.lower().replace("_", "-"), environ[f"PIP_{setting}"])
    if not parser.sections():
        return None
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


# Settings that name files on the host: inside a build they point at nothing (pip fails on a
# missing constraints file). The CA bundle travels separately, as .build-extras/ca.crt.
HOST_FILE_SETTINGS = ("constraint", "constraints", "requirement", "cert", "client-cert")
LOCATION_SETTINGS = ("find-links", "index-url", "extra-index-url")


def pip_config_for_build(text: Optional[str]) -> Optional[str]:
    """The pip configuration without what a build container cannot use: host files, local
    folders, file:// indexes; None when nothing is left."""
    if text is None:
        return None
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    for section in parser.sections():
        for option in HOST_FILE_SETTINGS:
            parser.remove_option(section, option)
        for option in LOCATION_SETTINGS:
            if not parser.has_option(section, option):
                continue
            kept = [value for value in parser.get(section, option).split()
                    if value.startswith(("http://", "https://"))]
            if kept:
                parser.set(section, option, " ".join(kept))
            else:
                parser.remove_option(section, option)
    if not any(parser.items(section) for section in parser.sections()):
        return None
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def host_ca_bundle(pip_text: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """The CA bundle the host's pip trusts: PIP_CERT, the pip configuration's `cert`,
    REQUESTS_CA_BUNDLE, SSL_CERT_FILE (the first that names an existing file)."""
    environ = os.environ if environ is None else environ
    candidates = [environ.get("PIP_CERT")]
    if pip_text:
        parser = configparser.RawConfigParser()
        parser.read_string(pip_text)
        candidates += [parser.get(section, "cert", fallback=None) for section in ("install", "download", "global")]
    candidates += [environ.get("REQUESTS_CA_BUNDLE"), environ.get("SSL_CERT_FILE")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _pip_config_text(pip_config: Optional[Path], on_line: OnLine) -> Optional[str]:
    if pip_config is None:
        text = host_pip_config()
        files = host_pip_config_files()
        if files:
            on_line(f"pip configuration for builds: {', '.join(map(str, files))}")
        return text
    if not Path(pip_config).is_file():
        raise BadInput(f"--pip-config {pip_config}: no such file")
    return Path(pip_config).read_text()


def _ca_bundle_path(ca_bundle: Optional[Path], pip_text: Optional[str], on_line: OnLine) -> Optional[Path]:
    if ca_bundle is None:
        found = host_ca_bundle(pip_text)
        if found is not None:
            on_line(f"CA bundle for builds: {found}")
        return found
    if not Path(ca_bundle).is_file():
        raise BadInput(f"--ca-bundle {ca_bundle}: no such file")
    return Path(ca_bundle)


def _warn_stale_ngc_versions(bake: BakeFile, variables: Mapping[str, str], targets: list[BakeTarget],
                             on_line: OnLine) -> None:
    """The NGC_* version labels document the default NGC release only."""
    if not any(t.labels.get(FLAVOR_LABEL) == "cuda" for t in targets):
        return
    release = "NGC_RELEASE"
    if release in bake.variables and variables[release] != bake.variables[release]:
        same = [name for name in bake.variables if name.startswith("NGC_") and name != release
                and variables[name] == bake.variables[name]]
        if same:
            on_line(f"warning: NGC_RELEASE={variables[release]} but {', '.join(same)} still describe "
                    f"{bake.variables[release]}: set them too (--set), or the image labels will be wrong")


def output_of(source: str, on_line: OnLine, on_output: Optional[OnOutput]) -> OnLine:
    """Where `source`'s own lines go: to `on_output` by source, else with nav-orch's."""
    return on_line if on_output is None else (lambda line: on_output(source, line))


def _stream(command: list[str], on_line: OnLine, failure: str) -> None:
    """Run a command (an argument list, never a shell string), passing its output line by line."""
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
    except OSError as error:
        raise EnvironmentProblem(f"{failure}: {error.strerror}") from None
    assert process.stdout is not None
    last: list[str] = []
    try:
        for line in process.stdout:
            line = line.rstrip("\n")
            on_line(line)
            last = (last + [line])[-5:]
    finally:
        if process.poll() is None and sys.exc_info()[0] is not None:
            process.kill()  # interrupted: leave no debootstrap or pip behind
        process.wait()
    if process.returncode != 0:
        detail = f" (last output: {' | '.join(line for line in last if line.strip())})" if last else ""
        raise EnvironmentProblem(f"{failure}: exit code {process.returncode}{detail}")
