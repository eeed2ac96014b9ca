"""Palette fitting and wavefront Floyd-Steinberg dithering."""

import torch

from latentcodec.engine.coders.palette_fit import dither_indices, fit_palette, nearest_indices


def _raster_dither(latents: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Textbook raster-order Floyd-Steinberg, one pixel at a time."""
    _, h, w = latents.shape
    work = latents.permute(1, 2, 0).clone().double()
    pal = palette.double()
    out = torch.empty(h, w, dtype=torch.int32)
    for y in range(h):
        for x in range(w):
            value = work[y, x]
            index = int(((pal - value) ** 2).sum(1).argmin())
            out[y, x] = index
            error = value - pal[index]
            for dy, dx, weight in ((0, 1, 7), (1, -1, 3), (1, 0, 5), (1, 1, 1)):
                if y + dy < h and 0 <= x + dx < w:
                    work[y + dy, x + dx] += error * weight / 16
    return out


def test_wavefront_dither_equals_raster_order():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 3, 9, 14, generator=g)
    palettes = torch.randn(2, 6, 3, generator=g)
    ours = dither_indices(latents, palettes, backend="torch")
    for i in range(2):
        assert torch.equal(ours[i], _raster_dither(latents[i], palettes[i]))


def test_dither_differs_from_nearest_and_keeps_mean():
    latents = torch.full((1, 1, 16, 16), 0.3)
    palette = torch.tensor([[[0.0], [1.0]]])
    dithered = dither_indices(latents, palette)
    nearest = nearest_indices(latents, palette)
    assert int(nearest.sum()) == 0  # plain rounding maps a flat 0.3 field to 0 everywhere
    # error diffusion preserves the mean intensity
    assert abs(float(dithered.float().mean()) - 0.3) < 0.02
    assert torch.equal(latents, torch.full((1, 1, 16, 16), 0.3))  # the input is left untouched


def test_fit_palette_is_deterministic_and_reduces_error():
    g = torch.Generator().manual_seed(2)
    centres = torch.randn(4, 8, generator=g) * 5
    vectors = centres.repeat_interleave(50, 0) + torch.randn(200, 8, generator=g) * 0.1
    first = fit_palette(vectors, 4, seed=3)
    assert torch.equal(first, fit_palette(vectors, 4, seed=3))
    error = torch.cdist(vectors, first).min(1).values.mean()
    assert error < 0.5  # found the four clusters
    assert fit_palette(vectors[:3], 16).shape == (3, 8)  # never more entries than vectors
