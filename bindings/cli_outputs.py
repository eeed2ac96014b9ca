"""Where ``latentcodec encode|decode`` write: every output path decided and checked before any work.

- Without ``-o``, each output goes beside its input, named after it (``a/photo.png`` -> ``a/photo.lcz``).
- ``-o PATH`` names a folder when it ends with ``/``, is a folder already, or (several inputs) does not exist and
  has no output suffix (``.lcz`` for encode, an image suffix for decode): the outputs go into it, named after their
  inputs. Otherwise it names the one output file; with several inputs that is a mistake.
- Missing folders are created when the first output is written; a folder that could not be created or written
  is a mistake. So is an output that would overwrite an input or another output.
- Decoded images take the format their suffix names (``--format`` in a folder); other suffixes are mistakes. So
  do latent files (``--latents``: ``.safetensors`` or ``.npy``).

Mistakes raise ValueError with a one-line message.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

# decoded images: suffix -> Pillow format, and the formats that can hold an alpha plane
IMAGE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
LATENT_FORMATS = {".safetensors": "safetensors", ".npy": "npy"}  # latents (``--latents``): suffix -> format


def plan_outputs(inputs: Sequence[Path], output: str | None, suffix: str, file_suffixes: Collection[str]) -> list[Path]:
    """Each input's output path (``suffix`` for outputs named after their input); ValueError for a mistake."""
    if output is None:
        outputs = [path.parent / (path.stem + suffix) for path in inputs]
    elif _names_folder(output, len(inputs) > 1, file_suffixes):
        outputs = [Path(output) / (path.stem + suffix) for path in inputs]
    elif len(inputs) > 1:
        raise ValueError(f"-o {output} names a file: with several inputs, -o names a folder (end it with /)")
    else:
        outputs = [Path(output)]
    _check_distinct(inputs, outputs)
    for path in outputs:
        _check_writable(path)
    return outputs


def image_format(path: Path) -> str:
    """The Pillow format a decoded image is written in, from ``path``'s suffix; ValueError for others."""
    try:
        return IMAGE_FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(IMAGE_FORMATS)
        raise ValueError(f"cannot tell the image format of {path}: its suffix must be one of {known}") from None


def _names_folder(output: str, several: bool, file_suffixes: Collection[str]) -> bool:
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        return True
    return several and not path.exists() and path.suffix.lower() not in file_suffixes


def _check_distinct(inputs: Sequence[Path], outputs: Sequence[Path]) -> None:
    """ValueError if an output would overwrite an input or another output."""
    sources = {path.resolve() for path in inputs}
    seen: dict[Path, Path] = {}
    for path, out in zip(inputs, outputs, strict=True):
        target = out.resolve()
        if target in sources:
            raise ValueError(f"refusing to overwrite the input {out}")
        if target in seen:
            raise ValueError(f"{seen[target]} and {path} would both be written to {out}")
        seen[target] = path


def _check_writable(path: Path) -> None:
    """ValueError unless ``path`` can be written: not a folder, in a folder that exists or can be created."""
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: {folder} is not writable")
