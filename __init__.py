"""latentcodec: an image codec in the latent space of diffusion autoencoders.

>>> import latentcodec
>>> data = latentcodec.encode("photo.png", mode="uniform", quality=50)
>>> image = latentcodec.decode(data)
"""

from latentcodec.engine.api import StreamInfo, codec_for, decode, decode_batch, encode, encode_batch, info
from latentcodec.engine.codec import Codec, DecodedImage
from latentcodec.engine.coding import CodingMode
from latentcodec.engine.errors import (
    ChecksumError,
    CorruptStreamError,
    EngineError,
    InvalidImageError,
    LatentCodecError,
    ModelError,
    ModelMismatchError,
    NotAStreamError,
    TruncatedStreamError,
    UnknownModelError,
    UnsupportedVersionError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from latentcodec.engine.models import available_models
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.queue import RequestQueue
from latentcodec.engine.results import Result

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "Codec",
    "CodingMode",
    "CorruptStreamError",
    "DecodedImage",
    "EncodeOptions",
    "EngineError",
    "InvalidImageError",
    "LatentCodecError",
    "ModelError",
    "ModelMismatchError",
    "NotAStreamError",
    "RequestQueue",
    "Result",
    "StreamInfo",
    "TruncatedStreamError",
    "UnknownModelError",
    "UnsupportedVersionError",
    "WeightsMismatchError",
    "WeightsNotFoundError",
    "available_models",
    "codec_for",
    "decode",
    "decode_batch",
    "encode",
    "encode_batch",
    "info",
]

from latentcodec.bindings import pillow_plugin as _pillow_plugin

_pillow_plugin.register()
