"""Exception types raised by the codec. Every failure the library detects is a LatentCodecError."""


class LatentCodecError(Exception):
    """Base class of every error the codec raises on purpose."""


class InvalidImageError(LatentCodecError, ValueError):
    """The input is not an image the codec can encode (wrong type, shape, size or data)."""


class InvalidLatentsError(LatentCodecError, ValueError):
    """The input is not latents the codec can encode (wrong type, dtype, shape, channels, size or values)."""


class InvalidInputError(LatentCodecError, ValueError):
    """An input cannot be read at all (a missing or unreadable file)."""


class CorruptStreamError(LatentCodecError, ValueError):
    """The bytes are not a valid latentcodec stream."""


class NotAStreamError(CorruptStreamError):
    """The bytes do not start with the latentcodec magic."""


class TruncatedStreamError(CorruptStreamError):
    """The stream ends before its declared content."""


class ChecksumError(CorruptStreamError):
    """The stream's checksum does not match its content."""


class UnsupportedVersionError(CorruptStreamError):
    """The stream was written by a newer, unknown bitstream version."""


class ModelError(LatentCodecError):
    """A model cannot be found, loaded or used."""


class UnknownModelError(ModelError, KeyError):
    """No model of that id is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """A model's weights are not on disk."""


class WeightsMismatchError(ModelError):
    """A weights file does not have the expected sha256."""


class ModelMismatchError(ModelError):
    """A stream was made by a different model (or different weights) than the one decoding it."""


class DeviceError(LatentCodecError, ValueError):
    """The torch device asked for does not exist, or this machine (or this build of torch) does not have it."""


class EngineError(LatentCodecError, RuntimeError):
    """A model pass or kernel failed for an item (for example out of memory)."""


class LimitError(LatentCodecError, ValueError):
    """A request is over a limit its caller set (pixels of a stream, cost of options)."""


class BusyError(EngineError):
    """The engine holds as many requests as it may; try again later (HTTP 503)."""
