"""Triton kernels (interpreter mode) against the torch reference, on random odd shapes."""

import numpy as np
import pytest
import torch

from latentcodec.kernels import ops as kernels
from latentcodec.kernels import reference

pytest.importorskip("triton")
from latentcodec.kernels import triton_kernels

SHAPES = [(1, 1, 1, 1), (1, 32, 7, 13), (2, 4, 5, 3), (3, 5, 1, 37), (1, 3, 33, 33)]


def _params(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2
    offset = torch.randn(shape[:2], generator=g)
    scale = torch.rand(shape[:2], generator=g) * 0.2 + 0.01
    return x, offset, scale


RANGES = [(0, 255, 1), (-127, 127, 1), (-999, 999, 2), (-32767, 32767, 2)]


def _layouts(x: torch.Tensor) -> list[torch.Tensor]:
    """The same values contiguous, channels-last and as a transposed (non-dense-order) view."""
    return [x, x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("qmin", "qmax", "nbytes"), RANGES)
def test_quantize_planes_matches_reference_in_every_layout(shape, qmin, qmax, nbytes):
    x, offset, scale = _params(shape, seed=sum(shape))
    x = x * (qmax / 20)  # spread values over the symbol range, and past it
    expected = kernels.quantize_planes(x, offset, scale, qmin, qmax, nbytes, backend="torch")
    assert expected.shape == (shape[0], nbytes * shape[1] * shape[2] * shape[3]) and expected.dtype == torch.uint8
    for layout in _layouts(x):
        assert torch.equal(
            kernels.quantize_planes(layout, offset, scale, qmin, qmax, nbytes, backend="triton"), expected
        )


@pytest.mark.parametrize(("qmin", "qmax", "nbytes"), RANGES)
def test_planes_are_little_endian_channel_major_bytes(qmin, qmax, nbytes):
    """The layout the bitstream stores: per image, byte 0 of every symbol (C, H, W order), then byte 1."""
    x, offset, scale = _params((2, 3, 4, 5), seed=11)
    x = x * (qmax / 20)
    planes = kernels.quantize_planes(x, offset, scale, qmin, qmax, nbytes, backend="torch").numpy()
    symbols = torch.floor((x - offset[..., None, None]) / scale[..., None, None] + 0.5).clamp(qmin, qmax)
    as_numpy = symbols.numpy().astype({1: "<i1" if qmin < 0 else "u1", 2: "<i2"}[nbytes])
    for image in range(2):
        raw = as_numpy[image].view(np.uint8).reshape(*as_numpy.shape[1:], nbytes)
        assert np.array_equal(planes[image], np.moveaxis(raw, -1, 0).reshape(-1))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("qmin", "qmax", "nbytes"), RANGES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_dequantize_planes_inverts_quantize(shape, qmin, qmax, nbytes, dtype):
    x, offset, scale = _params(shape, seed=7)
    x = offset[..., None, None] + scale[..., None, None] * torch.randint(qmin, qmax + 1, shape)  # on the grid
    planes = kernels.quantize_planes(x, offset, scale, qmin, qmax, nbytes, backend="torch")
    expected = kernels.dequantize_planes(planes, offset, scale, shape[1:], nbytes, qmin < 0, backend="torch")
    torch.testing.assert_close(expected, x, rtol=0, atol=1e-4)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        actual = kernels.dequantize_planes(
            planes, offset, scale, shape[1:], nbytes, qmin < 0, dtype=dtype, memory_format=memory_format,
            backend="triton",
        )  # fmt: skip
        assert actual.dtype == dtype and actual.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(
            actual.float(), expected.to(dtype).float(), rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-2
        )


@pytest.mark.parametrize(("b", "n", "k", "c"), [(1, 1, 2, 1), (2, 70, 5, 3), (1, 129, 130, 32), (3, 17, 256, 4)])
def test_palette_nearest_matches_reference(b, n, k, c):
    g = torch.Generator().manual_seed(n * k)
    x = torch.randn(b, n, c, generator=g)
    palette = torch.randn(b, k, c, generator=g)
    expected = reference.palette_nearest(x, palette)
    actual = kernels.palette_nearest(x, palette, backend="triton")
    assert torch.equal(actual, expected)
    # and the reference itself is the true nearest entry
    brute = torch.cdist(x, palette).argmin(2).to(torch.int32)
    chosen = torch.gather(torch.cdist(x, palette), 2, expected.long()[..., None])[..., 0]
    best = torch.gather(torch.cdist(x, palette), 2, brute.long()[..., None])[..., 0]
    torch.testing.assert_close(chosen, best, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("b", "h", "w", "k", "c"), [(1, 1, 1, 1, 1), (2, 5, 7, 9, 32), (1, 13, 3, 300, 4)])
def test_palette_lookup_matches_reference(b, h, w, k, c):
    g = torch.Generator().manual_seed(h * w)
    indices = torch.randint(0, k, (b, h, w), generator=g, dtype=torch.int32)
    palette = torch.randn(b, k, c, generator=g)
    expected = reference.palette_lookup(indices, palette)
    actual = kernels.palette_lookup(indices, palette, backend="triton")
    assert torch.equal(actual, expected)
    assert torch.equal(expected[0, :, 0, 0], palette[0, indices[0, 0, 0]])


def _filled(like: torch.Tensor, value) -> torch.Tensor:
    return torch.full_like(like, value)


def test_every_output_element_is_written():
    """Run each kernel into buffers pre-filled with two different sentinels: both runs must agree."""
    x, offset, scale = _params((2, 3, 11, 9), seed=3)
    inv = 1.0 / scale
    expected_q = reference.quantize_planes(x, offset, inv, -999, 999, 2)
    for sentinel in (0, 255):
        out = _filled(expected_q, sentinel)
        triton_kernels.quantize_planes(x, offset, inv, -999, 999, 2, out=out)
        assert torch.equal(out, expected_q)

    expected_x = reference.dequantize_planes(expected_q, offset, scale, (3, 11, 9), 2, True, torch.empty(2, 3, 11, 9))
    for sentinel in (float("nan"), -1e30):
        out = _filled(expected_x, sentinel)
        triton_kernels.dequantize_planes(expected_q, offset, scale, (3, 11, 9), 2, True, out=out)
        assert torch.isfinite(out).all() and torch.allclose(out, expected_x, atol=1e-6)

    pixels, palette = torch.randn(2, 99, 6), torch.randn(2, 70, 6)
    expected_idx = reference.palette_nearest(pixels, palette)
    for sentinel in (-1, 12345):
        out = torch.full((2, 99), sentinel, dtype=torch.int32)
        triton_kernels.palette_nearest(pixels, palette, out=out)
        assert torch.equal(out, expected_idx)

    indices = torch.randint(0, 70, (2, 9, 11), dtype=torch.int32)
    expected_lat = reference.palette_lookup(indices, palette)
    for sentinel in (float("nan"), 7.0):
        out = _filled(expected_lat, sentinel)
        triton_kernels.palette_lookup(indices, palette, out=out)
        assert torch.equal(out, expected_lat)


def test_automatic_backend_is_torch_on_cpu():
    assert kernels.backend_for(torch.zeros(1)) == "torch"
    with pytest.raises(ValueError, match="unknown kernel backend"):
        kernels.backend_for(torch.zeros(1), "cuda-magic")
