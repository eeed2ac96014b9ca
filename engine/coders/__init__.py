"""Latent coding modes behind one interface (:class:`Coder`), one registered coder per :class:`CodingMode`."""

from latentcodec.engine.coders.base import (
    CodedBatch,
    Coder,
    LatentShape,
    Layout,
    Simulated,
    coder_for,
    register_coder,
    registered_modes,
)
from latentcodec.engine.coders.palette import PaletteCoder
from latentcodec.engine.coders.planes import planes_tensor, rms_error
from latentcodec.engine.coders.scalar8 import Scalar8Coder
from latentcodec.engine.coders.simulation import simulate
from latentcodec.engine.coders.uniform import UniformCoder

__all__ = [
    "CodedBatch",
    "Coder",
    "LatentShape",
    "Layout",
    "PaletteCoder",
    "Scalar8Coder",
    "Simulated",
    "UniformCoder",
    "coder_for",
    "planes_tensor",
    "register_coder",
    "registered_modes",
    "rms_error",
    "simulate",
]
