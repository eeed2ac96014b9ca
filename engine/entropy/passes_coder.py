"""The ``passes`` entropy method: int8 symbol planes <-> an ANS stream (``constriction``) under the model of
:mod:`.passes_model`, in its 16 steps whatever the image size.

Each step's contexts are one tensor computation over all of the step's positions (the encoder, which knows every
symbol, computes each pass's features once). Within a step, symbols are coded table by table (ascending key),
each table's symbols in one bulk call, in position-major, channel-minor order. The rate of a symbol grid is known
without coding (:func:`code_length`). Payload: the model's side bytes (:func:`~.passes_model.side_info`; none for
a model without side features), then the coder's 32-bit words, little-endian.
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

Run = tuple[int, np.ndarray]  # (table, its symbols' indices into the step's flattened [n, Cg] grid)


def _steps(model: PassesModel, shape: tuple[int, int, int]) -> Iterator[tuple[int, int, int]]:
    """``(step, pass, group)`` in coding order, skipping passes with no positions (one-row or one-column grids)."""
    _, h, w = shape
    for p in range(len(PASSES)):
        if 0 not in positions(h, w, p):
            for g in range(model.groups):
                yield p * model.groups + g, p, g


def _runs(keys: torch.Tensor) -> list[Run]:
    """The step's symbols grouped by table, ascending; each group in the step's own order."""
    flat = keys.reshape(-1).numpy()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = [*starts[1:], len(flat)]
    return [(int(ordered[a]), order[a:b]) for a, b in zip(starts, ends, strict=True)]


def _residuals(
    grid: torch.Tensor, model: PassesModel, side: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(step, keys [n, Cg], residuals [n, Cg])`` of every step of a fully known grid ``[1, C, H, W]`` with its
    side features ``side`` ``[1, S]``."""
    pass_features = {}
    for step, p, g in _steps(model, tuple(grid.shape[1:])):
        if p not in pass_features:
            pass_features[p] = features(grid, p, side)
        centre, keys = model.contexts(pass_features[p], step)
        pi, pj = PASSES[p]
        symbols = grid[0, model.group_channels(g), pi::2, pj::2].reshape(centre.shape[1], -1).T.long()
        yield step, keys, symbols - centre + RADIUS


def _checked(symbols: np.ndarray, model: PassesModel) -> torch.Tensor:
    if symbols.ndim != 3 or symbols.shape[0] != model.channels:
        raise ValueError(f"symbols must be [{model.channels}, H, W], got {symbols.shape}")
    if symbols.size and np.abs(symbols.astype(np.int16)).max() > SYMBOL_MAX:
        raise ValueError(f"symbols must lie in [-{SYMBOL_MAX}, {SYMBOL_MAX}]")
    return torch.from_numpy(np.array(symbols, dtype=np.int8))[None]  # a copy: planes may be read-only buffers


def encode(symbols: np.ndarray, model: PassesModel) -> bytes:
    """Code symbols ``[C, H, W]`` in ``[-127, 127]`` (C the model's channels)."""
    import constriction

    grid, tables = _checked(symbols, model), model.categoricals
    side = side_info(grid, model.side)
    steps = _residuals(grid, model, side)
    coded = [(keys, residuals.reshape(-1).numpy().astype(np.int32)) for _, keys, residuals in steps]
    coder = constriction.stream.stack.AnsCoder()
    for keys, residuals in reversed(coded):  # a stack: the last symbols go in first
        for table, members in reversed(_runs(keys)):
            coder.encode_reverse(residuals[members], tables[table])
    return side.numpy().tobytes() + coder.get_compressed().astype("<u4").tobytes()


def code_length(symbols: np.ndarray, model: PassesModel) -> float:
    """Bits the model's tables give ``symbols``, without coding: the payload is this plus at most three 32-bit
    words (the coder's state and rounding; measured in tests)."""
    grid, lengths = _checked(symbols, model), model.code_lengths
    steps = _residuals(grid, model, side_info(grid, model.side))
    return 8.0 * model.side + sum(float(lengths[keys, residuals].sum()) for _, keys, residuals in steps)


def decode(payload: bytes, shape: tuple[int, int, int], model: PassesModel) -> np.ndarray:
    """Symbols ``[C, H, W]`` (int8) of a payload; raises CorruptStreamError if it is not a whole stream."""
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
    grid, tables, z, current = torch.zeros((1, *shape), dtype=torch.int8), model.categoricals, None, None
    for step, p, g in _steps(model, shape):
        if p != current:  # a pass's features once; each group then fills in its own centre columns
            z, current = features(grid, p, side), p
        centre, keys = model.contexts(z, step)
        values = np.empty(keys.numel(), dtype=np.int64)
        for table, members in _runs(keys):
            values[members] = coder.decode(tables[table], len(members))
        symbols = torch.from_numpy(values).reshape(keys.shape) - RADIUS + centre
        if symbols.numel() and int(symbols.abs().max()) > SYMBOL_MAX:
            raise CorruptStreamError("passes-coded latents decode to symbols outside the int8 range")
        pi, pj = PASSES[p]
        symbols = symbols.to(torch.int8)
        target = grid[0, model.group_channels(g), pi::2, pj::2]
        target.copy_(symbols.T.reshape(target.shape))
        z[:, centre_columns(shape[0], model.group_channels(g))] = with_logs(symbols.T[None], LOG_TABLE)[0].T
    if not coder.is_empty():
        raise CorruptStreamError("passes-coded latents hold more data than their symbols")
    return grid[0].numpy()
