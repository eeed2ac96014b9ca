"""Large images after the latents, in bounded memory: decoded bands -> crop -> resize -> 8 bits -> the result.

The whole-image path (:mod:`~latentcodec.engine.decoder`) holds an image in float32 several times over (decoded,
resized, the upscaler's 48-channel features, converted): a 98-byte stream declaring 16 Mpixel, coded at 768x768,
took 2 GB. Streams of more than ``STREAMED_PIXELS`` (coded or declared) come here instead.
:meth:`ModelSession.decode_bands` hands over the decoded image a band at a time (a tiled decode holds one row of
tiles); a stream coded at its size goes straight to the result; a downscaled one is resized block by block
(:meth:`LatentAutoencoder.upscale_block`) from a window of the decoded rows that its blocks read; each block is
converted into the result as it is made (:class:`~latentcodec.engine.images.ImageSink`). Grids far wider than
tall come as bands of columns: the same steps run on the picture transposed (the networks still see it upright).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from latentcodec.engine.bitstream import Header
from latentcodec.engine.images import ImageSink
from latentcodec.engine.models.bicubic import Grid
from latentcodec.engine.session import ModelSession
from latentcodec.engine.stage_timer import stage
from latentcodec.engine.tiling import Bands

STREAMED_PIXELS = 1 << 20  # images with more pixels than this (coded or declared) are made here
BLOCK_SAMPLES = 1 << 18  # pixels converted (and output columns resized) at a time
WINDOW_SAMPLES = 1 << 22  # output pixels per resized band, which bounds the window of decoded rows it reads
MAX_BAND = 512  # output rows per resized band at most


def streamed(header: Header) -> bool:
    """Whether a stream's image is made in bands here."""
    return max(header.width * header.height, header.coded_width * header.coded_height) > STREAMED_PIXELS


def finish_bands(
    session: ModelSession, bands: Bands, across: bool, header: Header, alpha: np.ndarray | None, to_pil: bool
) -> Image.Image | torch.Tensor:
    """A stream's image (Pillow, or float32 RGB ``[3, H, W]``) from its decoded bands (of columns if ``across``),
    as :meth:`ModelSession.decode_bands` hands them over."""
    size, coded = (header.height, header.width), (header.coded_height, header.coded_width)
    sink = ImageSink(size, header.kind, alpha, to_pil)
    frame = _Frame(across)
    bands = _timed(bands)
    if coded == size:
        lines, other = frame.flip(size)
        step = max(1, BLOCK_SAMPLES // other)
        for start, rgb in bands:
            band = frame.turn(rgb[0])[:, : lines - start, :other]
            for offset in range(0, band.shape[1], step):
                sink.write(*frame.flip((start + offset, 0)), frame.turn(band[:, offset : offset + step]))
    else:
        _resize(session, bands, frame, coded, size, sink, header.noise_level or 0.0)
    return sink.result()


class _Frame:
    """The picture as the bands sweep it: rows, or columns seen as rows (``across``)."""

    def __init__(self, across: bool) -> None:
        self.across = across

    def flip(self, pair: tuple[int, int]) -> tuple[int, int]:
        """(row, column) <-> (line, position along the line)."""
        return (pair[1], pair[0]) if self.across else pair

    def turn(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[..., H, W]`` <-> lines ``[..., lines, along]`` (a view)."""
        return x.transpose(-2, -1) if self.across else x


def _timed(bands: Bands) -> Bands:
    """``bands``, each band's decoder work timed as the decoder network's."""
    while True:
        with stage("decoder network", device=True):
            band = next(bands, None)
        if band is None:
            return
        yield band


def _resize(
    session: ModelSession,
    bands: Bands,
    frame: _Frame,
    coded: tuple[int, int],
    size: tuple[int, int],
    sink: ImageSink,
    level: float,
) -> None:
    """The resized image (of a stream of noise level ``level``), band by band of output lines, each in blocks
    along the lines."""
    model = session.model
    (lines_in, along_in), (lines, along) = frame.flip(coded), frame.flip(size)
    align = model.upscale_align  # blocks start on the resizer's grid
    per_band = max(align, min(MAX_BAND, WINDOW_SAMPLES // max(along, along_in)) // align * align)
    per_block = max(align, BLOCK_SAMPLES // per_band // align * align)
    window = _Window(bands, frame, coded, model.upscale_reads(lines_in, lines, (0, lines)))
    everywhere = torch.arange(along_in)
    for start in range(0, lines, per_band):
        band = (start, min(lines, start + per_band))
        values, index = window.fill(model.upscale_reads(lines_in, lines, band))
        source = Grid(frame.turn(values), *frame.flip((index, everywhere)), coded)
        for offset in range(0, along, per_block):
            rows, cols = frame.flip((band, (offset, min(along, offset + per_block))))
            sink.write(rows[0], cols[0], session.upscale_block(source, size, rows, cols, level)[0])


class _Window:
    """The decoded lines that later output lines still read: pulled from the bands as needed, dropped once passed."""

    def __init__(self, bands: Bands, frame: _Frame, coded: tuple[int, int], wanted: torch.Tensor) -> None:
        self.bands, self.frame, self.wanted = bands, frame, wanted
        self.lines, self.along = frame.flip(coded)
        self.index = torch.empty(0, dtype=torch.long)
        self.values: torch.Tensor | None = None  # [1, C, len(index), along]

    def fill(self, needed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, line indices) holding every line of ``needed`` (increasing), and none before its first."""
        first, last = int(needed[0]), int(needed[-1])
        if self.values is not None and int(self.index[0]) < first:
            keep = self.index >= first
            self.index, self.values = self.index[keep], self.values[:, :, keep.to(self.values.device)]
        while self.values is None or len(self.index) == 0 or int(self.index[-1]) < last:
            start, rgb = next(self.bands)
            band = self.frame.turn(rgb)[:, :, : self.lines - start, : self.along]
            lines = torch.arange(start, start + band.shape[2])
            keep = torch.isin(lines, self.wanted) & (lines >= first)
            taken = band[:, :, keep.to(band.device)]
            self.index = torch.cat([self.index, lines[keep]])
            self.values = taken if self.values is None else torch.cat([self.values, taken], dim=2)
        return self.values, self.index
