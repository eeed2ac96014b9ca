"""Latent quantization kernels: fused Triton kernels with a plain torch reference of each.

Every op takes ``backend``: ``"triton"``, ``"torch"`` or ``None`` (automatic: Triton for CUDA tensors when
Triton is installed, the torch reference otherwise). ``TRITON_INTERPRET=1`` lets Triton run on CPU tensors.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch

from latentcodec.kernels import reference

__all__ = [
    "affine_dequantize",
    "affine_quantize",
    "backend_for",
    "palette_lookup",
    "palette_nearest",
    "triton_available",
]


def triton_available() -> bool:
    """Whether the ``triton`` package is importable."""
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_for(tensor: torch.Tensor, backend: str | None = None) -> str:
    """Resolve the backend for an op on ``tensor``."""
    if backend is None:
        return "triton" if tensor.is_cuda and triton_available() else "torch"
    if backend not in ("triton", "torch"):
        raise ValueError(f"unknown kernel backend {backend!r}")
    if backend == "triton" and not (triton_available() and (tensor.is_cuda or _interpreting())):
        raise RuntimeError("the Triton backend needs triton and a CUDA tensor (or TRITON_INTERPRET=1)")
    return backend


def _impl(tensor: torch.Tensor, backend: str | None) -> ModuleType:
    if backend_for(tensor, backend) == "torch":
        return reference
    from latentcodec.kernels import triton_kernels

    return triton_kernels


def affine_quantize(
    x: torch.Tensor,
    offset: torch.Tensor,
    scale: torch.Tensor,
    qmin: int,
    qmax: int,
    dtype: torch.dtype,
    backend: str | None = None,
) -> torch.Tensor:
    """Quantize latents ``[B, C, H, W]`` with per-(image, channel) ``offset``/``scale`` ``[B, C]`` to ``dtype``."""
    inv_scale = 1.0 / scale.float()
    return _impl(x, backend).affine_quantize(x, offset.float(), inv_scale, qmin, qmax, dtype)


def affine_dequantize(
    q: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor, backend: str | None = None
) -> torch.Tensor:
    """Float latents ``q * scale + offset`` from integer symbols ``[B, C, H, W]``."""
    return _impl(q, backend).affine_dequantize(q, offset.float(), scale.float())


def palette_nearest(x: torch.Tensor, palette: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Nearest palette index ``[B, N]`` (int32) for vectors ``x`` ``[B, N, C]`` and palettes ``[B, K, C]``."""
    return _impl(x, backend).palette_nearest(x, palette)


def palette_lookup(indices: torch.Tensor, palette: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Latents ``[B, C, H, W]`` from palette indices ``[B, H, W]`` and palettes ``[B, K, C]``."""
    return _impl(indices, backend).palette_lookup(indices, palette)
