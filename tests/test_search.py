"""The encoder's searches without networks: windows the strength search samples, and its choice."""

import pytest
import torch

from latentcodec.engine import strength_search


@pytest.mark.parametrize("size", [(5, 9), (19, 40), (64, 96), (20, 20), (24, 30), (40, 30)])
def test_windows_lie_inside_the_latents(size):
    height, width = size
    picked = strength_search.windows(height, width)
    side = strength_search.WINDOW + 2 * strength_search.MARGIN
    small = min(size) < side or 2 * side * side >= height * width  # then the whole grid is no more work
    assert len(picked) == (1 if small else 2)
    for rows, cols, inner_rows, inner_cols in picked:
        assert 0 <= rows.start < rows.stop <= height and 0 <= cols.start < cols.stop <= width
        assert inner_rows.stop <= rows.stop - rows.start and inner_cols.stop <= cols.stop - cols.start
        if not small:
            assert inner_rows.stop - inner_rows.start == strength_search.WINDOW and rows.stop - rows.start == 20


@pytest.mark.parametrize("best", [None, *strength_search.STRENGTHS])
def test_sampled_strengths_pick_the_decode_closest_to_the_image(best):
    generator = torch.Generator().manual_seed(0)
    down, latents = 8, torch.randn(2, 4, 40, 30, generator=generator)
    images = torch.rand(2, 3, 40 * down, 30 * down, generator=generator)
    seen = []

    def decode(windows: torch.Tensor, owners: torch.Tensor, fractions: torch.Tensor | None) -> torch.Tensor:
        seen.append(windows.shape)
        rgb = torch.nn.functional.interpolate(windows[:, :3], scale_factor=down)  # anything but the image
        strengths = [None] * len(windows) if fractions is None else fractions.tolist()
        for n, (window, owner) in enumerate(zip(windows, owners.tolist(), strict=True)):
            if strengths[n] == (best if best is None else pytest.approx(best)):
                rgb[n] = _matching(window, images[owner], latents[owner], down)
        return rgb

    assert strength_search.sampled_strengths(decode, latents, images, down) == [best, best]
    tries = len(strength_search.STRENGTHS)
    assert [tuple(shape) for shape in seen] == [(2 * 2, 4, 20, 20), (2 * 2 * tries, 4, 20, 20)]  # two decodes


def _matching(window: torch.Tensor, images: torch.Tensor, latents: torch.Tensor, down: int) -> torch.Tensor:
    """The image under ``window`` (found by its values in ``latents``): a perfect decode."""
    for top in range(latents.shape[-2] - window.shape[-2] + 1):
        for left in range(latents.shape[-1] - window.shape[-1] + 1):
            if torch.equal(latents[..., top : top + window.shape[-2], left : left + window.shape[-1]], window):
                rows, cols = slice(top * down, (top + window.shape[-2]) * down), slice(left * down, None)
                return images[..., rows, cols][..., : window.shape[-1] * down]
    raise AssertionError("window not found")
