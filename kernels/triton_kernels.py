"""Fused Triton kernels for latent quantization, dequantization and palette search/lookup.

Each kernel is one pass over its output and follows the arithmetic of ``reference.py`` exactly.
Importing this module needs ``triton``; on the CPU it only runs with ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _nchw_index(offs, chw, hw, w, s0, s1, s2, s3):
    """(image, offset within the image's channel-major planes, plane, address offset of a strided tensor)."""
    b = offs // chw
    within = offs - b * chw
    c = within // hw
    pixel = within - c * hw
    y = pixel // w
    return b, within, offs // hw, b * s0 + c * s1 + y * s2 + (pixel - y * w) * s3


@triton.jit
def _quantize_planes_kernel(
    x_ptr, offset_ptr, inv_scale_ptr, out_ptr, n, chw, hw, w, s0, s1, s2, s3, qmin, qmax,
    NBYTES: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    b, within, plane, address = _nchw_index(offs, chw, hw, w, s0, s1, s2, s3)
    x = tl.load(x_ptr + address, mask=mask, other=0.0).to(tl.float32)
    offset = tl.load(offset_ptr + plane, mask=mask, other=0.0)
    inv_scale = tl.load(inv_scale_ptr + plane, mask=mask, other=0.0)
    q = tl.floor((x - offset) * inv_scale + 0.5)
    q = tl.minimum(tl.maximum(q, qmin), qmax).to(tl.int32)
    base = out_ptr + b * (NBYTES * chw) + within
    for i in tl.static_range(NBYTES):
        tl.store(base + i * chw, ((q >> (8 * i)) & 0xFF).to(tl.uint8), mask=mask)


@triton.jit
def _dequantize_planes_kernel(
    planes_ptr, offset_ptr, scale_ptr, out_ptr, n, chw, hw, w, s0, s1, s2, s3,
    NBYTES: tl.constexpr, SIGNED: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    b, within, plane, address = _nchw_index(offs, chw, hw, w, s0, s1, s2, s3)
    base = planes_ptr + b * (NBYTES * chw) + within
    q = tl.zeros([BLOCK], tl.int32)
    for i in tl.static_range(NBYTES):
        q = q | (tl.load(base + i * chw, mask=mask, other=0).to(tl.int32) << (8 * i))
    if SIGNED:
        half: tl.constexpr = 1 << (8 * NBYTES - 1)
        q = tl.where(q >= half, q - 2 * half, q)
    offset = tl.load(offset_ptr + plane, mask=mask, other=0.0)
    scale = tl.load(scale_ptr + plane, mask=mask, other=0.0)
    value = q.to(tl.float32) * scale + offset
    tl.store(out_ptr + address, value.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _palette_nearest_kernel(
    x_ptr, pal_ptr, out_ptr, n, k, C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr
):
    b = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < n
    x_base = x_ptr + b * n * C + rows * C
    pal_base = pal_ptr + b * k * C
    best_dist = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_N], tl.int32)
    for k0 in range(0, k, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_mask = cols < k
        dist = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for c in range(C):
            xc = tl.load(x_base + c, mask=row_mask, other=0.0).to(tl.float32)
            pc = tl.load(pal_base + cols * C + c, mask=col_mask, other=0.0).to(tl.float32)
            diff = xc[:, None] - pc[None, :]
            dist += diff * diff
        dist = tl.where(col_mask[None, :], dist, float("inf"))
        chunk_dist = tl.min(dist, axis=1)
        chunk_idx = tl.argmin(dist, axis=1).to(tl.int32) + k0
        better = chunk_dist < best_dist
        best_idx = tl.where(better, chunk_idx, best_idx)
        best_dist = tl.where(better, chunk_dist, best_dist)
    tl.store(out_ptr + b * n + rows, best_idx, mask=row_mask)


@triton.jit
def _palette_lookup_kernel(idx_ptr, pal_ptr, out_ptr, n, hw, k, C: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    pixel = offs % hw
    bc = offs // hw
    c = bc % C
    b = bc // C
    idx = tl.load(idx_ptr + b * hw + pixel, mask=mask, other=0).to(tl.int64)
    value = tl.load(pal_ptr + (b * k + idx) * C + c, mask=mask, other=0.0)
    tl.store(out_ptr + offs, value.to(tl.float32), mask=mask)


def quantize_planes(
    x: torch.Tensor,
    offset: torch.Tensor,
    inv_scale: torch.Tensor,
    qmin: int,
    qmax: int,
    nbytes: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    b, c, h, w = x.shape
    chw = c * h * w
    out = torch.empty((b, nbytes * chw), dtype=torch.uint8, device=x.device) if out is None else out
    n = x.numel()
    _quantize_planes_kernel[(triton.cdiv(n, BLOCK),)](
        x, offset.float().contiguous(), inv_scale.float().contiguous(), out, n, chw, h * w, w, *x.stride(),
        float(qmin), float(qmax), NBYTES=nbytes, BLOCK=BLOCK,
    )  # fmt: skip
    return out


def dequantize_planes(
    planes: torch.Tensor,
    offset: torch.Tensor,
    scale: torch.Tensor,
    shape: tuple[int, int, int],
    nbytes: int,
    signed: bool,
    out: torch.Tensor,
) -> torch.Tensor:
    c, h, w = shape
    n = out.numel()
    _dequantize_planes_kernel[(triton.cdiv(n, BLOCK),)](
        planes.contiguous(), offset.float().contiguous(), scale.float().contiguous(), out, n, c * h * w, h * w, w,
        *out.stride(), NBYTES=nbytes, SIGNED=signed, BLOCK=BLOCK,
    )  # fmt: skip
    return out


def palette_nearest(x: torch.Tensor, palette: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    x = x.float().contiguous()
    palette = palette.float().contiguous()
    b, n, c = x.shape
    k = palette.shape[1]
    out = torch.empty((b, n), dtype=torch.int32, device=x.device) if out is None else out
    block_n = 64
    grid = (triton.cdiv(n, block_n), b)
    _palette_nearest_kernel[grid](x, palette, out, n, k, C=c, BLOCK_N=block_n, BLOCK_K=64)
    return out


def palette_lookup(indices: torch.Tensor, palette: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    indices = indices.contiguous()
    palette = palette.float().contiguous()
    b, h, w = indices.shape
    k, c = palette.shape[1], palette.shape[2]
    out = torch.empty((b, c, h, w), dtype=torch.float32, device=indices.device) if out is None else out
    n = out.numel()
    grid = (triton.cdiv(n, BLOCK),)
    _palette_lookup_kernel[grid](indices, palette, out, n, h * w, k, C=c, BLOCK=BLOCK)
    return out
