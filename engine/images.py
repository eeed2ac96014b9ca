"""Image output and measurement: decoded tensors -> Pillow images, padding, PSNR, and image folders.

(Intake, the hostile boundary, is :mod:`~latentcodec.engine.intake`.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentcodec.engine.format import ColorKind
from latentcodec.engine.stage_timer import staged

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a folder (by suffix), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def downscaled(rgb: torch.Tensor, scale: float) -> torch.Tensor:
    """``[3, H, W]`` in [0, 1] at ``scale`` of each side (at least one pixel), antialiased bicubic: the picture the
    encoder codes at a downscaled operating point."""
    height, width = rgb.shape[1:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(rgb[None], size=size, mode="bicubic", antialias=True)[0].clamp_(0, 1)


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``[B, 3, H, W]`` on the bottom/right by edge replication up to multiples of ``multiple``."""
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8, rounding to nearest."""
    return images.clamp(0, 1).mul(255).round_().to(torch.uint8)


def _rows_to_pixels(rgb: torch.Tensor, rows: int = 256) -> np.ndarray:
    """RGB ``[3, H, W]`` in [0, 1] -> uint8 ``[H, W, 3]``, a band of rows at a time (no full-size temporaries)."""
    pixels = np.empty((rgb.shape[1], rgb.shape[2], 3), dtype=np.uint8)
    for start in range(0, rgb.shape[1], rows):
        pixels[start : start + rows] = to_uint8(rgb[:, start : start + rows]).permute(1, 2, 0).cpu().numpy()
    return pixels


def finish(rgb: torch.Tensor, kind: ColorKind, alpha: np.ndarray | None) -> Image.Image:
    """A Pillow image of ``kind`` from decoded RGB ``[3, H, W]`` in [0, 1] and the stored alpha."""
    image = Image.fromarray(_rows_to_pixels(rgb))
    if kind in (ColorKind.L, ColorKind.LA):
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha))
    return image


class ImageSink:
    """A decoded image written a block at a time: a Pillow image of ``kind`` with the stored ``alpha`` (each block
    converted as :func:`finish` converts a whole image, so the pixels are the same), or float32 RGB ``[3, H, W]``
    on the CPU. It holds the result and one block, never a float copy of the whole."""

    def __init__(self, size: tuple[int, int], kind: ColorKind, alpha: np.ndarray | None, to_pil: bool) -> None:
        self.size, self.kind, self.alpha = size, kind, alpha
        self.image: Image.Image | torch.Tensor | None = None if to_pil else torch.empty((3, *size))

    @staged("conversion")
    def write(self, top: int, left: int, rgb: torch.Tensor) -> None:
        """Block ``rgb`` ``[3, h, w]`` in [0, 1] (on any device) with its top left corner at (``top``, ``left``)."""
        height, width = rgb.shape[1:]
        if isinstance(self.image, torch.Tensor):
            self.image[:, top : top + height, left : left + width] = rgb.float().cpu()
            return
        alpha = None if self.alpha is None else self.alpha[top : top + height, left : left + width]
        block = finish(rgb, self.kind, alpha)
        if self.image is None:
            self.image = Image.new(block.mode, self.size[::-1])
        self.image.paste(block, (left, top))

    def result(self) -> Image.Image | torch.Tensor:
        assert self.image is not None, "no block was written"
        return self.image


def mse(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean squared error over all pixels and channels, in 8-bit units."""
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    diff = reference.astype(np.float64) - test.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of uint8 images (``inf`` for identical images); the one PSNR of the
    codec's searches, benches and training."""
    error = mse(reference, test)
    return float("inf") if error == 0 else float(10 * np.log10(peak * peak / error))


def to_array(rgb: torch.Tensor) -> np.ndarray:
    """RGB ``[3, H, W]`` in [0, 1] (or uint8) -> uint8 ``[H, W, 3]``, rounded as the decoder writes pixels."""
    pixels = rgb if rgb.dtype == torch.uint8 else to_uint8(rgb)
    return pixels.permute(1, 2, 0).cpu().numpy()
