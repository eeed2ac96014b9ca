"""The ``context`` entropy method: int8 symbol planes <-> an ANS stream (``constriction``) under the context
model of :mod:`.context_model`.

The encoder knows every symbol, so it computes all contexts at once and encodes in reverse decode order; the
decoder walks the wavefronts and channel groups, computing each step's contexts from what it has decoded.
Within a step symbols go table by table (ascending key), then channel, then row. Payload: the coder's 32-bit
words, little-endian.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from latentcodec.engine.entropy.context_model import (
    RADIUS,
    SYMBOL_MAX,
    ContextModel,
    padded_grid,
    wavefront,
    wavefronts,
)
from latentcodec.engine.errors import CorruptStreamError

BLOCK = 4096  # positions whose contexts the encoder computes at once (bounded memory at any image size)


def _blocks(wavefront_of: np.ndarray) -> list[slice]:
    """Runs of about ``BLOCK`` positions (sorted by wavefront) that start and end on wavefront boundaries."""
    edges = np.flatnonzero(np.diff(wavefront_of)) + 1
    cuts = edges[np.diff(np.concatenate([[0], edges // BLOCK])) > 0]
    bounds = [0, *cuts.tolist(), len(wavefront_of)]
    return [slice(a, b) for a, b in pairwise(bounds)]


def _runs(model: ContextModel, grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """The (table, residuals) runs of these positions' symbols, in decode order."""
    steps, keys, residuals = [], [], []
    for group in range(model.groups):
        centre, key = model.contexts(grid, rows, cols, group)
        symbols = grid[model.group_channels(group), rows + 1, cols + 1]
        steps.append(np.broadcast_to(((2 * rows + cols) * model.groups + group)[None], key.shape).ravel())
        keys.append(key.ravel())
        residuals.append((symbols - centre + RADIUS).ravel())
    step, key, residual = np.concatenate(steps), np.concatenate(keys), np.concatenate(residuals)
    order = np.lexsort((key, step))  # stable: channel, then row, within a step's table
    step, key, residual = step[order], key[order], residual[order].astype(np.int32)
    starts = np.flatnonzero(np.concatenate([[True], (np.diff(step) != 0) | (np.diff(key) != 0)]))
    return [(int(key[a]), residual[a:b]) for a, b in zip(starts, [*starts[1:], len(key)], strict=True)]


def encode(symbols: np.ndarray, model: ContextModel) -> bytes:
    """Code int8-range symbols ``[C, H, W]`` (C the model's channels)."""
    import constriction

    h, w = symbols.shape[1:]
    grid = padded_grid(symbols)
    wavefront_of = (2 * np.arange(h)[:, None] + np.arange(w)[None]).ravel()
    by_wavefront = np.argsort(wavefront_of, kind="stable")  # decode order: rows ascending within a wavefront
    coder, models = constriction.stream.stack.AnsCoder(), model.categoricals
    for block in reversed(_blocks(wavefront_of[by_wavefront])):  # a stack: the last symbols go in first
        rows, cols = np.divmod(by_wavefront[block], w)
        for table, residuals in reversed(_runs(model, grid, rows, cols)):
            coder.encode_reverse(residuals, models[table])
    return coder.get_compressed().astype("<u4").tobytes()


def decode(payload: bytes, shape: tuple[int, int, int], model: ContextModel) -> np.ndarray:
    """Symbols ``[C, H, W]`` (int8) of a payload; raises CorruptStreamError if it is not a whole stream."""
    import constriction

    c, h, w = shape
    if c != model.channels:
        raise CorruptStreamError(f"context-coded latents of {c} channels, the model has {model.channels}")
    if len(payload) % 4:
        raise CorruptStreamError("context-coded latents are not a whole number of 32-bit words")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
    except Exception as exc:  # constriction refuses a final word of zero
        raise CorruptStreamError(f"bad context-coded latents: {exc}") from None
    grid, models = padded_grid(np.zeros(shape, dtype=np.int8)), model.categoricals
    for t in range(wavefronts(h, w)):
        rows, cols = wavefront(t, h, w)
        if not rows.size:  # a one-column grid has positions on even wavefronts only
            continue
        for group in range(model.groups):
            centre, key = model.contexts(grid, rows, cols, group)
            flat = key.ravel()
            order = np.argsort(flat, kind="stable")
            values = np.empty(flat.shape, dtype=np.int64)
            sorted_keys = flat[order]
            cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
            for start, end in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(flat)]]), strict=True):
                values[order[start:end]] = coder.decode(models[sorted_keys[start]], end - start)
            symbols = values.reshape(key.shape) - RADIUS + centre
            if np.abs(symbols).max(initial=0) > SYMBOL_MAX:
                raise CorruptStreamError("context-coded latents decode to symbols outside the int8 range")
            grid[model.group_channels(group), rows + 1, cols + 1] = symbols
    if not coder.is_empty():
        raise CorruptStreamError("context-coded latents hold more data than their symbols")
    return grid[:, 1:, 1:-1].astype(np.int8)
