"""The ``passes`` entropy method: int8 symbol planes <-> an ANS stream (``constriction``) under the model of
:mod:`.passes_model`, in its 16 steps whatever the image size.

Each step's contexts are one tensor computation over all of the step's positions (the encoder, which knows every
symbol, computes each pass's features once), on any torch device (``device``: the host by default; integer
arithmetic, so the same stream on every device). The ANS coding runs on the host. Within a step, symbols are
coded table by table (ascending key), each table's symbols in one bulk call, in position-major, channel-minor
order. The rate of a symbol grid is known without coding (:func:`code_length`). Payload: the model's side bytes
(:func:`~.passes_model.side_info`; none for a model without side features), then the coder's 32-bit words,
little-endian.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from latentcodec.engine.entropy.context_model import RADIUS, SYMBOL_MAX
from latentcodec.engine.entropy.passes_model import (
    LOG_TABLE,
    PASSES,
    PassesModel,
    centre_columns,
    features,
    positions,
    side_info,
    with_logs,
)
from latentcodec.engine.errors import CorruptStreamError

Shape = tuple[int, int, int]
Run = tuple[int, np.ndarray]  # (table, its symbols' indices into the step's flattened [n, Cg] grid)


def coding_steps(model: PassesModel, shape: tuple[int, int, int]) -> Iterator[tuple[int, int, int]]:
    """``(step, pass, group)`` in coding order, skipping passes with no positions (one-row or one-column grids)."""
    _, h, w = shape
    for p in range(len(PASSES)):
        if 0 not in positions(h, w, p):
            for g in range(model.groups):
                yield p * model.groups + g, p, g


def _runs(keys: np.ndarray) -> list[Run]:
    """The step's symbols grouped by table, ascending; each group in the step's own order."""
    flat = keys.reshape(-1)
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = [*starts[1:], len(flat)]
    return [(int(ordered[a]), order[a:b]) for a, b in zip(starts, ends, strict=True)]


def _residuals(
    grid: torch.Tensor, model: PassesModel, side: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(step, keys [B * n, Cg], residuals [B * n, Cg])`` of every step of fully known grids ``[B, C, H, W]`` with
    their side features ``side`` ``[B, S]`` (image-major, then position)."""
    pass_features = {}
    for step, p, g in coding_steps(model, tuple(grid.shape[1:])):
        if p not in pass_features:
            pass_features[p] = features(grid, p, side)
        centre, keys = model.contexts(pass_features[p], step)
        pi, pj = PASSES[p]
        symbols = grid[:, model.group_channels(g), pi::2, pj::2].flatten(2).transpose(1, 2).reshape(centre.shape)
        yield step, keys, symbols.long() - centre + RADIUS


