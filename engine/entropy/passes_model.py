"""The probability model of the ``passes`` entropy method: 16 sequential steps at any image size, integer-exact.

Uniform symbols ``q[c, i, j]`` (int8) are coded in four spatial passes over the 2x2 phases (``PASSES``: even/even,
odd/odd, even/odd, odd/even), each split into channel groups: step ``s = pass * groups + group``. A symbol sees
its 3x3 neighbourhood in every channel (``OFFSETS``) where those symbols are already known: neighbours of earlier
passes in all channels, and its own position in earlier groups of its pass (:func:`visible`). Each symbol's
distribution is a discretized logistic whose mean and log-scale come from one small network per step:

- features ``z``: the 9 x C neighbourhood symbols and their log-magnitudes (``LOG_TABLE``), all int8, then the
  model's ``side`` features (none for ``passes_v1``): the mean log-magnitude of each of the first ``side``
  channels over the whole grid, which the payload carries (:func:`side_info`), so that the first step, which sees
  no symbol, still knows how coarse the symbols are;
- a hidden layer of ``K`` ReLU units: ``h = relu(z @ Wh + bh)`` (int8 weights, an int8 x int8 -> int32 matrix
  product, ``torch._int_mm``: exact integer arithmetic on any device, thread count or BLAS);
- the mean and log-scale of each of the group's channels, fixed point ``OUT_BITS``:
  ``z @ Wz`` (14-bit weights as two int8 planes) plus ``(h @ Wh_out) >> H_BITS`` (a float64 product of integers
  whose partial sums are checked at load to stay below 2**53, so exact) plus a bias.

The integer part of the mean centres a 24-bit table, the next two bits pick one of ``PHASES`` sub-symbol offsets,
the log-scale picks a bin: the same tables as the ``context`` method. Weights and tables are integers shipped with
the package (``bundled/passes_model_*.safetensors``, sha256-pinned; ``training/passes_model.py`` makes them);
weights on features a step cannot see are zeroed at load, so encoder and decoder agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentcodec.engine.entropy.context_model import (  # the tables' layout, shared with the context method
    ALPHABET,
    PHASES,
    PRECISION,
    SYMBOL_MAX,
    GroupedTables,
    categoricals,
)

PASSES = ((0, 0), (1, 1), (0, 1), (1, 0))  # (row, column) parity of each pass's positions, in coding order
OFFSETS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # the 3x3 neighbourhood, centre at 4
CENTRE = 4
LOG_SCALE = 24  # log-magnitude features: round(24 * log1p(|q|)), at most 117 for |q| <= 127
LOG_TABLE = torch.tensor([round(LOG_SCALE * float(np.log1p(a))) for a in range(128)], dtype=torch.int8)
OUT_BITS = 10  # fractional bits of the predicted mean and log-scale
H_BITS = 8  # extra fractional bits of the hidden units' output weights
EXACT_FLOAT = 1 << 52
ROWS = 1 << 16  # positions whose contexts are computed at once


def visible(channels: int, groups: int, side: int = 0) -> torch.Tensor:
    """``[steps, 9 * 2C + side]`` booleans: which features each step may read (a neighbour's symbol and its
    log-magnitude together: :func:`features` lays them out offset-major, then symbols before logs, then channel;
    the side features, last, are seen by every step)."""
    size = channels // groups
    mask = torch.zeros(len(PASSES) * groups, len(OFFSETS), channels, dtype=torch.bool)
    for p, (pi, pj) in enumerate(PASSES):
        for o, (dy, dx) in enumerate(OFFSETS):
            earlier_pass = PASSES.index(((pi + dy) % 2, (pj + dx) % 2)) < p
            for g in range(groups):
                if earlier_pass:
                    mask[p * groups + g, o] = True
                elif o == CENTRE:
                    mask[p * groups + g, o, : g * size] = True
    mask = torch.cat([mask, mask], -1).reshape(len(mask), -1)
    return torch.cat([mask, torch.ones(len(mask), side, dtype=torch.bool)], 1)


def positions(height: int, width: int, pass_index: int) -> tuple[int, int]:
    """How many rows and columns of the grid belong to a pass."""
    pi, pj = PASSES[pass_index]
    return (height - pi + 1) // 2, (width - pj + 1) // 2


def with_logs(grid: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``[B, 2C, H, W]``: the symbols, then ``table`` of their magnitudes."""
    return torch.cat([grid, table.to(grid.device)[grid.abs().long()]], 1)


