"""Pillow plugin: ``Image.open("x.lcz")`` decodes and ``image.save("x.lcz", quality=50)`` encodes.

``import latentcodec`` registers it (:func:`register`); Pillow discovers no plugins of other packages, so a program
that never imports latentcodec cannot open .lcz files. Save keywords are :class:`EncodeOptions` fields plus
``model``; others are refused (ValueError). Opening reads only the header: a corrupt stream raises Pillow's
``UnidentifiedImageError`` with the reason, and streams past Pillow's ``Image.MAX_IMAGE_PIXELS`` are refused as
Pillow refuses other bombs; the codec (and torch) load when pixels are first needed.
"""

from __future__ import annotations

import os
from typing import IO

from PIL import Image, ImageFile, UnidentifiedImageError

from latentcodec.engine.bitstream import MAGIC
from latentcodec.engine.errors import LatentCodecError
from latentcodec.engine.format import MAX_STREAM_BYTES
from latentcodec.engine.info import info

FORMAT = "LCZ"
EXTENSION = ".lcz"
MIME = "image/x-latentcodec"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


class LczImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "latentcodec latent-diffusion image"

    def _open(self) -> None:
        data = self.fp.read(MAX_STREAM_BYTES + 1)  # no stream is longer: a longer file fails its checksum
        try:
            details = info(data)
        except LatentCodecError as exc:  # not a SyntaxError, which Image.open would swallow with the reason
            name = os.fsdecode(self.filename)
            where = f" {name!r}" if name else ""
            raise UnidentifiedImageError(f"cannot identify image file{where} as a latentcodec stream: {exc}") from exc
        for size in ((details.width, details.height), (details.coded_width, details.coded_height)):
            Image._decompression_bomb_check(size)  # Pillow's own rule: warn past MAX_IMAGE_PIXELS, refuse past 2x
        self._stream = data
        self._mode = details.color
        self._size = (details.width, details.height)
        self.info["latentcodec"] = details.as_dict()
        self.tile = []

    def load(self):
        if getattr(self, "_stream", None) is not None:
            from latentcodec.engine import api

            try:
                decoded = api.decode(self._stream)
            except LatentCodecError as exc:
                raise OSError(f"cannot decode latentcodec stream: {exc}") from exc
            self.im = decoded.im
            self._mode, self._size = decoded.mode, decoded.size
            self._stream = None
        return Image.Image.load(self)


def _save(image: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from latentcodec.engine import api

    options = dict(image.encoderinfo)
    model = options.pop("model", api.DEFAULT_MODEL)
    _refuse_unknown(options)
    try:
        fp.write(api.encode(image, model=model, **options))
    except LatentCodecError as exc:
        raise OSError(f"cannot encode as latentcodec: {exc}") from exc


def _refuse_unknown(options: dict) -> None:
    """ValueError naming the keywords that are not encode options (Pillow passes every save keyword on)."""
    from latentcodec.engine.options import EncodeOptions

    unknown = sorted(set(options) - set(EncodeOptions.names()))
    if unknown:
        known = ", ".join(["model", *EncodeOptions.names()])
        raise ValueError(f"unknown latentcodec save option(s) {', '.join(unknown)}; known: {known}")


def register() -> None:
    """Register the format with Pillow (idempotent)."""
    Image.register_open(FORMAT, LczImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
