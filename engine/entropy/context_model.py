"""The probability model of the ``context`` entropy method, in integer arithmetic only.

Uniform symbols ``q[c, i, j]`` (int8) are coded wavefront by wavefront, ``t = 2i + j`` (a position's west,
north, north-west and north-east neighbours all lie on earlier wavefronts), and within a wavefront channel
group by channel group. Each symbol's distribution is a discretized logistic:

- its mean is a linear function of the four causal neighbours in every channel and of the co-located symbols
  of earlier channel groups (fixed point, ``MEAN_BITS`` fractional bits); the integer part centres the table,
  the next two bits pick one of ``PHASES`` sub-symbol offsets;
- its log-scale is a linear function of log-activities (``log1p`` of neighbour magnitudes, from a shipped
  integer table), quantized to one of the scale bins;
- both get the output of a hidden layer (ReLU units per channel) over all of those inputs.

Weights, the log table and the probability tables (24-bit integer frequencies) are integers shipped with the
package (``bundled/context_model_*.safetensors``, sha256-pinned; made by ``training/entropy_model.py``), so a
stream's symbol order and every probability are the same on any machine, thread count or numpy build. The
hidden layer's large product runs as a float64 matrix product of integers whose every partial sum stays far
below 2**53: exact, whatever order or fused multiply-adds the BLAS uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

MEAN_BITS = 10  # fractional bits of the predicted mean
PHASES = 4  # sub-symbol mean offsets per table
SCALE_BITS = 16  # fractional bits of the predicted log-scale
HIDDEN_BITS = 16  # fractional bits of the hidden layer's pre-activations (its outputs keep HIDDEN_BITS - LOG_BITS)
LOG_BITS = 8  # fractional bits of the log-activity table
LOG_TABLE_SIZE = 4096  # activities are clipped to this
RADIUS = 254  # residuals q - centre lie in [-RADIUS, RADIUS]: every int8 symbol around every clamped centre
ALPHABET = 2 * RADIUS + 1
SYMBOL_MAX = 127
NEIGHBOURS = 4  # west, north, north-west, north-east
ACTIVITIES = 2 * NEIGHBOURS + 1  # own channel's |neighbours|, all channels' sums, earlier groups' co-located sum
EXACT_FLOAT = 1 << 52  # float64 sums of integers below this are exact in any order
PRECISION = 24  # bits of the probability tables (constriction's default for its stream coders)


def categoricals(frequencies: np.ndarray, perfect: bool = False) -> list:
    """constriction's model of each table row (24-bit integer frequencies as exact dyadic rationals); ``perfect``:
    its exact quantization, which keeps such tables as they are."""
    import constriction

    probabilities = frequencies.astype(np.float64) / (1 << PRECISION)
    return [constriction.stream.model.Categorical(row, perfect=perfect) for row in probabilities]


class GroupedTables:
    """What both context models share: ``channels`` coded in ``groups`` equal channel groups, and ``frequencies``,
    ``PHASES`` table rows per log-scale bin."""

    frequencies: np.ndarray
    groups: int
    channels: int

    @property
    def bins(self) -> int:
        return self.frequencies.shape[0] // PHASES

    def group_channels(self, group: int) -> slice:
        size = self.channels // self.groups
        return slice(group * size, (group + 1) * size)


@dataclass(frozen=True)
class ContextModel(GroupedTables):
    """Integer parameters of one latent space's context model (``channels`` channels in ``groups`` groups)."""

    mean_weights: np.ndarray  # int64 [C, (NEIGHBOURS + 1) * C]: neighbours of every channel, then co-located
    mean_bias: np.ndarray  # int64 [C]
    scale_weights: np.ndarray  # int64 [C, ACTIVITIES]
    scale_bias: np.ndarray  # int64 [C]
    hidden_weights: (
        np.ndarray
    )  # int64 [C, K, (NEIGHBOURS + 1) * C + ACTIVITIES]: neighbours, co-located, log-activities
    hidden_bias: np.ndarray  # int64 [C, K]
    hidden_mean: np.ndarray  # int64 [C, K]: each unit's weight in the mean (MEAN_BITS)
    hidden_scale: np.ndarray  # int64 [C, K]: each unit's weight in the log-scale (SCALE_BITS - LOG_BITS)
    log_table: np.ndarray  # int64 [LOG_TABLE_SIZE]: round(log1p(a) * 2**LOG_BITS)
    scale_min: int  # log-scale (SCALE_BITS fixed point) of the lowest bin's lower edge
    scale_step: int  # width of one bin, same units
    frequencies: np.ndarray  # int64 [bins * PHASES, ALPHABET], each row summing to 2**PRECISION
    groups: int

    @cached_property
    def categoricals(self) -> list:
        """constriction's model of each table (its probabilities are exact dyadic rationals of the integers)."""
        return categoricals(self.frequencies)

    @cached_property
    def on_symbols(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean's and the hidden layer's weights on symbols, as float64 (exact integers)."""
        return self.mean_weights.astype(np.float64), self.hidden_weights[..., :-ACTIVITIES].astype(np.float64)

    @property
    def channels(self) -> int:
        return self.mean_bias.shape[0]

    def contexts(
        self, padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, group: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Centres and table keys ``[Cg, n]`` of the symbols of ``group`` at positions ``(rows, cols)``.

        ``padded`` is the int16 symbol grid ``[C, H + 1, W + 2]`` (a zero row above, zero columns either side)
        holding at least every symbol coded before these; later symbols may be present (the encoder's case)
        since no weight reads them."""
        channels = self.group_channels(group)
        neighbours = np.stack(
            [
                padded[:, rows + 1, cols],  # west
                padded[:, rows, cols + 1],  # north
                padded[:, rows, cols],  # north-west
                padded[:, rows, cols + 2],  # north-east
            ]
        )  # [4, C, n]
        earlier = padded[: channels.start, rows + 1, cols + 1]  # co-located, earlier groups
        features = np.concatenate([neighbours.reshape(-1, neighbours.shape[-1]), earlier])  # [F, n]

        magnitude = np.abs(neighbours)
        own = magnitude[:, channels]  # [4, Cg, n]
        shared = np.broadcast_to(magnitude.sum(1)[:, None], own.shape)
        stacked = np.abs(earlier).sum(0)[None, None]
        activity = np.concatenate([own, shared, np.broadcast_to(stacked, (1, *own.shape[1:]))])
        logs = self.log_table[np.minimum(activity, LOG_TABLE_SIZE - 1)]  # [9, Cg, n]

        mean_weights, hidden_weights = self.on_symbols
        weights = np.concatenate([mean_weights[channels, None], hidden_weights[channels]], 1)[..., : len(features)]
        product = (weights.reshape(-1, len(features)) @ features.astype(np.float64)).astype(np.int64)
        product = product.reshape(*weights.shape[:2], -1)  # [Cg, 1 + K, n]: the mean's, then each unit's
        on_logs = self.hidden_weights[channels, :, -ACTIVITIES:]
        pre = product[:, 1:] + np.einsum("cjk,kcn->cjn", on_logs, logs) + self.hidden_bias[channels, :, None]
        hidden = np.maximum(pre, 0) >> LOG_BITS  # [Cg, K, n]

        mean = product[:, 0] + self.mean_bias[channels, None]
        mean += np.einsum("cj,cjn->cn", self.hidden_mean[channels], hidden) >> (HIDDEN_BITS - LOG_BITS)
        centre = np.clip(mean >> MEAN_BITS, -SYMBOL_MAX, SYMBOL_MAX)
        phase = (mean >> (MEAN_BITS - 2)) & (PHASES - 1)

        log_scale = np.einsum("ck,kcn->cn", self.scale_weights[channels], logs) + self.scale_bias[channels, None]
        log_scale += np.einsum("cj,cjn->cn", self.hidden_scale[channels], hidden)
        bins = np.clip((log_scale - self.scale_min) // self.scale_step, 0, self.bins - 1)
        return centre, bins * PHASES + phase


def wavefront(t: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(rows, cols)`` with ``2 * row + col == t``, rows ascending."""
    rows = np.arange(max(0, -(-(t - width + 1) // 2)), min(height - 1, t // 2) + 1)
    return rows, t - 2 * rows


def wavefronts(height: int, width: int) -> int:
    return 2 * (height - 1) + width


def padded_grid(symbols: np.ndarray) -> np.ndarray:
    """``[C, H, W]`` -> int16 ``[C, H + 1, W + 2]`` with a zero row above and zero columns either side."""
    c, h, w = symbols.shape
    grid = np.zeros((c, h + 1, w + 2), dtype=np.int16)
    grid[:, 1:, 1:-1] = symbols
    return grid


def load(path: Path) -> ContextModel:
    """The context model stored at ``path`` (integers as written by ``training/entropy_model.py``)."""
    from safetensors.numpy import load_file

    from latentcodec.engine.errors import WeightsMismatchError

    tensors = {name: array.astype(np.int64) for name, array in load_file(str(path)).items()}
    scalars = tensors.pop("scalars", np.zeros(3, dtype=np.int64))
    try:
        model = ContextModel(**tensors, scale_min=int(scalars[0]), scale_step=int(scalars[1]), groups=int(scalars[2]))
    except TypeError as exc:
        raise WeightsMismatchError(f"{path} is not a context model this version reads: {exc}") from None
    if (model.frequencies.sum(1) != 1 << PRECISION).any() or model.frequencies.shape[1] != ALPHABET:
        raise WeightsMismatchError(f"{path}: probability tables are not {PRECISION}-bit distributions")
    on_symbols = np.concatenate([model.mean_weights[:, None], model.hidden_weights[..., :-ACTIVITIES]], 1)
    if np.abs(on_symbols).sum(-1).max() * SYMBOL_MAX >= EXACT_FLOAT:
        raise WeightsMismatchError(f"{path}: weights too large for exact float64 products")
    return model
