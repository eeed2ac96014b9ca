"""Plain torch reference of every latent kernel. These define the exact arithmetic the Triton kernels follow.

Shapes: latents ``x`` are ``[B, C, H, W]``; per-(image, channel) quantizer parameters are ``[B, C]``;
palettes are ``[B, K, C]``; palette indices are ``[B, H, W]``.
"""

from __future__ import annotations

import torch


def affine_quantize(
    x: torch.Tensor, offset: torch.Tensor, inv_scale: torch.Tensor, qmin: int, qmax: int, dtype: torch.dtype
) -> torch.Tensor:
    """``clamp(floor((x - offset) * inv_scale + 0.5), qmin, qmax)`` cast to the integer ``dtype``."""
    v = (x.float() - offset[:, :, None, None]) * inv_scale[:, :, None, None]
    return torch.floor(v + 0.5).clamp_(qmin, qmax).to(dtype)


def affine_dequantize(q: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q * scale + offset`` as float32."""
    return q.float() * scale[:, :, None, None] + offset[:, :, None, None]


def palette_nearest(x: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Index of the nearest palette entry (squared L2, first index on ties) for ``x`` of shape ``[B, N, C]``.

    Distances are summed channel by channel, in channel order, as the Triton kernel does.
    """
    x = x.float()
    palette = palette.float()
    dist = torch.zeros(x.shape[0], x.shape[1], palette.shape[1], dtype=torch.float32, device=x.device)
    for c in range(x.shape[2]):
        diff = x[:, :, c, None] - palette[:, None, :, c]
        dist += diff * diff
    return dist.argmin(dim=2).to(torch.int32)


def palette_lookup(indices: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Latents ``[B, C, H, W]`` whose pixel ``(h, w)`` is ``palette[b, indices[b, h, w]]``."""
    b, h, w = indices.shape
    flat = indices.reshape(b, h * w).long()
    gathered = torch.gather(palette.float(), 1, flat[:, :, None].expand(-1, -1, palette.shape[2]))
    return gathered.permute(0, 2, 1).reshape(b, palette.shape[2], h, w).contiguous()