def neighbourhoods(grid: torch.Tensor, pass_index: int) -> torch.Tensor:
    """``[B, n, 9 * C]``: each of the pass's positions' 3x3 neighbourhood in every channel (zeros outside the grid),
    offset-major, positions row-major; ``grid`` ``[B, C, H, W]`` of any dtype."""
    b, c, h, w = grid.shape
    pi, pj = PASSES[pass_index]
    rows, cols = positions(h, w, pass_index)
    padded = F.pad(grid.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # channels last: each tap is [B, rows, cols, C]
    taps = [padded[:, 1 + pi + dy :: 2, 1 + pj + dx :: 2][:, :rows, :cols] for dy, dx in OFFSETS]
    return torch.stack(taps, 3).reshape(b, rows * cols, len(OFFSETS) * c)


def side_info(grid: torch.Tensor, side: int) -> torch.Tensor:
    """``[B, side]`` int8: the mean log-magnitude feature of each of the first ``side`` channels of a grid
    ``[B, C, H, W]``, rounded half up in integer arithmetic (at most ``LOG_TABLE``'s largest value)."""
    total = LOG_TABLE.to(grid.device)[grid[:, :side].abs().long()].long().sum((2, 3))
    count = max(1, grid.shape[2] * grid.shape[3])
    return torch.div(2 * total + count, 2 * count, rounding_mode="floor").to(torch.int8)


def features(grid: torch.Tensor, pass_index: int, side: torch.Tensor | None = None) -> torch.Tensor:
    """``[B * n, 9 * 2C + S]`` int8 features of a pass's positions in an int8 grid ``[B, C, H, W]``, with the
    grid's side features ``[B, S]`` (if any) repeated at every position."""
    z = neighbourhoods(with_logs(grid, LOG_TABLE), pass_index)
    if side is not None and side.shape[1]:
        z = torch.cat([z, side[:, None].expand(-1, z.shape[1], -1).to(z.dtype)], 2)
    return z.reshape(-1, z.shape[-1])


def centre_columns(channels: int, channel_slice: slice) -> torch.Tensor:
    """The feature columns of the centre's symbols and log-magnitudes in ``channel_slice``."""
    base = CENTRE * 2 * channels
    picked = torch.arange(channels)[channel_slice]
    return torch.cat([base + picked, base + channels + picked])


def _int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int8 x int8 -> int32 product (rows padded to 32, as CUDA's kernel needs more than 16)."""
    rows = a.shape[0]
    if rows < 32:
        a = F.pad(a, (0, 0, 0, 32 - rows))
    return torch._int_mm(a, b)[:rows]


@dataclass(frozen=True)
class PassesModel(GroupedTables):
    """Integer parameters of one latent space's ``passes`` model (``steps = 4 * groups`` networks)."""

    hidden_weights: torch.Tensor  # int8 [S, F, K] (F = 2 * 9 * C + side)
    hidden_bias: torch.Tensor  # int32 [S, K]
    out_high: torch.Tensor  # int8 [S, F, 2 * Cg]: Wz = 128 * high + low; mean columns, then log-scale
    out_low: torch.Tensor  # int8 [S, F, 2 * Cg]
    out_hidden: torch.Tensor  # int64 [S, K, 2 * Cg]
    out_bias: torch.Tensor  # int64 [S, 2 * Cg]
    scale_min: int  # log-scale (OUT_BITS fixed point) of the lowest bin's lower edge
    scale_step: int
    frequencies: np.ndarray  # int64 [bins * PHASES, ALPHABET], rows summing to 2**PRECISION
    groups: int

    @property
    def channels(self) -> int:
        return self.hidden_weights.shape[1] // (2 * len(OFFSETS))

    @property
    def side(self) -> int:
        """How many side features (bytes of side information in a payload) the model reads (fewer than 18)."""
        return self.hidden_weights.shape[1] % (2 * len(OFFSETS))

    @property
    def steps(self) -> int:
        return self.hidden_weights.shape[0]

    @cached_property
    def categoricals(self) -> list:
        """constriction's model of each table, by its exact quantization, which keeps 24-bit tables as they are (so
        :attr:`code_lengths` is the coder's own rate)."""
        return categoricals(self.frequencies, perfect=True)

    @cached_property
    def code_lengths(self) -> torch.Tensor:
        """``[tables, ALPHABET]`` float64: each table's code length of each residual in bits."""
        return torch.from_numpy(PRECISION - np.log2(self.frequencies.astype(np.float64)))

    @cached_property
    def on_features(self) -> torch.Tensor:
        """``[S, F, K + 4 Cg]`` int8: each step's weights on the features, hidden units then the output's high and
        low planes, for one integer product per step."""
        return torch.cat([self.hidden_weights, self.out_high, self.out_low], 2).contiguous()

    @cached_property
    def _placed(self) -> dict[torch.device, tuple[torch.Tensor, ...]]:
        return {}

    def weights_on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The weights :meth:`contexts` reads, on ``device`` (copied there once): on the features, hidden bias,
        hidden outputs (float64) and output bias, each ``[S, ...]``."""
        device = torch.device(device)
        if device not in self._placed:
            weights = self.on_features, self.hidden_bias, self.out_hidden.double(), self.out_bias
            self._placed[device] = tuple(w.to(device) for w in weights)
        return self._placed[device]

    def contexts(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres and table keys ``[n, Cg]`` (int64, on ``z``'s device) of one step's symbols from their features
        ``z``, ``ROWS`` of them at a time (the hidden layer's temporaries stay bounded at any image size)."""
        if len(z) <= ROWS:
            return self._contexts(z, step)
        parts = [self._contexts(z[start : start + ROWS], step) for start in range(0, len(z), ROWS)]
        return torch.cat([centre for centre, _ in parts]), torch.cat([keys for _, keys in parts])

    def _contexts(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        on_features, hidden_bias, out_hidden, out_bias = (w[step] for w in self.weights_on(z.device))
        units = hidden_bias.shape[0]
        products = _int_mm(z, on_features)
        hidden = (products[:, :units] + hidden_bias).clamp_min(0)
        high, low = products[:, units:].chunk(2, dim=1)
        on_hidden = (hidden.double() @ out_hidden).long() >> H_BITS
        out = 128 * high.long() + low.long() + on_hidden + out_bias
        mean, log_scale = out.chunk(2, dim=1)
        centre = (mean >> OUT_BITS).clamp(-SYMBOL_MAX, SYMBOL_MAX)
        phase = (mean >> (OUT_BITS - 2)) & (PHASES - 1)
        bins = torch.div(log_scale - self.scale_min, self.scale_step, rounding_mode="floor").clamp(0, self.bins - 1)
        return centre, bins * PHASES + phase


def load(path: Path) -> PassesModel:
    """The model stored at ``path`` (as ``training/passes_model.py`` writes it), masked and checked for exactness."""
    from safetensors.torch import load_file

    from latentcodec.engine.errors import WeightsMismatchError

    tensors = load_file(str(path))
    scalars = tensors.pop("scalars", torch.zeros(3, dtype=torch.int64)).tolist()
    frequencies = tensors.pop("frequencies", torch.zeros(0)).numpy().astype(np.int64)
    try:
        model = PassesModel(
            **{k: v.to(_DTYPES[k]) for k, v in tensors.items()},
            scale_min=int(scalars[0]),
            scale_step=int(scalars[1]),
            frequencies=frequencies,
            groups=int(scalars[2]),
        )
        mask = visible(model.channels, model.groups, model.side)[..., None]
    except (TypeError, KeyError, RuntimeError, ZeroDivisionError) as exc:
        raise WeightsMismatchError(f"{path} is not a passes model this version reads: {exc}") from None
    if frequencies.ndim != 2 or (frequencies.sum(1) != 1 << PRECISION).any() or frequencies.shape[1] != ALPHABET:
        raise WeightsMismatchError(f"{path}: probability tables are not {PRECISION}-bit distributions")
    masked = {k: getattr(model, k) * mask for k in ("hidden_weights", "out_high", "out_low")}
    model = replace(model, **masked)
    unit_bound = model.hidden_weights.abs().sum(1).long() * SYMBOL_MAX + model.hidden_bias.abs().long()  # [S, K]
    if (unit_bound >= 1 << 31).any() or ((unit_bound[..., None] * model.out_hidden.abs()).sum(1) >= EXACT_FLOAT).any():
        raise WeightsMismatchError(f"{path}: weights too large for exact products")
    return model


_DTYPES = {
    "hidden_weights": torch.int8,
    "hidden_bias": torch.int32,
    "out_high": torch.int8,
    "out_low": torch.int8,
    "out_hidden": torch.int64,
    "out_bias": torch.int64,
}
