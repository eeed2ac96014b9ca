"""Image intake and output: any Pillow image, path, bytes or array <-> float RGB tensors plus alpha."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from latentcodec.engine.errors import InvalidImageError
from latentcodec.engine.format import MAX_PIXELS, MAX_SIDE, ColorKind, size_supported

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a folder (by suffix), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class PreparedImage:
    """An image ready for the encoder: RGB ``[3, H, W]`` uint8, alpha ``[H, W]`` uint8 or None."""

    rgb: torch.Tensor
    alpha: np.ndarray | None
    kind: ColorKind

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.rgb.shape[2], self.rgb.shape[1]


def open_image(source: ImageInput) -> Image.Image:
    """A loaded Pillow image from a path, encoded bytes, an array or an image; orientation applied."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(bytes(source)))
        elif isinstance(source, (str, os.PathLike)):
            image = Image.open(source)
        else:
            raise InvalidImageError(f"cannot read an image from {type(source).__name__}")
        image.load()
        return ImageOps.exif_transpose(image)
    except FileNotFoundError as exc:
        raise InvalidImageError(f"no such file: {source}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"not a readable image: {exc}") from exc


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise InvalidImageError(f"arrays must be uint8 or float in [0, 1], not {array.dtype}")
        if not np.isfinite(array).all():
            raise InvalidImageError("array holds NaN or infinite values")
        array = np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise InvalidImageError(f"arrays must be HxW, HxWx1, HxWx2, HxWx3 or HxWx4, not {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))  # L, LA, RGB or RGBA by shape


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    if image.mode != "F" and array.max(initial=0) > 255:
        array = array / 257.0
    return Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))


def _normalise(image: Image.Image, keep_alpha: bool) -> tuple[Image.Image, ColorKind]:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        image, mode = _high_depth_to_l(image), "L"
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    grey = mode in ("1", "L", "LA", "La")
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or "A" in mode
    kind = {
        (True, True): ColorKind.LA,
        (True, False): ColorKind.L,
        (False, True): ColorKind.RGBA,
        (False, False): ColorKind.RGB,
    }[(grey, has_alpha and keep_alpha)]
    return image.convert("RGBA" if has_alpha else "RGB"), kind


def prepare(source: ImageInput, keep_alpha: bool = True) -> PreparedImage:
    """Load and convert an image for encoding; raises InvalidImageError for anything unusable."""
    image = open_image(source)
    width, height = image.size
    if not size_supported(width, height):
        raise InvalidImageError(
            f"image size {width}x{height} outside the supported range (sides 1..{MAX_SIDE}, {MAX_PIXELS} pixels)"
        )
    try:
        image, kind = _normalise(image, keep_alpha)
        array = np.asarray(image)
    except (OSError, ValueError) as exc:
        raise InvalidImageError(f"cannot convert image of mode {image.mode}: {exc}") from exc
    alpha = np.ascontiguousarray(array[:, :, 3]) if kind.has_alpha else None
    rgb = torch.from_numpy(np.array(array[:, :, :3].transpose(2, 0, 1), order="C"))  # a writable copy
    return PreparedImage(rgb, alpha, kind)


def prepare_tensor(rgb: torch.Tensor) -> PreparedImage:
    """An RGB tensor ``[3, H, W]`` (uint8, or float clamped to [0, 1]) checked for the encoder."""
    if rgb.ndim != 3 or rgb.shape[0] != 3 or not (rgb.is_floating_point() or rgb.dtype == torch.uint8):
        raise InvalidImageError(f"expected [3, H, W] float or uint8 tensors, got {tuple(rgb.shape)} {rgb.dtype}")
    height, width = rgb.shape[1:]
    if not size_supported(width, height):
        raise InvalidImageError(f"image size {width}x{height} outside the supported range")
    if rgb.is_floating_point():
        if not torch.isfinite(rgb).all():
            raise InvalidImageError("image tensor holds NaN or infinite values")
        rgb = rgb.detach().float().clamp(0, 1)
    return PreparedImage(rgb, None, ColorKind.RGB)


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


def finish(rgb: torch.Tensor, kind: ColorKind, alpha: np.ndarray | None) -> Image.Image:
    """A Pillow image of ``kind`` from decoded RGB ``[3, H, W]`` in [0, 1] and the stored alpha."""
    array = to_uint8(rgb).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(np.ascontiguousarray(array))
    if kind in (ColorKind.L, ColorKind.LA):
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha))
    return image


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
