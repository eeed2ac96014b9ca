"""Byte-level helpers the coders share: per-image parameters as bytes, channel ranges, host -> device copies."""

from __future__ import annotations

import numpy as np
import torch

from latentcodec.engine.errors import CorruptStreamError


def rms_error(latents: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """RMS difference per image ``[B]`` (float32): the noise level a stream records for its denoiser."""
    return (quantized.float() - latents.float()).square_().flatten(1).mean(1).sqrt_()


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; through pinned memory for CUDA, so the copy never stalls the stream."""
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host.to(device)


def planes_tensor(rows: list[bytes], device: torch.device) -> torch.Tensor:
    """Equal-length byte strings -> ``[B, n]`` uint8 on ``device``."""
    return to_device(torch.frombuffer(bytearray().join(rows), dtype=torch.uint8).reshape(len(rows), -1), device)


def as_bytes(*columns: torch.Tensor) -> torch.Tensor:
    """Per-image values ``[B, ...]`` of any dtypes -> their little-endian bytes side by side, ``[B, p]`` uint8."""
    dense = [c.new_empty(c.shape).copy_(c) for c in columns]  # fresh strides: view() needs a unit last stride
    return torch.cat([c.view(torch.uint8).reshape(c.shape[0], -1) for c in dense], dim=1)


def _to_half(values: torch.Tensor, down: bool) -> torch.Tensor:
    """Round float32 to the float16 neighbour below (``down``) or above ``values``."""
    half = values.clamp(-60000, 60000).half()
    limit = torch.full_like(half, -65504.0 if down else 65504.0)
    wrong_side = half.float() > values if down else half.float() < values
    return torch.where(wrong_side, torch.nextafter(half, limit), half)


def channel_ranges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(image, channel) float16-exact ``lo <= min`` and ``hi >= max`` (``hi > lo``) of ``[B, C, ...]``."""
    flat = x.flatten(2).float()
    lo = _to_half(flat.amin(2), down=True)
    hi = _to_half(flat.amax(2), down=False)
    hi = torch.where(hi > lo, hi, torch.nextafter(lo, torch.full_like(lo, 65504.0)))
    return lo.float(), hi.float()


def unpack_ranges(data: bytes, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(lo, hi)`` channel ranges ``[C]`` stored as float16 pairs; raises CorruptStreamError if bad."""
    if len(data) != 4 * channels:
        raise CorruptStreamError(f"expected {4 * channels} bytes of channel ranges, got {len(data)}")
    pairs = torch.from_numpy(np.frombuffer(data, dtype="<f2").astype(np.float32)).reshape(2, channels)
    lo, hi = pairs[0], pairs[1]
    if not (torch.isfinite(pairs).all() and (hi > lo).all()):
        raise CorruptStreamError("channel ranges are not finite and increasing")
    return lo, hi
