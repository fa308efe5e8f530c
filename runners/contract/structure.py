"""Nested call arguments and outputs as named leaves, and back. Standard library only: the runners,
the served model (beside which a Triton model folder carries a copy) and inplace name leaves alike.

A module's call takes and returns nested tuples, lists, dicts and dataclasses (Hugging Face's
`ModelOutput`s are both dict and dataclass) around tensors. Recording, exporting and swapping a
variant back in need the leaves by name (`args.0`, `kwargs.attention_mask`, `out.logits`, ...) and
a description of the structure (a `Node` tree, plain data that JSON carries) to rebuild what the
caller expects. Leaves are whatever `is_leaf` says (tensors, arrays); anything else that is not a
container (None, numbers, strings) is kept in the tree as a constant.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Optional

SEPARATOR = "."


@dataclasses.dataclass(frozen=True)
class Node:
    """One level of a structure: kind is leaf, const, tuple, list, dict or dataclass; `type` names
    a dataclass (module:qualname), `keys` the fields or dict keys, `value` a constant."""

    kind: str
    children: tuple[Node, ...] = ()
    keys: tuple[str, ...] = ()
    type: Optional[str] = None
    value: Any = None
    name: Optional[str] = None  # a leaf's name


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def flatten(value: Any, is_leaf: Callable[[Any], bool], prefix: str) -> tuple[dict[str, Any], Node]:
    """The leaves of `value` by name (`prefix`, then `.index` or `.key` per level), and its structure."""
    leaves: dict[str, Any] = {}

    def walk(item: Any, name: str) -> Node:
        if is_leaf(item):
            leaves[name] = item
            return Node("leaf", name=name)
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            # Only fields that are set: a ModelOutput leaves unused ones None, and rebuilds with them None.
            keys = tuple(f.name for f in dataclasses.fields(item) if getattr(item, f.name) is not None)
            return Node("dataclass", tuple(walk(getattr(item, key), f"{name}{SEPARATOR}{key}") for key in keys), keys,
                        type=_type_name(type(item)))
        if isinstance(item, Mapping):
            keys = tuple(str(key) for key in item)
            return Node("dict", tuple(walk(item[key], f"{name}{SEPARATOR}{key}") for key in item), keys)
        if isinstance(item, (tuple, list)):
            kind = "list" if isinstance(item, list) else "tuple"
            return Node(kind, tuple(walk(element, f"{name}{SEPARATOR}{index}") for index, element in enumerate(item)))
        return Node("const", value=item)

    return leaves, walk(value, prefix)


def default_resolve(type_name: str) -> type:
    module, _, qualname = type_name.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def unflatten(node: Node, leaves: Mapping[str, Any], resolve: Callable[[str], type] = default_resolve) -> Any:
    """Rebuild the structure `node` describes from leaves by name (as `flatten` named them)."""
    if node.kind == "leaf":
        assert node.name is not None
        return leaves[node.name]
    if node.kind == "const":
        return node.value
    children = [unflatten(child, leaves, resolve) for child in node.children]
    if node.kind == "tuple":
        return tuple(children)
    if node.kind == "list":
        return children
    if node.kind == "dict":
        return dict(zip(node.keys, children))
    if node.kind == "dataclass":
        assert node.type is not None
        return resolve(node.type)(**dict(zip(node.keys, children)))
    raise ValueError(f"unknown structure node {node.kind!r}")


def to_data(node: Node) -> dict[str, Any]:
    """The structure as plain data (for pipeline.json and the jobs)."""
    data: dict[str, Any] = {"kind": node.kind}
    if node.children:
        data["children"] = [to_data(child) for child in node.children]
    for field in ("keys", "type", "value", "name"):
        value = getattr(node, field)
        if value not in ((), None):
            data[field] = list(value) if field == "keys" else value
    return data


def from_data(data: Mapping[str, Any]) -> Node:
    return Node(data["kind"], tuple(from_data(child) for child in data.get("children", [])),
                tuple(data.get("keys", ())), data.get("type"), data.get("value"), data.get("name"))


def output_leaves(outputs: Any, is_leaf: Callable[[Any], bool]) -> tuple[dict[str, Any], Node]:
    """A model's outputs as named leaves, and their structure: a leaf alone is `output`, a tuple's or a
    list's items `output_0`, `output_1`, ..., a dict's or a ModelOutput's its keys (the fields that are
    set); nested levels add `.key` or `.index` (`past_key_values.0.1`). Every exporter, verifier and
    server of a variant names its outputs so, in this order."""
    if is_leaf(outputs):
        return {"output": outputs}, Node("leaf", name="output")
    leaves, node = flatten(outputs, is_leaf, "")
    if node.kind not in ("tuple", "list", "dict", "dataclass"):
        raise TypeError(f"the model returned {type(outputs).__name__}; expected tensors")

    def top(name: str) -> str:  # ".key..." or ".index..." from flatten's empty prefix
        head, _, rest = name[1:].partition(SEPARATOR)
        head = f"output_{head}" if node.kind in ("tuple", "list") else head
        return head + (SEPARATOR + rest if rest else "")

    def renamed(item: Node) -> Node:
        return dataclasses.replace(item, name=top(item.name) if item.name else None,
                                   children=tuple(renamed(child) for child in item.children))

    return {top(name): leaf for name, leaf in leaves.items()}, renamed(node)
