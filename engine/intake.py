"""Image intake: whatever a caller hands the encoder becomes RGB uint8 plus alpha, or an InvalidImageError.

The boundary where hostile input arrives, so one set of rules holds for every kind of input (paths, encoded
bytes, Pillow images, arrays, tensors):

- the size is checked from the header of a lazily opened file, before any pixel is decoded;
- EXIF orientation is applied, to Pillow images as to files;
- one frame only: an animated or multi-page image is refused (encode ``image.copy()`` of the frame you want);
- floats (arrays, tensors, Pillow mode F) are values in [0, 1]: anything outside, NaN or infinite is refused;
- 16- and 32-bit integer greyscale is read as 0..65535 when a value exceeds 255;
- colour models that do not convert to RGB (LAB, HSV) are refused; whatever Pillow raises becomes an
  InvalidImageError.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from latentcodec.engine.errors import InvalidImageError
from latentcodec.engine.format import MAX_PIXELS, MAX_SIDE, ColorKind, size_supported
from latentcodec.engine.stage_timer import staged

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_GREY_MODES = frozenset({"1", "L", "LA", "La"})
_CONVERTIBLE = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


@dataclass
class PreparedImage:
    """An image ready for the encoder: RGB ``[3, H, W]`` uint8 (or float in [0, 1]), alpha ``[H, W]`` or None."""

    rgb: torch.Tensor
    alpha: np.ndarray | None
    kind: ColorKind

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.rgb.shape[2], self.rgb.shape[1]


def check_size(width: int, height: int) -> None:
    if not size_supported(width, height):
        raise InvalidImageError(
            f"image size {width}x{height} outside the supported range (sides 1..{MAX_SIDE}, {MAX_PIXELS} pixels)"
        )


def _check_unit_floats(values: np.ndarray | torch.Tensor, what: str) -> None:
    values = torch.as_tensor(values)
    if not torch.isfinite(values).all():
        raise InvalidImageError(f"{what} holds NaN or infinite values")
    if values.numel() and (values.min() < 0 or values.max() > 1):
        lo, hi = float(values.min()), float(values.max())
        raise InvalidImageError(f"{what} holds values in [{lo:g}, {hi:g}]: floats must be in [0, 1] (divide by 255)")


def _describe(source: object) -> str:
    return f"{os.fspath(source)!s}" if isinstance(source, (str, os.PathLike)) else "the data"


def open_image(source: ImageInput) -> Image.Image:
    """A loaded, single-frame Pillow image with its EXIF orientation applied; the size is checked first."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(bytes(source)))
        elif isinstance(source, (str, os.PathLike)):
            image = Image.open(source)
        else:
            raise InvalidImageError(
                f"cannot read an image from {type(source).__name__}: expected a path, encoded bytes, a Pillow image,"
                " an array or a tensor"
            )
        check_size(*image.size)  # from the header: nothing decoded yet
        if getattr(image, "n_frames", 1) > 1:
            raise InvalidImageError(
                f"{_describe(source)} holds {image.n_frames} frames; encode one (image.seek(i); image.copy())"
            )
        image.load()
        return ImageOps.exif_transpose(image)
    except InvalidImageError:
        raise
    except FileNotFoundError as exc:
        raise InvalidImageError(f"no such file: {source}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"not a readable image: {_describe(source)} is in no format Pillow reads (PNG, JPEG, WebP, TIFF, BMP, ...)"
        ) from exc
    except Exception as exc:  # Pillow's decoders raise anything on hostile files: struct.error, NotImplementedError...
        raise InvalidImageError(f"not a readable image: {type(exc).__name__}: {exc}") from exc


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise InvalidImageError(f"arrays must be uint8 or float in [0, 1], not {array.dtype}")
        _check_unit_floats(array, "array")
        array = np.round(array * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise InvalidImageError(f"arrays must be HxW, HxWx1, HxWx2, HxWx3 or HxWx4, not {array.shape}")
    check_size(array.shape[1], array.shape[0])
    return Image.fromarray(np.ascontiguousarray(array))  # L, LA, RGB or RGBA by shape


def _deep_to_l(image: Image.Image) -> Image.Image:
    """Mode F (values in [0, 1]) or 16/32-bit integers (0..65535 when over 255) -> 8-bit L."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        _check_unit_floats(array, "float image")
        array = array * 255
    elif array.max(initial=0) > 255:
        array = array / 257.0
    return Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))


def _normalise(image: Image.Image, keep_alpha: bool) -> tuple[Image.Image, ColorKind]:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        image, mode = _deep_to_l(image), "L"
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode)
    if mode not in _CONVERTIBLE:
        raise InvalidImageError(f"images of mode {mode} are not supported (convert them to RGB first)")
    has_alpha = mode in _ALPHA_MODES
    kind = {
        (True, True): ColorKind.LA,
        (True, False): ColorKind.L,
        (False, True): ColorKind.RGBA,
        (False, False): ColorKind.RGB,
    }[(mode in _GREY_MODES, has_alpha and keep_alpha)]
    return image.convert("RGBA" if has_alpha else "RGB"), kind


@staged("intake")
def prepare(source: ImageInput, keep_alpha: bool = True) -> PreparedImage:
    """Load and convert an image (or check an RGB tensor) for encoding; raises InvalidImageError for anything
    unusable."""
    if isinstance(source, torch.Tensor):
        return prepare_tensor(source)
    image = open_image(source)
    try:
        image, kind = _normalise(image, keep_alpha)
        array = np.asarray(image)
    except InvalidImageError:
        raise
    except Exception as exc:
        raise InvalidImageError(f"cannot convert image of mode {image.mode}: {exc}") from exc
    alpha = np.ascontiguousarray(array[:, :, 3]) if kind.has_alpha else None
    rgb = torch.from_numpy(np.array(array[:, :, :3].transpose(2, 0, 1), order="C"))  # a writable copy
    return PreparedImage(rgb, alpha, kind)


@staged("intake")
def prepare_tensor(rgb: torch.Tensor) -> PreparedImage:
    """An RGB tensor ``[3, H, W]`` (uint8, or float in [0, 1]) checked for the encoder."""
    if not isinstance(rgb, torch.Tensor):
        raise InvalidImageError(f"expected a tensor, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[0] != 3 or not (rgb.is_floating_point() or rgb.dtype == torch.uint8):
        raise InvalidImageError(
            f"image tensors are RGB [3, H, W], uint8 or float in [0, 1], not {tuple(rgb.shape)} {rgb.dtype} "
            "(pixels [H, W, C]: a numpy array; batches [B, 3, H, W]: Codec.encode_tensors)"
        )
    check_size(rgb.shape[2], rgb.shape[1])
    if rgb.is_floating_point():
        rgb = rgb.detach().float()
        _check_unit_floats(rgb, "image tensor")
    return PreparedImage(rgb, None, ColorKind.RGB)
