"""What the training scripts share: options from their config dataclass, and a cache of encoded images."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

S = TypeVar("S")


def add_config_arguments(parser: argparse.ArgumentParser, defaults: Any, skip: tuple[str, ...] = ()) -> None:
    """A ``--flag`` per field of the config dataclass instance ``defaults`` (``--limit``, ``--cache`` included)."""
    for name, value in vars(defaults).items():
        flag = f"--{name.replace('_', '-')}"
        if name in skip:
            continue
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif value is not None and not isinstance(value, tuple):
            parser.add_argument(flag, type=type(value), default=value)
    parser.add_argument("--limit", type=int, default=None, help="images per folder (quick runs)")
    parser.add_argument("--cache", type=Path, default=None, help="keep the encoded images here between runs")


def printer(log_file: Path | None) -> Callable[[str], None]:
    """A log function: prints each line, and appends it to ``log_file`` when one is given."""

    def log(line: str) -> None:
        print(line, flush=True)
        if log_file:
            with log_file.open("a") as handle:
                handle.write(line + "\n")

    return log


def cached(
    cache: Path | None, recipe: dict, make: Callable[[], list[list[S]]], sample: Callable[..., S]
) -> list[list[S]]:
    """``make()``'s groups of samples (dataclasses), kept in ``cache`` for runs of the same ``recipe``."""
    if cache is not None and cache.is_file():
        stored = torch.load(cache)
        if stored.get("recipe") == recipe:
            return [[sample(**fields) for fields in group] for group in stored["groups"]]
    groups = make()
    if cache is not None:
        torch.save({"recipe": recipe, "groups": [[vars(s) for s in group] for group in groups]}, cache)
    return groups
