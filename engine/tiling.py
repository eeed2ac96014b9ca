"""Overlapping tiles for the autoencoder's passes: bounded memory at any image size, and no seams.

A pass maps a grid of latent cells at one scale to the same grid at another (the encoder: 8x8 pixels -> one
cell; the decoder: one cell -> 8x8 pixels). :class:`Tiling` cuts the grid into equal tiles of ``tile`` cells
that overlap their neighbours by at least ``overlap`` cells. Of each overlap the outer quarters are context only
(thrown away, where zero padding shows) and the middle half is cross-faded linearly, so the blend weights sum
to one everywhere. Tiles of a batch of equal-sized images all have one shape, so they batch through the same
static buffers (CUDA graphs) as whole images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

Span = tuple[int, int]  # [start, end) in cells


@dataclass(frozen=True)
class Tiling:
    """Square tiles of ``tile`` cells overlapping by at least ``overlap`` cells (``overlap <= tile / 4``)."""

    tile: int = 64
    overlap: int = 16

    def __post_init__(self) -> None:
        if self.tile < 8 or not 4 <= self.overlap <= self.tile // 4:
            raise ValueError(
                f"tiles of {self.tile} cells overlapping by {self.overlap}: need tile >= 8, 4 <= overlap <= tile / 4"
            )

    def spans(self, length: int) -> list[Span]:
        """Evenly spaced tiles covering ``length`` cells (one span when it fits in a tile)."""
        if length <= self.tile:
            return [(0, length)]
        count = 1 + math.ceil((length - self.tile) / (self.tile - self.overlap))
        starts = [round(i * (length - self.tile) / (count - 1)) for i in range(count)]
        return [(start, start + self.tile) for start in starts]

    def tiles(self, height: int, width: int) -> int:
        """How many tiles a grid of ``height x width`` cells is cut into."""
        return len(self.spans(height)) * len(self.spans(width))


def blend_weights(spans: list[Span], scale: int) -> list[torch.Tensor]:
    """Per span, float32 weights over its ``scale``-times-finer samples: 1 inside, a linear cross-fade over the
    middle half of each overlap, 0 over the outer quarters; the weights of all spans sum to one."""
    weights = []
    for index, (start, end) in enumerate(spans):
        centres = torch.arange(start * scale, end * scale, dtype=torch.float64) + 0.5
        weight = torch.ones_like(centres)
        if index > 0:
            weight *= _rise(centres, spans[index - 1][1], start, scale)
        if index + 1 < len(spans):
            weight *= 1 - _rise(centres, end, spans[index + 1][0], scale)
        weights.append(weight.float())
    return weights


def _rise(centres: torch.Tensor, previous_end: int, start: int, scale: int) -> torch.Tensor:
    """0 -> 1 across the middle half of the overlap ``[start, previous_end)`` (in cells)."""
    quarter = (previous_end - start) * scale / 4
    low, high = start * scale + quarter, previous_end * scale - quarter
    return ((centres - low) / (high - low)).clamp(0, 1)


TILE_PIXELS = 512  # the automatic tile side (64 TAEF2 latent cells): 1.2x the untiled time on the CPU
OVERLAP_CELLS = 8
CPU_AUTO_PIXELS = 1 << 20  # the CPU tiles images over 1 Mpixel (an untiled TAEF2 pass takes ~0.8 KB per pixel)
GPU_BYTES_PER_PIXEL = 1000  # what an untiled half-precision pass takes, with room for a batch of them
BAND_BYTES = 1 << 26  # a band of decoded float32 RGB larger than this runs across (:func:`sweeps_across`)


@dataclass(frozen=True)
class TilePolicy:
    """Which grids run tiled: those of more than ``above`` cells, in tiles of ``tiling`` (never when None);
    ``chunk`` tiles per pass."""

    tiling: Tiling | None
    above: int = 0
    chunk: int = 1

    @classmethod
    def auto(cls, device: torch.device, downsample: int = 8) -> TilePolicy:
        """Tile what would not fit comfortably in memory: over 1 Mpixel on the CPU, over a quarter of the
        GPU's memory at about 1 KB per pixel."""
        pixels = CPU_AUTO_PIXELS
        if device.type == "cuda":
            pixels = torch.cuda.get_device_properties(device).total_memory // 4 // GPU_BYTES_PER_PIXEL
        chunk = 8 if device.type == "cuda" else 1
        return cls(Tiling(TILE_PIXELS // downsample, OVERLAP_CELLS), pixels // downsample**2, chunk)

    @classmethod
    def of(cls, tile: int | None, device: torch.device, downsample: int = 8) -> TilePolicy:
        """The policy of a ``tile`` setting: None automatic, 0 never, else tiles of ``tile`` pixels a side for
        every image larger than one tile."""
        if tile is None:
            return cls.auto(device, downsample)
        if tile == 0:
            return cls(None)
        if tile < 32 * downsample:
            raise ValueError(f"tile={tile}: tiles must be at least {32 * downsample} pixels a side (or 0: never)")
        cells = tile // downsample
        return cls(Tiling(cells, OVERLAP_CELLS), 0, 8 if device.type == "cuda" else 1)

    def for_grid(self, height: int, width: int) -> Tiling | None:
        """The tiling of a ``height x width`` latent grid, or None to run it whole."""
        if self.tiling is None or height * width <= self.above:
            return None
        return self.tiling


Pass = Callable[..., torch.Tensor]  # (inputs [B, C, h, w], *per-item tensors [B]) -> outputs [B, C', h', w']
Bands = Iterator[tuple[int, torch.Tensor]]  # (first row, rows [B, C, n, W]) of an output, top to bottom (or columns)


def run_tiled(
    fn: Pass,
    inputs: torch.Tensor,
    extras: tuple[torch.Tensor, ...],
    tiling: Tiling,
    *,
    cell: int,
    out_cell: int,
    chunk: int,
) -> torch.Tensor:
    """``fn`` over overlapping tiles of ``inputs`` (``cell`` samples per grid cell; outputs ``out_cell`` per
    cell), ``chunk`` tiles per call, blended into one float32 output on the pass's device. Inputs whose sides
    are not multiples of ``cell`` are padded by edge replication tile by tile (no padded copy of the whole)."""
    bands = tiled_bands(fn, inputs, extras, tiling, cell=cell, out_cell=out_cell, chunk=chunk)
    return joined(bands, -(-inputs.shape[-2] // cell) * out_cell)


def joined(bands: Bands, height: int) -> torch.Tensor:
    """The bands of an output ``height`` rows high as one tensor."""
    output: torch.Tensor | None = None
    for start, rows in bands:
        if output is None:
            output = rows.new_empty((*rows.shape[:2], height, rows.shape[-1]))
        output[:, :, start : start + rows.shape[2]] = rows
    assert output is not None
    return output


def tiled_bands(
    fn: Pass,
    inputs: torch.Tensor,
    extras: tuple[torch.Tensor, ...],
    tiling: Tiling,
    *,
    cell: int,
    out_cell: int,
    chunk: int,
    across: bool = False,
) -> Bands:
    """:func:`run_tiled`'s output as bands of finished rows, top to bottom: ``(first row, rows [B, C', n, W'])``.
    Tiles run row of tiles by row of tiles and blend exactly as in one output, but only the rows a later tile
    still adds to are held (one row of tiles). A band is a view, valid until the next one is asked for.
    ``across``: column of tiles by column of tiles, bands of finished columns ``[B, C', H', n]`` (for grids far
    wider than tall); where four tiles overlap, their sum is then added up in another order (last-bit changes)."""
    batch, _, height, width = inputs.shape
    height, width = -(-height // cell) * cell, -(-width // cell) * cell
    rows, cols = tiling.spans(height // cell), tiling.spans(width // cell)
    row_weights, col_weights = blend_weights(rows, out_cell), blend_weights(cols, out_cell)
    major, minor = (cols, rows) if across else (rows, cols)
    places = [(b, i, j) for i in range(len(major)) for b in range(batch) for j in range(len(minor))]
    groups = list(_chunks(places, chunk))
    held = max(major[g[-1][1]][1] - major[g[0][1]][0] for g in groups) * out_cell  # what one call can reach
    band: torch.Tensor | None = None  # [B, C', major, minor]: samples [top, top + held) along the sweep
    top = filled = 0
    for group in groups:
        done = major[group[0][1]][0] * out_cell  # no tile from here on reaches before this
        if band is not None and done > top:
            yield top, _oriented(band[:, :, : done - top], across)
            kept = band[:, :, done - top : filled - top].clone()
            band[:, :, : kept.shape[2]] = kept
            band[:, :, kept.shape[2] :] = 0
            top = done
        places_rc = [(b, j, i) if across else (b, i, j) for b, i, j in group]
        tiles = torch.cat([_cut(inputs[b : b + 1], rows[r], cols[c], cell) for b, r, c in places_rc])
        members = torch.tensor([b for b, _, _ in group])
        result = fn(tiles, *(extra[members] for extra in extras))
        if band is None:
            length = (height if across else width) // cell * out_cell
            band = torch.zeros((batch, result.shape[1], held, length), dtype=torch.float32, device=result.device)
        for row, (b, r, c) in enumerate(places_rc):
            weight = row_weights[r].to(result.device)[:, None] * col_weights[c].to(result.device)[None, :]
            (r0, r1), (c0, c1) = rows[r], cols[c]
            (i0, i1), (j0, j1) = ((c0, c1), (r0, r1)) if across else ((r0, r1), (c0, c1))
            target = band[b, :, i0 * out_cell - top : i1 * out_cell - top, j0 * out_cell : j1 * out_cell]
            _oriented(target, across).addcmul_(result[row].float(), weight)
            filled = max(filled, i1 * out_cell)
    assert band is not None
    yield top, _oriented(band[:, :, : filled - top], across)


def _oriented(band: torch.Tensor, across: bool) -> torch.Tensor:
    """A band as the image lies: columns of tiles keep their samples column-major."""
    return band.transpose(-2, -1) if across else band


def sweeps_across(tiling: Tiling | None, height: int, width: int, out_cell: int) -> bool:
    """Whether a ``height x width`` grid's tiles should run column by column: it is wider than tall and a row of
    its tiles would hold more than ``BAND_BYTES`` of float32 RGB."""
    tall = min(height, tiling.tile if tiling else height) * out_cell
    return width > height and tall * width * out_cell * 12 > BAND_BYTES


def _cut(image: torch.Tensor, rows: Span, cols: Span, cell: int) -> torch.Tensor:
    """A tile, replicating the image's last row and column where it reaches past them."""
    tile = image[..., rows[0] * cell : rows[1] * cell, cols[0] * cell : cols[1] * cell]
    short_h, short_w = (rows[1] - rows[0]) * cell - tile.shape[-2], (cols[1] - cols[0]) * cell - tile.shape[-1]
    if short_h or short_w:
        tile = torch.nn.functional.pad(tile.float(), (0, short_w, 0, short_h), mode="replicate").to(tile.dtype)
    return tile


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
