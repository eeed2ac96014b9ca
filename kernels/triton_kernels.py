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
def _affine_quantize_kernel(x_ptr, offset_ptr, inv_scale_ptr, out_ptr, n, hw, qmin, qmax, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    plane = offs // hw  # index into the flattened [B, C] parameters
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    offset = tl.load(offset_ptr + plane, mask=mask, other=0.0)
    inv_scale = tl.load(inv_scale_ptr + plane, mask=mask, other=0.0)
    q = tl.floor((x - offset) * inv_scale + 0.5)
    q = tl.minimum(tl.maximum(q, qmin), qmax)
    tl.store(out_ptr + offs, q.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _affine_dequantize_kernel(q_ptr, offset_ptr, scale_ptr, out_ptr, n, hw, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    plane = offs // hw
    q = tl.load(q_ptr + offs, mask=mask, other=0).to(tl.float32)
    offset = tl.load(offset_ptr + plane, mask=mask, other=0.0)
    scale = tl.load(scale_ptr + plane, mask=mask, other=0.0)
    tl.store(out_ptr + offs, q * scale + offset, mask=mask)


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


def affine_quantize(
    x: torch.Tensor,
    offset: torch.Tensor,
    inv_scale: torch.Tensor,
    qmin: int,
    qmax: int,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=dtype, device=x.device) if out is None else out
    n = x.numel()
    hw = x.shape[2] * x.shape[3]
    grid = (triton.cdiv(n, BLOCK),)
    _affine_quantize_kernel[grid](
        x,
        offset.float().contiguous(),
        inv_scale.float().contiguous(),
        out,
        n,
        hw,
        float(qmin),
        float(qmax),
        BLOCK=BLOCK,
    )
    return out


def affine_dequantize(
    q: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    q = q.contiguous()
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device) if out is None else out
    n = q.numel()
    hw = q.shape[2] * q.shape[3]
    grid = (triton.cdiv(n, BLOCK),)
    _affine_dequantize_kernel[grid](q, offset.float().contiguous(), scale.float().contiguous(), out, n, hw, BLOCK=BLOCK)
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
