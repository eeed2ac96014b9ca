"""Plain torch reference of every latent kernel. These define the exact arithmetic the Triton kernels follow.

Shapes: latents ``x`` are ``[B, C, H, W]`` (any strides); per-(image, channel) quantizer parameters are
``[B, C]``; palettes are ``[B, K, C]``; palette indices are ``[B, H, W]``.

Symbols travel as *byte planes*: ``[B, nbytes * C * H * W]`` uint8 holding, for each image, the low byte of
every symbol in channel-major order, then the next byte, and so on (two's complement for signed symbols).
That is the layout the entropy stage compresses, so quantize + pack and unpack + dequantize are one pass each.
"""

from __future__ import annotations

import torch


def quantize_planes(
    x: torch.Tensor, offset: torch.Tensor, inv_scale: torch.Tensor, qmin: int, qmax: int, nbytes: int
) -> torch.Tensor:
    """Byte planes of ``clamp(floor((x - offset) * inv_scale + 0.5), qmin, qmax)``."""
    v = (x.float() - offset[:, :, None, None]) * inv_scale[:, :, None, None]
    q = torch.floor(v + 0.5).clamp_(qmin, qmax).to(torch.int32).flatten(1)
    planes = [((q >> (8 * i)) & 0xFF).to(torch.uint8) for i in range(nbytes)]
    return torch.cat(planes, dim=1)


def dequantize_planes(
    planes: torch.Tensor,
    offset: torch.Tensor,
    scale: torch.Tensor,
    shape: tuple[int, int, int],
    nbytes: int,
    signed: bool,
    out: torch.Tensor,
) -> torch.Tensor:
    """``symbol * scale + offset`` into ``out`` ``[B, C, H, W]`` (its dtype and strides), from byte planes; a few
    channels at a time, so the temporaries stay small at any size."""
    b, (c, h, w) = planes.shape[0], shape
    parts = planes.reshape(b, nbytes, c, h * w)
    step = max(1, (1 << 20) // (b * h * w))  # channels per round
    for start in range(0, c, step):
        q = sum(parts[:, i, start : start + step].to(torch.int32) << (8 * i) for i in range(nbytes))
        if signed:
            half = 1 << (8 * nbytes - 1)
            q = torch.where(q >= half, q - 2 * half, q)
        rows = slice(start, start + step)
        v = q.reshape(b, -1, h, w).float() * scale[:, rows, None, None] + offset[:, rows, None, None]
        out[:, rows].copy_(v)
    return out


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
