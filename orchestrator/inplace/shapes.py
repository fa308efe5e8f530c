"""Which recorded calls to keep, and what they say about each input's dynamic axes.

A module in a pipeline is called with different batch sizes and sequence lengths (a decoder once
per generated token). Keeping every call would hold every tensor in memory; keeping the first N
would miss the shapes that come late (a decoder's longer sequences). So at most `limit` calls are
kept, one per distinct signature of shapes first, spread from the first signature to the latest,
and the axes whose size changed across all calls seen (not only those
kept) are dynamic, with the smallest, most common and largest size seen.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from runners.contract.protocol import AxisRange

Shape = tuple[int, ...]
Signature = tuple[tuple[str, Shape], ...]  # every input's name and shape, in order


def signature(shapes: Mapping[str, Shape]) -> Signature:
    return tuple((name, tuple(shape)) for name, shape in shapes.items())


@dataclass
class CallLog:
    """The calls of one module: every signature seen (counted), and at most `limit` calls kept."""

    limit: int
    seen: Counter[Signature] = field(default_factory=Counter)
    kept: list[tuple[Signature, Any]] = field(default_factory=list)
    stride: int = 1

    def record(self, shapes: Mapping[str, Shape], call: Any) -> bool:
        """Note a call; True if it is kept. A new signature replaces a kept call of a signature kept
        more than once; where every kept signature is distinct, the kept ones thin out evenly, so
        the calls kept spread from the first signature seen to the latest."""
        key = signature(shapes)
        new = key not in self.seen
        self.seen[key] += 1
        if self.stride == 1 and len(self.kept) < self.limit:
            self.kept.append((key, call))
            return True
        if not new:
            return False
        counts = Counter(kept_key for kept_key, _ in self.kept)
        repeated = [index for index, (kept_key, _) in enumerate(self.kept) if counts[kept_key] > 1]
        if repeated:
            self.kept[repeated[-1]] = (key, call)
            return True
        if self.limit < 2:
            return False
        # Every `stride`-th signature seen stays, and the latest until a later one comes; the
        # stride doubles whenever they outgrow the limit.
        order = {seen_key: index for index, seen_key in enumerate(self.seen)}
        if order[self.kept[-1][0]] % self.stride:
            self.kept.pop()
        self.kept.append((key, call))
        while len(self.kept) > self.limit:
            self.stride *= 2
            self.kept = [entry for entry in self.kept[:-1] if order[entry[0]] % self.stride == 0] + [self.kept[-1]]
        return True

    def calls(self) -> list[Any]:
        return [call for _, call in self.kept]

    def dynamic_axes(self, within: Optional[Collection[Signature]] = None) -> dict[str, list[AxisRange]]:
        """For each input, the axes whose size changed between calls (those of the signatures
        `within`, if given), with the sizes' range; the most common size is the typical one (the
        larger on a tie). Raises ValueError where an input's rank changed, or an input was not in
        every call."""
        seen = {key: count for key, count in self.seen.items() if within is None or key in within}
        names = {name for key in seen for name, _ in key}
        found: dict[str, list[AxisRange]] = {}
        for name in sorted(names):
            sizes: list[tuple[Shape, int]] = []
            for key, count in seen.items():
                shape = dict(key).get(name)
                if shape is None:
                    raise ValueError(f"input {name!r} is missing from some calls; each call must pass the same inputs")
                sizes.append((shape, count))
            ranks = {len(shape) for shape, _ in sizes}
            if len(ranks) > 1:
                raise ValueError(f"input {name!r} changed its number of dimensions between calls: {sorted(ranks)}")
            found[name] = [_range(axis, [(shape[axis], count) for shape, count in sizes])
                           for axis in range(ranks.pop()) if len({shape[axis] for shape, _ in sizes}) > 1]
        return found


def _range(axis: int, sizes: Sequence[tuple[int, int]]) -> AxisRange:
    counts: Counter[int] = Counter()
    for size, count in sizes:
        counts[size] += count
    typical = max(counts, key=lambda size: (counts[size], size))
    return AxisRange(axis=axis, min=min(counts), typical=typical, max=max(counts))
