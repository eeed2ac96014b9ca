"""Triton kernels (interpreter mode) against the torch reference, on random odd shapes."""

import pytest
import torch

from latentcodec import kernels
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


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("qmin", "qmax", "dtype"), [(0, 255, torch.uint8), (-127, 127, torch.int8), (-999, 999, torch.int16)]
)
def test_affine_quantize_matches_reference(shape, qmin, qmax, dtype):
    x, offset, scale = _params(shape, seed=sum(shape))
    expected = kernels.affine_quantize(x, offset, scale, qmin, qmax, dtype, backend="torch")
    actual = kernels.affine_quantize(x, offset, scale, qmin, qmax, dtype, backend="triton")
    assert actual.dtype == dtype
    assert torch.equal(actual, expected)
    assert int(expected.min()) >= qmin and int(expected.max()) <= qmax


@pytest.mark.parametrize("shape", SHAPES)
def test_affine_dequantize_matches_reference(shape):
    _, offset, scale = _params(shape, seed=7)
    q = torch.randint(-100, 100, shape, dtype=torch.int16)
    expected = kernels.affine_dequantize(q, offset, scale, backend="torch")
    actual = kernels.affine_dequantize(q, offset, scale, backend="triton")
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


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
    expected_q = reference.affine_quantize(x, offset, inv, 0, 255, torch.uint8)
    for sentinel in (0, 255):
        out = _filled(expected_q, sentinel)
        triton_kernels.affine_quantize(x, offset, inv, 0, 255, torch.uint8, out=out)
        assert torch.equal(out, expected_q)

    expected_x = reference.affine_dequantize(expected_q, offset, scale)
    for sentinel in (float("nan"), -1e30):
        out = _filled(expected_x, sentinel)
        triton_kernels.affine_dequantize(expected_q, offset, scale, out=out)
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
