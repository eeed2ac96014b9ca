"""Bicubic resizing one block of the output at a time, from only the input rows that block reads.

``F.interpolate(mode="bicubic")`` makes the whole output at once; a large image resized that way takes its full
size in float32 several times over. :func:`bicubic_block` computes any block of the same output (same taps, same
weights formula, taps summed over columns first, as PyTorch's CPU kernel does) from a :class:`Grid` holding the
input rows and columns :func:`reads` names. PyTorch's compiled kernel rounds its weights a little differently
(fused multiply-adds), so results agree to about 1e-6, not bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

A = -0.75  # PyTorch's bicubic coefficient
Span = tuple[int, int]  # [start, stop)


@dataclass(frozen=True)
class Grid:
    """Some rows and columns (increasing indices) of an image of ``size`` (h, w): ``values`` ``[B, C, rows, cols]``."""

    values: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    size: tuple[int, int]


def taps(n_in: int, n_out: int, span: Span) -> tuple[torch.Tensor, torch.Tensor]:
    """Input indices ``[n, 4]`` (edges clamped) and float32 weights ``[n, 4]`` of outputs ``span`` of a bicubic
    resize from ``n_in`` to ``n_out`` samples (``align_corners=False``)."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    src = (scale.double() * (torch.arange(*span, dtype=torch.float64) + 0.5) - 0.5).float()  # one rounding, as fused
    low = src.floor().clamp(max=n_in - 1)
    t = (src - low).clamp(0, 1)
    weights = torch.stack([_far(t + 1), _near(t), _near(1 - t), _far((1 - t) + 1)], dim=1)
    return (low.long()[:, None] + torch.arange(-1, 3)).clamp(0, n_in - 1), weights


def _near(x: torch.Tensor) -> torch.Tensor:
    return ((A + 2) * x - (A + 3)) * x * x + 1


def _far(x: torch.Tensor) -> torch.Tensor:
    return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A


def reads(n_in: int, n_out: int, span: Span) -> torch.Tensor:
    """The input samples (increasing) that outputs ``span`` read, along one side."""
    return taps(n_in, n_out, span)[0].unique()


def bicubic_block(source: Grid, size: tuple[int, int], rows: Span, cols: Span) -> torch.Tensor:
    """Block ``rows x cols`` of ``F.interpolate(image, size, mode="bicubic")`` (not clamped) from the samples of
    the image in ``source`` (those :func:`reads` names), computed in float32 and returned in their dtype."""
    row_index, row_weights = taps(source.size[0], size[0], rows)
    col_index, col_weights = taps(source.size[1], size[1], cols)
    device = source.values.device
    picked, row_index = _pick(source.values, 2, source.rows, row_index)
    picked, col_index = _pick(picked, 3, source.cols, col_index)
    across = _weighted(picked.float(), 3, col_index.to(device), col_weights.to(device))
    return _weighted(across, 2, row_index.to(device), row_weights.to(device)[:, None]).to(source.values.dtype)


def _pick(values: torch.Tensor, dim: int, held: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples ``index`` reads along ``dim`` of ``values`` (whose indices are ``held``), and ``index`` into them."""
    needed = index.unique()
    at = torch.searchsorted(held, needed).clamp(max=len(held) - 1)
    if not torch.equal(held[at], needed):
        raise ValueError("the source misses samples this block reads")
    return values.index_select(dim, at.to(values.device)), torch.searchsorted(needed, index)


def _weighted(x: torch.Tensor, dim: int, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k x.index_select(dim, index[:, k]) * weights[..., k]``, summed in tap order."""
    out = None
    for k in range(4):
        term = x.index_select(dim, index[:, k]) * weights[..., k]
        out = term if out is None else out.add_(term)
    assert out is not None
    return out
