"""The Codec: images <-> latentcodec streams through one autoencoder, batched by shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentcodec.engine import bitstream, entropy
from latentcodec.engine.batching import batches_by_key
from latentcodec.engine.bitstream import FLAG_ALPHA, Header, Stream
from latentcodec.engine.coding import CodedLatents, decoder_for
from latentcodec.engine.errors import (
    EngineError,
    InvalidImageError,
    LatentCodecError,
    ModelMismatchError,
)
from latentcodec.engine.images import (
    MAX_PIXELS,
    MAX_SIDE,
    ColorKind,
    ImageInput,
    finish,
    pad_to_multiple,
    prepare,
)
from latentcodec.engine.models import DEFAULT_MODEL, LatentAutoencoder, ModelSpec, get_spec, load_model
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.results import Result

T = TypeVar("T")
Progress = Callable[[int], None]


@dataclass
class _EncodeJob:
    rgb: torch.Tensor  # [3, h, w] at the coded size
    alpha: np.ndarray | None
    kind: ColorKind
    width: int
    height: int


@dataclass
class _DecodeJob:
    header: Header
    params: bytes
    planes: bytes
    alpha: np.ndarray | None


@dataclass
class DecodedImage:
    """A decoded image as tensors: RGB ``[3, H, W]`` float in [0, 1] on the CPU, alpha, colour kind."""

    rgb: torch.Tensor
    alpha: np.ndarray | None
    kind: ColorKind

    def to_pil(self) -> Image.Image:
        return finish(self.rgb, self.kind, self.alpha)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Codec:
    """Encoder and decoder bound to one model, device and dtype.

    Batch methods return one :class:`Result` per input, in order; an item's failure never affects the others.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
        backend: str | None = None,
        source: str | None = None,
    ) -> None:
        self.model_id = get_spec(model).model_id  # fails early for unknown ids
        self.device = torch.device(device) if device is not None else _default_device()
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.batch_size = max(1, batch_size)
        self.backend = backend
        self.source = source
        self._model: LatentAutoencoder | None = None

    @property
    def model(self) -> LatentAutoencoder:
        """The autoencoder, loaded on first use."""
        if self._model is None:
            self._model = load_model(self.model_id, self.device, self.dtype, self.source)
        return self._model

    @property
    def spec(self) -> ModelSpec:
        """The loaded model's latent-space description (diffusers configs may refine the registry's)."""
        return self.model.spec

    # ----------------------------------------------------------------------------------------- encoding

    def encode(self, image: ImageInput, **options) -> bytes:
        """Encode one image (path, bytes, Pillow image or array) to a stream. See :class:`EncodeOptions`."""
        return self.encode_batch([image], **options)[0].unwrap()

    def encode_batch(
        self, images: Sequence[ImageInput], *, progress: Progress | None = None, **options
    ) -> list[Result[bytes]]:
        """Encode many images; one :class:`Result` per image."""
        opts = EncodeOptions(**options)
        results: list[Result[bytes] | None] = [None] * len(images)
        jobs: dict[int, _EncodeJob] = {}
        for index, image in enumerate(images):
            try:
                prepared = prepare(image, keep_alpha=opts.alpha == "keep")
                jobs[index] = self._encode_job(prepared.rgb, prepared.alpha, prepared.kind, opts)
            except LatentCodecError as exc:
                results[index] = Result(error=exc)
                if progress:
                    progress(1)
        self._encode_jobs(jobs, opts, results, progress)
        return results  # type: ignore[return-value]

    def encode_tensors(self, images: torch.Tensor | Sequence[torch.Tensor], **options) -> list[bytes]:
        """Encode RGB tensors (``[B, 3, H, W]`` or a list of ``[3, H, W]``, float in [0, 1])."""
        opts = EncodeOptions(**options)
        jobs = {}
        for index, rgb in enumerate(images):
            if rgb.ndim != 3 or rgb.shape[0] != 3 or not rgb.is_floating_point():
                raise InvalidImageError(f"expected float tensors [3, H, W], got {tuple(rgb.shape)} {rgb.dtype}")
            height, width = rgb.shape[1:]
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
                raise InvalidImageError(f"image size {width}x{height} outside the supported range")
            if not torch.isfinite(rgb).all():
                raise InvalidImageError("image tensor holds NaN or infinite values")
            jobs[index] = self._encode_job(rgb.detach().float().clamp(0, 1), None, ColorKind.RGB, opts)
        results: list[Result[bytes] | None] = [None] * len(jobs)
        self._encode_jobs(jobs, opts, results, None)
        return [r.unwrap() for r in results]  # type: ignore[union-attr]

    @staticmethod
    def _encode_job(rgb: torch.Tensor, alpha, kind: ColorKind, opts: EncodeOptions) -> _EncodeJob:
        height, width = rgb.shape[1:]
        if opts.scale < 1:
            size = (max(1, round(height * opts.scale)), max(1, round(width * opts.scale)))
            rgb = F.interpolate(rgb[None], size=size, mode="bicubic", antialias=True)[0].clamp_(0, 1)
        return _EncodeJob(rgb, alpha, kind, width, height)

    def _encode_jobs(
        self, jobs: dict[int, _EncodeJob], opts: EncodeOptions, results: list, progress: Progress | None
    ) -> None:
        coder = opts.coder(self.backend, self.device)

        def run(members: list[int]) -> list[Result[bytes]]:
            batch = torch.stack([jobs[i].rgb for i in members])
            coded = coder.encode(self.encode_latents(batch))
            return [Result(self._pack(jobs[i], c, opts)) for i, c in zip(members, coded, strict=True)]

        for batch in batches_by_key(jobs, lambda i: tuple(jobs[i].rgb.shape), self.batch_size):
            self._run_isolated(batch, run, results)
            if progress:
                progress(len(batch))

    @torch.inference_mode()
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Float latents ``[B, C, h, w]`` (on the codec's device) of RGB images ``[B, 3, H, W]`` in [0, 1]."""
        x = pad_to_multiple(images, self.spec.downsample).to(self.device, self.dtype)
        return self.model.encode(x.contiguous(memory_format=torch.channels_last)).float().contiguous()

    def _pack(self, job: _EncodeJob, coded: CodedLatents, opts: EncodeOptions) -> bytes:
        model = self.model
        header = Header(
            kind=job.kind,
            mode=opts.mode,
            width=job.width,
            height=job.height,
            coded_width=job.rgb.shape[2],
            coded_height=job.rgb.shape[1],
            model_id=model.spec.model_id,
            fingerprint=model.fingerprint,
            flags=FLAG_ALPHA if job.alpha is not None else 0,
        )
        alpha = entropy.compress(job.alpha.tobytes(), opts.level) if job.alpha is not None else b""
        return bitstream.pack(Stream(header, coded.params, entropy.compress(coded.planes, opts.level), alpha))

    # ----------------------------------------------------------------------------------------- decoding

    def decode(self, data: bytes) -> Image.Image:
        """Decode one stream to a Pillow image (L, LA, RGB or RGBA as recorded)."""
        return self.decode_batch([data])[0].unwrap()

    def decode_batch(self, streams: Sequence[bytes], *, progress: Progress | None = None) -> list[Result[Image.Image]]:
        """Decode many streams; one :class:`Result` per stream."""
        return [
            Result(r.value.to_pil()) if r.ok else Result(error=r.error)  # type: ignore[union-attr]
            for r in self.decode_batch_tensors(streams, progress=progress)
        ]

    def decode_tensors(self, streams: Sequence[bytes]) -> list[torch.Tensor]:
        """Decode streams to RGB tensors ``[3, H, W]`` in [0, 1]; raises the first failure."""
        return [r.unwrap().rgb for r in self.decode_batch_tensors(streams)]

    def decode_batch_tensors(
        self, streams: Sequence[bytes], *, progress: Progress | None = None
    ) -> list[Result[DecodedImage]]:
        """Decode many streams to :class:`DecodedImage` results."""
        results: list[Result[DecodedImage] | None] = [None] * len(streams)
        jobs: dict[int, _DecodeJob] = {}
        for index, data in enumerate(streams):
            try:
                jobs[index] = self._decode_job(data)
            except LatentCodecError as exc:
                results[index] = Result(error=exc)
                if progress:
                    progress(1)

        def run(members: list[int]) -> list[Result[DecodedImage]]:
            header = jobs[members[0]].header
            shape = (self.spec.latent_channels, *header.latent_size(self.spec.downsample))
            coder = decoder_for(header.mode, self.backend, self.device)
            latents = coder.decode([jobs[i].params for i in members], [jobs[i].planes for i in members], shape)
            images = self.decode_latents(latents)
            return [Result(self._finish(jobs[i], image)) for i, image in zip(members, images, strict=True)]

        def key(i: int) -> tuple:
            h = jobs[i].header
            return h.mode, h.latent_size(self.spec.downsample)

        for batch in batches_by_key(jobs, key, self.batch_size):
            self._run_isolated(batch, run, results)
            if progress:
                progress(len(batch))
        return results  # type: ignore[return-value]

    def _decode_job(self, data: bytes) -> _DecodeJob:
        stream = bitstream.unpack(data)
        header = stream.header
        self.check_model(header)
        shape = (self.spec.latent_channels, *header.latent_size(self.spec.downsample))
        coder = decoder_for(header.mode, self.backend, self.device)
        planes = entropy.decompress(stream.latents, coder.planes_size(stream.params, shape))
        alpha = None
        if header.has_alpha:
            raw = entropy.decompress(stream.alpha, header.width * header.height)
            alpha = np.frombuffer(raw, dtype=np.uint8).reshape(header.height, header.width)
        return _DecodeJob(header, stream.params, planes, alpha)

    def check_model(self, header: Header) -> None:
        """Raise ModelMismatchError unless this codec's model made the stream."""
        if header.model_id != self.model_id:
            raise ModelMismatchError(f"stream was made by model {header.model_id!r}; this codec uses {self.model_id!r}")
        if header.fingerprint != self.model.fingerprint:
            raise ModelMismatchError(
                f"stream was made by {header.model_id!r} weights {header.fingerprint.hex()}, "
                f"but the loaded weights are {self.model.fingerprint.hex()}"
            )

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """RGB images ``[B, 3, H, W]`` in [0, 1] (float32, CPU) from latents ``[B, C, h, w]``."""
        x = latents.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model.decode(x).float().clamp_(0, 1).cpu()

    @staticmethod
    def _finish(job: _DecodeJob, image: torch.Tensor) -> DecodedImage:
        h = job.header
        rgb = image[:, : h.coded_height, : h.coded_width]
        if (h.coded_width, h.coded_height) != (h.width, h.height):
            rgb = F.interpolate(rgb[None], size=(h.height, h.width), mode="bicubic")[0].clamp_(0, 1)
        return DecodedImage(rgb.contiguous(), job.alpha, h.kind)

    # ----------------------------------------------------------------------------------------- batching

    @staticmethod
    def _run_isolated(members: list[int], run: Callable[[list[int]], list[Result[T]]], results: list) -> None:
        """Run a batch; if it fails, run its items one by one so only the failing item reports an error."""
        try:
            outputs = run(members)
        except Exception as exc:
            if len(members) > 1:
                for member in members:
                    Codec._run_isolated([member], run, results)
                return
            error = exc if isinstance(exc, LatentCodecError) else EngineError(f"{type(exc).__name__}: {exc}")
            results[members[0]] = Result(error=error)
            return
        for member, output in zip(members, outputs, strict=True):
            results[member] = output
