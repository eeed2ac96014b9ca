"""The coder interface and the per-mode registry: latents <-> (mode parameters, raw symbol planes).

Every coder works on batches ``[B, C, H, W]`` and lays symbols out channel-major (one plane per channel), which
is what the entropy stage compresses best. Parameters are small per-image byte strings stored in the header; a
coder reads its knobs from the encode options when encoding and from each stream's parameters when decoding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np
import torch

from latentcodec.engine.format import CodingMode
from latentcodec.engine.runner import HostCopy

if TYPE_CHECKING:
    from latentcodec.engine.options import EncodeOptions

LatentShape = tuple[int, int, int]  # (channels, height, width) of one image's latents


class Layout(NamedTuple):
    """The dtype and memory format decoded latents are made in (what the decoder pass takes)."""

    dtype: torch.dtype = torch.float32
    memory_format: torch.memory_format = torch.contiguous_format


FLOAT32 = Layout()


@dataclass
class CodedBatch:
    """A batch of coded latents, still on the coder's device (so coding never waits for the device).

    ``params`` is ``[B, p]`` uint8: each row is one image's mode parameters as stored in the header.
    ``planes`` is ``[B, n]`` uint8: each row starts with the image's channel-major byte planes, exactly the
    bytes the entropy stage compresses; rows may be longer (``planes_size`` of the parameters says how long).
    ``noise`` is ``[B]`` float32: each image's RMS quantization error per latent (what a denoiser is told).
    """

    params: torch.Tensor
    planes: torch.Tensor
    noise: torch.Tensor


@dataclass(frozen=True)
class HostRows:
    """A :class:`CodedBatch` on its way to the host, with the batch's entropy contexts where they were computed
    (a method's ``batch_contexts``: arrays ``[B, ...]`` each)."""

    params: HostCopy
    planes: HostCopy
    noise: HostCopy
    contexts: tuple[HostCopy, ...] | None = None

    @classmethod
    def of(cls, coded: CodedBatch, contexts: tuple[torch.Tensor, ...] | None = None) -> HostRows:
        """Host copies of ``coded`` (and of ``contexts``) under way."""
        found = None if contexts is None else tuple(map(HostCopy, contexts))
        return cls(HostCopy(coded.params), HostCopy(coded.planes), HostCopy(coded.noise), found)

    def contexts_of(self, row: int) -> tuple[np.ndarray, ...] | None:
        """Row ``row`` of each context array, on the host (None without them)."""
        return None if self.contexts is None else tuple(c.get()[row].numpy() for c in self.contexts)


class Simulated(NamedTuple):
    """What a decoder is handed for coded latents: the dequantized latents ``[B, C, H, W]`` and each image's noise
    level ``[B]`` float32, rounded to float16 as the stream header records it."""

    latents: torch.Tensor
    noise: torch.Tensor


class Coder(ABC):
    """One coding mode on one device; ``backend`` picks the kernels (None: Triton on CUDA, torch elsewhere)."""

    mode: ClassVar[CodingMode]

    def __init__(self, backend: str | None = None, device: torch.device | str = "cpu") -> None:
        self.backend, self.device = backend, torch.device(device)

    @abstractmethod
    def encode(self, latents: torch.Tensor, options: EncodeOptions) -> CodedBatch:
        """Quantize latents ``[B, C, H, W]`` with the knobs of ``options``."""

    @abstractmethod
    def planes_size(self, params: bytes, shape: LatentShape) -> int:
        """Bytes of symbol planes a stream with these parameters holds (raises CorruptStreamError if bad)."""

    @abstractmethod
    def decode(
        self, params: list[bytes], planes: torch.Tensor, shape: LatentShape, out: Layout = FLOAT32
    ) -> torch.Tensor:
        """Latents ``[B, *shape]`` in the ``out`` layout of equal-length planes ``[B, n]`` on the device."""

    @torch.no_grad()
    def simulate(self, latents: torch.Tensor, options: EncodeOptions, out: Layout = FLOAT32) -> Simulated:
        """Quantization as a stream carries it, without the entropy stage: :meth:`encode` of latents
        ``[B, C, H, W]``, then :meth:`decode` of each image's parameters (as header bytes) and planes, so training
        sees exactly what a decoder does. Images whose planes differ in length decode in separate groups."""
        coded = self.encode(latents, options)
        shape: LatentShape = (latents.shape[1], latents.shape[2], latents.shape[3])
        params = [bytes(row) for row in coded.params.cpu().numpy()]
        groups: dict[int, list[int]] = {}
        for row, p in enumerate(params):
            groups.setdefault(self.planes_size(p, shape), []).append(row)
        result = torch.empty((len(params), *shape), dtype=out.dtype, device=self.device)
        result = result.contiguous(memory_format=out.memory_format)
        for size, rows in groups.items():
            planes = coded.planes[rows, :size].to(self.device)
            result[rows] = self.decode([params[r] for r in rows], planes, shape, out)
        return Simulated(result, coded.noise.half().float())


_CODERS: dict[CodingMode, type[Coder]] = {}


def register_coder(cls: type[Coder]) -> type[Coder]:
    """Class decorator: ``cls`` codes streams of ``cls.mode``."""
    _CODERS[cls.mode] = cls
    return cls


def coder_for(mode: CodingMode, backend: str | None = None, device: torch.device | str = "cpu") -> Coder:
    """The coder of ``mode``, for encoding or decoding."""
    return _CODERS[mode](backend, device)


def registered_modes() -> list[CodingMode]:
    return sorted(_CODERS)
