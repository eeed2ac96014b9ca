"""Image intake and output: any Pillow image, path, bytes or array <-> float RGB tensors plus alpha."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from latentcodec.engine.errors import InvalidImageError

MAX_SIDE = 16384
MAX_PIXELS = 4096 * 4096

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray


class ColorKind(IntEnum):
    """What the decoder hands back: the input's colour model, with alpha only where it was kept."""

    L = 0
    LA = 1
    RGB = 2
    RGBA = 3

    @property
    def has_alpha(self) -> bool:
        return self in (ColorKind.LA, ColorKind.RGBA)

    @property
    def pil_mode(self) -> str:
        return self.name


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
    if width < 1 or height < 1 or width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
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
