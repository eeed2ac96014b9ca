"""Grouping work into batches of equal shape."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def batches_by_key(items: Sequence[T], key: Callable[[T], Hashable], size: int) -> Iterator[list[int]]:
    """Indices of ``items`` in batches of at most ``size`` whose members share ``key``; input order kept within."""
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[key(item)].append(index)
    for members in groups.values():
        for start in range(0, len(members), size):
            yield members[start : start + size]
