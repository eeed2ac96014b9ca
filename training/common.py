"""What the training scripts share: options from their config dataclass, a cache of encoded images, a log and
checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch

S = TypeVar("S")


class _AsTuple(argparse.Action):
    """Stores the values of a ``nargs="+"`` option as a tuple (config dataclasses hash and compare them)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, tuple(values))


def add_config_arguments(parser: argparse.ArgumentParser, defaults: Any, skip: tuple[str, ...] = ()) -> None:
    """A ``--flag`` per field of the config dataclass instance ``defaults`` (``--limit``, ``--cache`` included; fields
    typed ``tuple[float, ...]`` take several numbers)."""
    types = {field.name: str(field.type) for field in dataclasses.fields(defaults)}
    for name, value in vars(defaults).items():
        flag = f"--{name.replace('_', '-')}"
        if name in skip:
            continue
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif types[name].startswith("tuple[float"):
            parser.add_argument(flag, type=float, nargs="+", default=value, action=_AsTuple)
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


def save_checkpoint(path: Path, step: int, parts: dict[str, Any], generator: torch.Generator, config: Any) -> None:
    """Step ``step`` of a run: each part's state (model, optimizer, schedule), the random states and the config,
    written atomically."""
    state = {
        "step": step,
        **{name: part.state_dict() for name, part in parts.items()},
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "config": json.dumps(asdict(config), default=str),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def resume(path: Path, parts: dict[str, Any], generator: torch.Generator, log: Callable[[str], None]) -> int:
    """The step the checkpoint at ``path`` reached (0 without one), its states loaded into ``parts``."""
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=False)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    log(f"resumed from step {state['step']} ({path})")
    return int(state["step"])


def save_fp16(model: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """fp16 safetensors with one sorted metadata entry (equal weights make equal files: registries pin sha256)."""
    from safetensors.torch import save_file

    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = json.dumps({k: str(v) for k, v in metadata.items()}, sort_keys=True)
    save_file(state, str(path), metadata={"latentcodec": entry})


def training_main(argv: list[str] | None, prog: str, doc: str | None, config_type: type, train: Callable) -> None:
    """The command line of a training script whose config dataclass has ``output`` and ``folders`` fields."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("output", type=Path, help="where to write the .safetensors weights")
    parser.add_argument("--folders", type=Path, nargs="+", default=list(config_type.folders))
    add_config_arguments(parser, config_type(Path()), skip=("output",))
    parser.add_argument("--log", type=Path, help="append the log here too")
    args = vars(parser.parse_args(argv))
    log = printer(args.pop("log"))
    args["folders"] = tuple(args["folders"])
    train(config_type(**args), log)


def fit(
    parts: dict[str, Any],
    losses: Callable[[], dict[str, torch.Tensor]],
    generator: torch.Generator,
    config: Any,
    log: Callable[[str], None],
    log_every: int,
    started: float,
) -> None:
    """Optimizer steps on ``losses()["total"]`` (gradients clipped to norm 1) up to ``config.steps``: ``parts``
    holds the model, optimizer and schedule; resumed from and checkpointed (every ``config.checkpoint_every``
    steps) beside ``config.output``; the loss terms logged every ``log_every`` steps."""
    model, optimizer, schedule = parts["model"], parts["optimizer"], parts["schedule"]
    checkpoint = config.output.with_suffix(".checkpoint.pt")
    for step in range(resume(checkpoint, parts, generator, log) + 1, config.steps + 1):
        terms = losses()
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == config.steps:
            text = ", ".join(f"{k} {v.item():.4f}" for k, v in terms.items())
            log(f"step {step}/{config.steps}: {text} ({time.perf_counter() - started:.0f} s)")
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(checkpoint, step, parts, generator, config)
    model.eval()
