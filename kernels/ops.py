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
    "backend_for",
    "dequantize_planes",
    "palette_lookup",
    "palette_nearest",
    "quantize_planes",
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


def quantize_planes(
    x: torch.Tensor,
    offset: torch.Tensor,
    scale: torch.Tensor,
    qmin: int,
    qmax: int,
    nbytes: int,
    backend: str | None = None,
) -> torch.Tensor:
    """Quantize latents ``[B, C, H, W]`` (any strides) with per-(image, channel) ``offset``/``scale`` ``[B, C]``
    straight into byte planes ``[B, nbytes * C * H * W]`` uint8 (see ``reference``): one pass."""
    inv_scale = 1.0 / scale.float()
    return _impl(x, backend).quantize_planes(x, offset.float(), inv_scale, qmin, qmax, nbytes)


def dequantize_planes(
    planes: torch.Tensor,
    offset: torch.Tensor,
    scale: torch.Tensor,
    shape: tuple[int, int, int],
    nbytes: int,
    signed: bool,
    *,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    backend: str | None = None,
) -> torch.Tensor:
    """Latents ``symbol * scale + offset`` ``[B, *shape]`` in ``dtype`` and ``memory_format`` from byte planes:
    one pass that writes the layout the decoder network reads."""
    out = torch.empty((planes.shape[0], *shape), dtype=dtype, device=planes.device, memory_format=memory_format)
    return _impl(planes, backend).dequantize_planes(planes, offset.float(), scale.float(), shape, nbytes, signed, out)


def palette_nearest(x: torch.Tensor, palette: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Nearest palette index ``[B, N]`` (int32) for vectors ``x`` ``[B, N, C]`` and palettes ``[B, K, C]``."""
    return _impl(x, backend).palette_nearest(x, palette)


def palette_lookup(indices: torch.Tensor, palette: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Latents ``[B, C, H, W]`` from palette indices ``[B, H, W]`` and palettes ``[B, K, C]``."""
    return _impl(indices, backend).palette_lookup(indices, palette)