def batch_contexts(grids: torch.Tensor, model: PassesModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What coding a batch of grids ``[B, C, H, W]`` (int8, on any device) needs from its contexts, each step one
    computation over the whole batch: side features ``[B, S]`` (int8), and every step's table keys and residuals
    ``[B, T]`` (int32, steps in order, each ``[n, Cg]`` row-major), on the grids' device (:func:`encode_contexts`
    codes a row of them)."""
    side, batch = side_info(grids, model.side), len(grids)
    steps = list(_residuals(grids, model, side))
    keys = torch.cat([k.int().reshape(batch, -1) for _, k, _ in steps], 1)
    return side, keys, torch.cat([r.int().reshape(batch, -1) for _, _, r in steps], 1)


def encode_contexts(
    side: np.ndarray, keys: np.ndarray, residuals: np.ndarray, shape: Shape, model: PassesModel
) -> bytes:
    """The payload of one grid of ``shape`` from its row of :func:`batch_contexts` (host arrays): the ANS coding."""
    import constriction

    cut = np.cumsum([n * (model.channels // model.groups) for n in _step_positions(model, shape)])[:-1]
    steps = list(zip(np.split(keys, cut), np.split(residuals, cut), strict=True))
    coder, tables = constriction.stream.stack.AnsCoder(), model.categoricals
    for step_keys, step_residuals in reversed(steps):  # a stack: the last symbols go in first
        for table, members in reversed(_runs(step_keys)):
            coder.encode_reverse(step_residuals[members], tables[table])
    return side.astype(np.int8).tobytes() + coder.get_compressed().astype("<u4").tobytes()


def _step_positions(model: PassesModel, shape: Shape) -> list[int]:
    """How many positions each step codes (one symbol of each of its group's channels at each)."""
    return [int(np.prod(positions(*shape[1:], p))) for _, p, _ in coding_steps(model, shape)]


def _checked(symbols: np.ndarray, model: PassesModel, device: torch.device | None) -> torch.Tensor:
    if symbols.ndim != 3 or symbols.shape[0] != model.channels:
        raise ValueError(f"symbols must be [{model.channels}, H, W], got {symbols.shape}")
    if symbols.size and np.abs(symbols.astype(np.int16)).max() > SYMBOL_MAX:
        raise ValueError(f"symbols must lie in [-{SYMBOL_MAX}, {SYMBOL_MAX}]")
    grid = torch.from_numpy(np.array(symbols, dtype=np.int8))[None]  # a copy: planes may be read-only buffers
    return grid if device is None else grid.to(device)


def encode(symbols: np.ndarray, model: PassesModel, device: torch.device | None = None) -> bytes:
    """Code symbols ``[C, H, W]`` in ``[-127, 127]`` (C the model's channels), their contexts on ``device``."""
    side, keys, residuals = (t[0].cpu().numpy() for t in batch_contexts(_checked(symbols, model, device), model))
    return encode_contexts(side, keys, residuals, symbols.shape, model)


def code_length(symbols: np.ndarray, model: PassesModel, device: torch.device | None = None) -> float:
    """Bits the model's tables give ``symbols``, without coding: the payload is this plus at most three 32-bit
    words (the coder's state and rounding; measured in tests)."""
    _, keys, residuals = (t[0].cpu().long() for t in batch_contexts(_checked(symbols, model, device), model))
    return 8.0 * model.side + float(model.code_lengths[keys, residuals].sum())


def decode(
    payload: bytes, shape: tuple[int, int, int], model: PassesModel, device: torch.device | None = None
) -> np.ndarray:
    """Symbols ``[C, H, W]`` (int8) of a payload, their contexts on ``device``; raises CorruptStreamError if it is
    not a whole stream."""
    import constriction

    if shape[0] != model.channels:
        raise CorruptStreamError(f"passes-coded latents of {shape[0]} channels, the model has {model.channels}")
    side, words = payload[: model.side], payload[model.side :]
    if len(side) < model.side or len(words) % 4:
        raise CorruptStreamError("passes-coded latents are not side bytes and a whole number of 32-bit words")
    side = torch.tensor(list(side), dtype=torch.uint8).to(torch.int8)[None]
    if side.numel() and not 0 <= int(side.min()) <= int(side.max()) <= int(LOG_TABLE.max()):
        raise CorruptStreamError("passes-coded latents carry side information no encoder writes")
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    except Exception as exc:  # constriction refuses a final word of zero
        raise CorruptStreamError(f"bad passes-coded latents: {exc}") from None
    device = torch.device(device or "cpu")
    grid, tables, z, current = torch.zeros((1, *shape), dtype=torch.int8, device=device), model.categoricals, None, None
    side = side.to(device)
    for step, p, g in coding_steps(model, shape):
        if p != current:  # a pass's features once; each group then fills in its own centre columns
            z, current = features(grid, p, side), p
        centre, keys = (t.cpu() for t in model.contexts(z, step))
        values = np.empty(keys.numel(), dtype=np.int64)
        for table, members in _runs(keys.numpy()):
            values[members] = coder.decode(tables[table], len(members))
        symbols = torch.from_numpy(values).reshape(keys.shape) - RADIUS + centre
        if symbols.numel() and int(symbols.abs().max()) > SYMBOL_MAX:
            raise CorruptStreamError("passes-coded latents decode to symbols outside the int8 range")
        pi, pj = PASSES[p]
        symbols = symbols.to(device, torch.int8)
        target = grid[0, model.group_channels(g), pi::2, pj::2]
        target.copy_(symbols.T.reshape(target.shape))
        z[:, centre_columns(shape[0], model.group_channels(g))] = with_logs(symbols.T[None], LOG_TABLE)[0].T
    if not coder.is_empty():
        raise CorruptStreamError("passes-coded latents hold more data than their symbols")
    return grid[0].cpu().numpy()
