"""Module-level convenience API over cached :class:`Codec` instances (one per model)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

from PIL import Image

from latentcodec.engine import bitstream
from latentcodec.engine.codec import Codec
from latentcodec.engine.errors import LatentCodecError, ModelError
from latentcodec.engine.info import StreamInfo, StreamInput, info, read_stream
from latentcodec.engine.intake import ImageInput
from latentcodec.engine.latent_spaces import renderer
from latentcodec.engine.models import DEFAULT_MODEL, get_spec
from latentcodec.engine.pipeline import Progress
from latentcodec.engine.results import Result

__all__ = ["DEFAULT_MODEL", "StreamInfo", "codec_for", "decode", "decode_batch", "encode", "encode_batch", "info"]

_codecs: dict[str, Codec] = {}
_lock = threading.Lock()


def codec_for(model: str = DEFAULT_MODEL) -> Codec:
    """The shared default :class:`Codec` of ``model``."""
    with _lock:
        if model not in _codecs:
            _codecs[model] = Codec(model)
        return _codecs[model]


def encode(image: ImageInput, *, model: str = DEFAULT_MODEL, **options) -> bytes:
    """Encode an image to latentcodec bytes. Options: see :class:`latentcodec.EncodeOptions`."""
    return codec_for(model).encode(image, **options)


def encode_batch(images: Sequence[ImageInput], *, model: str = DEFAULT_MODEL, **options) -> list[Result[bytes]]:
    """Encode many images; one :class:`Result` per image."""
    return codec_for(model).encode_batch(images, **options)


def decode(
    data: StreamInput,
    *,
    model: str | None = None,
    denoise: bool = True,
    max_pixels: int | None = None,
    models: Collection[str] | None = None,
) -> Image.Image:
    """Decode latentcodec bytes (or the file at a path) with the model that made them (and the denoiser it names,
    unless ``denoise`` is False; ``model``, if given, must be that one). A latent stream renders with ``model``, any
    model of its latent space (default: the space's default). For untrusted bytes, ``max_pixels`` bounds the work
    and ``models`` the autoencoders a stream may ask for (default: any registered one whose weights are on this
    machine; nothing is ever downloaded unless its source is named or ``LATENTCODEC_DOWNLOAD=1``)."""
    return decode_batch([data], model=model, denoise=denoise, max_pixels=max_pixels, models=models)[0].unwrap()


def decode_batch(
    streams: Sequence[StreamInput],
    *,
    model: str | None = None,
    progress: Progress | None = None,
    denoise: bool = True,
    max_pixels: int | None = None,
    models: Collection[str] | None = None,
) -> list[Result[Image.Image]]:
    """Decode many streams (bytes or paths; of any models, or of ``models``; latent streams with ``model`` when
    given); one :class:`Result` per stream."""
    results: list[Result[Image.Image] | None] = [None] * len(streams)
    by_model: dict[str, list[int]] = {}
    read: dict[int, bytes] = {}  # files are read once, here: routing needs the header
    for index, source in enumerate(streams):
        try:
            read[index] = data = read_stream(source)
            model_id = renderer(bitstream.unpack(data).header, model)
            get_spec(model_id)
            if models is not None and model_id not in models:
                raise ModelError(f"stream asks for model {model_id!r}; this decoder allows {sorted(models)}")
            by_model.setdefault(model_id, []).append(index)
        except LatentCodecError as exc:
            results[index] = Result(error=exc)
            if progress:
                progress(1)
    for model_id, members in by_model.items():
        decoded = codec_for(model_id).decode_batch(
            [read[i] for i in members], progress=progress, denoise=denoise, max_pixels=max_pixels
        )
        for index, result in zip(members, decoded, strict=True):
            results[index] = result
    return results  # type: ignore[return-value]
