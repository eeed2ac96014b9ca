"""latentcodec: an image codec in the latent space of diffusion autoencoders.

>>> import latentcodec
>>> data = latentcodec.encode("photo.png", mode="uniform", quality=50)
>>> image = latentcodec.decode(data)

Names load on first use, so reading stream headers (``latentcodec.info``, the Pillow plugin's ``Image.open``)
never imports torch or the models.
"""

from importlib import import_module

from latentcodec.bindings import pillow_plugin as _pillow_plugin
from latentcodec.engine.errors import (
    BusyError,
    ChecksumError,
    CorruptStreamError,
    DeviceError,
    EngineError,
    InvalidImageError,
    InvalidInputError,
    InvalidLatentsError,
    LatentCodecError,
    LimitError,
    ModelError,
    ModelMismatchError,
    NotAStreamError,
    TruncatedStreamError,
    UnknownModelError,
    UnsupportedVersionError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from latentcodec.engine.format import DEFAULT_MODEL, CodingMode
from latentcodec.engine.info import StreamInfo, info

__version__ = "0.1.0"

_LAZY = {
    "Codec": "latentcodec.engine.codec",
    "DecodedImage": "latentcodec.engine.decoder",
    "EncodeOptions": "latentcodec.engine.options",
    "LatentOptions": "latentcodec.engine.latent_options",
    "RequestQueue": "latentcodec.engine.queue",
    "Result": "latentcodec.engine.results",
    "available_models": "latentcodec.engine.models",
    "codec_for": "latentcodec.engine.api",
    "decode": "latentcodec.engine.api",
    "decode_batch": "latentcodec.engine.api",
    "decode_latents": "latentcodec.engine.latent_api",
    "decode_latents_batch": "latentcodec.engine.latent_api",
    "decode_latents_lossless": "latentcodec.engine.latent_lossless",
    "encode": "latentcodec.engine.api",
    "encode_batch": "latentcodec.engine.api",
    "encode_latents": "latentcodec.engine.latent_api",
    "encode_latents_batch": "latentcodec.engine.latent_api",
    "encode_latents_lossless": "latentcodec.engine.latent_lossless",
    "latent_spaces": "latentcodec.engine.latent_spaces",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'latentcodec' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL",
    "ChecksumError",
    "CodingMode",
    "CorruptStreamError",
    "BusyError",
    "DeviceError",
    "EngineError",
    "InvalidImageError",
    "InvalidInputError",
    "InvalidLatentsError",
    "LatentCodecError",
    "LimitError",
    "ModelError",
    "ModelMismatchError",
    "NotAStreamError",
    "StreamInfo",
    "TruncatedStreamError",
    "UnknownModelError",
    "UnsupportedVersionError",
    "WeightsMismatchError",
    "WeightsNotFoundError",
    "info",
    *_LAZY,
]

_pillow_plugin.register()
