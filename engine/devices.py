"""The torch device a codec runs on: the one asked for, checked before any work."""

from __future__ import annotations

import torch

from latentcodec.engine.errors import DeviceError

ACCELERATORS = ("cuda", "xpu", "mps")  # the device types besides the CPU a codec runs on, where torch has them


def resolve_device(requested: str | torch.device | None) -> torch.device:
    """``requested`` as a torch device (default: cuda when there is one, else cpu); DeviceError for a name torch
    does not know or a device this machine lacks."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"{requested!r} is not a torch device; available: {', '.join(available_devices())}") from None
    if device.type != "cpu" and (device.index or 0) >= _count(device.type):
        raise DeviceError(
            f"device {str(device)!r} is not available: {_why(device.type)}; available: {', '.join(available_devices())}"
        )
    return device


def available_devices() -> list[str]:
    """The devices a codec can run on here: cpu, then each accelerator device."""
    return ["cpu", *(f"{kind}:{index}" for kind in ACCELERATORS for index in range(_count(kind)))]


def _count(kind: str) -> int:
    """How many devices of type ``kind`` this torch can use (0 for types a codec does not run on)."""
    backend = getattr(torch, kind, None) if kind in ACCELERATORS else None
    return backend.device_count() if backend is not None and backend.is_available() else 0


def _why(kind: str) -> str:
    if count := _count(kind):
        return f"this machine has {count} {kind.upper()} device{'s' if count > 1 else ''}"
    if kind not in ACCELERATORS:
        return f"a codec runs on cpu, {', '.join(ACCELERATORS)} devices"
    if kind == "cuda" and torch.version.cuda is None and torch.version.hip is None:
        return "this torch has no CUDA (a CPU-only build)"
    return f"no {kind.upper()} device is visible"
