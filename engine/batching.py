"""Grouping work into batches of equal shape."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def batches_by_key(items: Iterable[T], key: Callable[[T], Hashable], size: int) -> Iterator[list[T]]:
    """``items`` in batches of at most ``size`` whose members share ``key``; input order kept within a key."""
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    for members in groups.values():
        for start in range(0, len(members), size):
            yield members[start : start + size]
