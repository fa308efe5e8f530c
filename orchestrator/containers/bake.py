"""docker-bake.hcl as typed data, for the Docker API build path (where `docker buildx bake`
is missing). Only the subset that the bake file documents is understood: variables with
defaults, groups, and targets with context, dockerfile, args, tags and labels; the only
interpolation is `${VAR}`. Anything else is an error rather than a silently different build.

Variable precedence is bake's own: explicit overrides > environment variables > defaults.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import hcl2
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import BadInput

TARGET_FIELDS = ("context", "dockerfile", "args", "tags", "labels", "contexts")
DEFAULT_GROUP = "default"

# `$${` and `%%{` are HCL's escapes for a literal `${` / `%{`; `${...}` is interpolation and
# `%{...}` a template directive.
_TEMPLATE = re.compile(r"\$\$\{|%%\{|\$\{([^}]*)\}|%\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


class BakeError(BadInput):
    """docker-bake.hcl uses something nav-orch cannot resolve, or a name is unknown."""


class BakeTarget(BaseModel):
    """One target; strings still hold `${VAR}` until `BakeFile.resolve_target`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    context: str = "."
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    # Named build contexts; "target:NAME" values make this target build after NAME (see
    # `build_order`), as bake itself does.
    contexts: dict[str, str] = Field(default_factory=dict)

    def depends_on(self) -> list[str]:
        return [value.removeprefix("target:") for value in self.contexts.values() if value.startswith("target:")]


class BakeFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    variables: dict[str, str]  # name -> default
    groups: dict[str, list[str]]
    targets: dict[str, BakeTarget]

    @property
    def root(self) -> Path:
        """Target contexts are relative to the bake file's folder."""
        return self.path.parent

    def resolve_variables(self, overrides: Optional[Mapping[str, str]] = None,
                          environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
        """Every variable's value: explicit override > environment > default."""
        overrides = dict(overrides or {})
        environ = os.environ if environ is None else environ
        unknown = sorted(set(overrides) - set(self.variables))
        if unknown:
            raise BakeError(f"{self.path.name} declares no variable {', '.join(unknown)} "
                            f"(declared: {', '.join(sorted(self.variables))})")
        values = {}
        for name, default in self.variables.items():
            if name in overrides:
                values[name] = str(overrides[name])
            elif name in environ:
                values[name] = environ[name]
            else:
                values[name] = default
        # A default may itself name another variable (bake allows it); resolve those too.
        return {name: interpolate(value, values, f"variable {name}", depth=0) for name, value in values.items()}

    def target_names(self, selection: Union[str, Sequence[str], None] = None) -> list[str]:
        """Target names of a group or target name, or of several; none means `default`."""
        names = [selection] if isinstance(selection, str) else list(selection or [DEFAULT_GROUP])
        found: list[str] = []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name in trail:
                raise BakeError(f"{self.path.name}: group {name!r} includes itself "
                                f"({' -> '.join((*trail, name))})")
            if name in self.groups:
                for member in self.groups[name]:
                    visit(member, (*trail, name))
            elif name in self.targets:
                if name not in found:
                    found.append(name)
            else:
                raise BakeError(f"no group or target {name!r} in {self.path.name} "
                                f"(groups: {', '.join(self.groups) or 'none'}; "
                                f"targets: {', '.join(self.targets) or 'none'})")

        for name in names:
            visit(name, ())
        return found

    def resolve_target(self, name: str, variables: Mapping[str, str]) -> BakeTarget:
        target = self.targets[name]
        where = f"target {name!r}"

        def sub(text: str, field: str) -> str:
            return interpolate(text, variables, f"{where} {field}")

        return BakeTarget(
            name=name,
            context=sub(target.context, "context"),
            dockerfile=sub(target.dockerfile, "dockerfile"),
            args={key: sub(value, f"args.{key}") for key, value in target.args.items()},
            tags=[sub(tag, "tags") for tag in target.tags],
            labels={key: sub(value, f"labels[{key!r}]") for key, value in target.labels.items()},
            contexts={sub(key, "contexts"): sub(value, f"contexts[{key!r}]") for key, value in target.contexts.items()},
        )

    def build_order(self, names: Sequence[str]) -> list[str]:
        """`names` plus the targets they build FROM (`contexts` = "target:NAME"), each after what it
        needs; otherwise in the given order."""
        ordered: list[str] = []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name in ordered:
                return
            if name in trail:
                raise BakeError(f"{self.path.name}: target {name!r} builds from itself ({' -> '.join((*trail, name))})")
            if name not in self.targets:
                raise BakeError(f"{self.path.name}: a target's contexts name {name!r}, which is no target")
            for needed in self.targets[name].depends_on():
                visit(needed, (*trail, name))
            ordered.append(name)

        for name in names:
            visit(name, ())
        return ordered

    def select(self, selection: Union[str, Sequence[str], None] = None,
               overrides: Optional[Mapping[str, str]] = None,
               environ: Optional[Mapping[str, str]] = None) -> list[BakeTarget]:
        """The resolved targets of a group (`cpu`, `cuda`, `default`) or of named targets."""
        variables = self.resolve_variables(overrides, environ)
        return [self.resolve_target(name, variables) for name in self.target_names(selection)]


def interpolate(text: str, variables: Mapping[str, str], where: str, depth: int = 0) -> str:
    """Replace `${VAR}`; any other template form is an error naming where it was found."""

    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        if token == "%%{":
            return "%{"
        if token == "%{":
            raise BakeError(f"{where}: template directives (%{{...}}) are not supported; use ${{VAR}} only")
        name = match.group(1).strip()
        if not _NAME.fullmatch(name):
            raise BakeError(f"{where}: unsupported interpolation {token!r}: only ${{VAR}} of a declared "
                            "variable is supported (no functions, expressions or target references)")
        if name not in variables:
            raise BakeError(f"{where}: ${{{name}}} names no declared variable")
        value = variables[name]
        if depth < 8 and "${" in value:
            value = interpolate(value, variables, f"variable {name}", depth + 1)
        return value

    return _TEMPLATE.sub(replace, text)


def load_bake_file(path: Path) -> BakeFile:
    """Parse docker-bake.hcl into typed data (strings still hold `${VAR}`)."""
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as error:
        raise BakeError(f"cannot read {path}: {error.strerror}") from None
    try:
        raw = hcl2.loads(text)
    except Exception as error:  # lark raises many kinds; all mean the same to the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BakeError(f"{path.name} is not valid HCL: {first}") from None
    raw = _clean(raw)
    unknown_blocks = sorted(set(raw) - {"variable", "group", "target"})
    if unknown_blocks:
        raise BakeError(f"{path.name}: unsupported top-level entries {', '.join(unknown_blocks)} "
                        "(only variable, group and target blocks)")

    variables: dict[str, str] = {}
    for name, body in _blocks(raw.get("variable"), "variable", path):
        if set(body) - {"default", "description"}:
            raise BakeError(f"{path.name}: variable {name!r}: only `default` (and `description`) are supported")
        variables[name] = _scalar(body.get("default", ""), f"variable {name!r} default")

    groups: dict[str, list[str]] = {}
    for name, body in _blocks(raw.get("group"), "group", path):
        if set(body) - {"targets", "description"}:
            raise BakeError(f"{path.name}: group {name!r}: only `targets` is supported")
        groups[name] = [_scalar(item, f"group {name!r} targets") for item in _list(body.get("targets", []))]

    targets: dict[str, BakeTarget] = {}
    for name, body in _blocks(raw.get("target"), "target", path):
        extra = sorted(set(body) - set(TARGET_FIELDS) - {"description"})
        if extra:
            raise BakeError(f"{path.name}: target {name!r}: unsupported field(s) {', '.join(extra)} "
                            f"(supported: {', '.join(TARGET_FIELDS)})")
        where = f"target {name!r}"
        fields: dict[str, Any] = {"name": name}
        for key in ("context", "dockerfile"):
            if key in body:
                fields[key] = _scalar(body[key], f"{where} {key}")
        for key in ("args", "labels", "contexts"):
            if key in body:
                if not isinstance(body[key], dict):
                    raise BakeError(f"{path.name}: {where} {key} must be a map of strings")
                fields[key] = {_unquote(str(k)): _scalar(v, f"{where} {key}.{k}") for k, v in body[key].items()}
        if "tags" in body:
            fields["tags"] = [_scalar(tag, f"{where} tags") for tag in _list(body["tags"])]
        targets[name] = BakeTarget(**fields)

    for group, members in groups.items():
        for member in members:
            if member not in groups and member not in targets:
                raise BakeError(f"{path.name}: group {group!r} lists {member!r}, which is neither a group nor a target")
    return BakeFile(path=path, variables=variables, groups=groups, targets=targets)


# --- python-hcl2 output, v7 and v8 ----------------------------------------------------------
# v8 keeps the quotes around strings and block labels ('"25.10"') and adds `__is_block__`
# and `__comments__` keys; v7 strips quotes. Non-string expressions come back as '${...}'.


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("__"))}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if inner.startswith("<<"):
            raise BakeError("heredoc strings are not supported in docker-bake.hcl; use a quoted string")
        return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), inner)
    return text


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return _unquote(value)
    raise BakeError(f"{where}: expected a string, got {type(value).__name__}")


def _list(value: Any) -> list:
    if isinstance(value, list):
        return value
    raise BakeError(f"expected a list, got {value!r}")


def _blocks(entries: Any, kind: str, path: Path):
    """(label, body) of each `kind "label" { ... }` block."""
    for entry in entries or []:
        if not isinstance(entry, dict):
            raise BakeError(f"{path.name}: malformed {kind} block")
        for label, body in entry.items():
            if not isinstance(body, dict):
                raise BakeError(f"{path.name}: {kind} {label!r} must be a block")
            yield _unquote(label), body
