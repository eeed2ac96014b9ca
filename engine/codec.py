"""The Codec: images <-> latentcodec streams through one autoencoder, batched by shape.

Work is pipelined in three stages: host threads read and convert images (or parse and decompress streams),
the device runs the network passes and quantization kernels batch by batch, and host threads entropy-code
and pack the results (or crop and convert decoded images) while the device goes on with the next batch.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache, cached_property
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentcodec.engine import bitstream, entropy, latent_refinement, rate_control
from latentcodec.engine.batching import batches_by_key
from latentcodec.engine.bitstream import DenoiserRef, Header, Stream
from latentcodec.engine.coding import Coder, decoder_for, planes_tensor
from latentcodec.engine.denoise import strength
from latentcodec.engine.denoise.registry import LoadedDenoiser, load_denoiser
from latentcodec.engine.errors import (
    EngineError,
    InvalidImageError,
    LatentCodecError,
    ModelMismatchError,
    WeightsNotFoundError,
)
from latentcodec.engine.images import (
    MAX_PIXELS,
    MAX_SIDE,
    ColorKind,
    ImageInput,
    PreparedImage,
    finish,
    pad_to_multiple,
    prepare,
)
from latentcodec.engine.models import DEFAULT_MODEL, LatentAutoencoder, ModelSpec, get_spec, load_model
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.results import Result
from latentcodec.engine.runner import HostCopy, PassRunner

T = TypeVar("T")
Progress = Callable[[int], None]


@dataclass
class _EncodeJob:
    rgb: torch.Tensor  # [3, h, w] at the coded size: uint8, or float in [0, 1]
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
    denoiser: tuple[str, Hashable] | None = None  # (denoiser id, schedule key) when it runs


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


def _attempt(fn: Callable[..., T], *args) -> T | LatentCodecError:
    """``fn(*args)``, or the library error it raised (for host-stage work mapped over items)."""
    try:
        return fn(*args)
    except LatentCodecError as exc:
        return exc


def _stack(images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One batch tensor; in pinned memory when it is bound for a CUDA device (no second copy to pin it)."""
    if device.type != "cuda":
        return torch.stack(images)
    batch = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=True)
    return torch.stack(images, out=batch)


def _to_unit(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 or float images -> ``dtype`` in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255)
    return images.to(dtype)


class Codec:
    """Encoder and decoder bound to one model, device and dtype.

    Batch methods return one :class:`Result` per input, in order; an item's failure never affects the others.
    ``graphs`` (default: on for CUDA) runs the network passes through static bucketed batches, captured as
    CUDA graphs on GPU. ``channels_last`` sets the activation layout. ``compile`` runs the passes through
    ``torch.compile`` (fuses normalisation and activations: about 2x on an H100, at a one-off compile cost
    of seconds to a minute per pass). ``host_threads`` sizes the pool that decodes images and runs zstd
    beside the device. ``denoiser_source`` overrides where a diffusers denoiser (``sd-unet``) is loaded from.
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
        graphs: bool | None = None,
        channels_last: bool = True,
        compile: bool = False,
        host_threads: int | None = None,
        denoiser_source: str | None = None,
    ) -> None:
        self.model_id = get_spec(model).model_id  # fails early for unknown ids
        self.device = torch.device(device) if device is not None else _default_device()
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.batch_size = max(1, batch_size)
        self.backend = backend
        self.source = source
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        # channels-last activations: faster on tensor cores, and 1.3-1.5x faster on the CPU (oneDNN)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.compile = compile
        self.denoiser_source = denoiser_source
        self._denoised_passes: dict[tuple, PassRunner] = {}
        self._host = ThreadPoolExecutor(host_threads or min(32, os.cpu_count() or 1), "latentcodec-host")

    @cached_property
    def model(self) -> LatentAutoencoder:
        """The autoencoder, loaded on first use."""
        return load_model(self.model_id, self.device, self.dtype, self.source, self.memory_format)

    @property
    def spec(self) -> ModelSpec:
        """The loaded model's latent-space description (diffusers configs may refine the registry's)."""
        return self.model.spec

    def _runner(self, fn: Callable[..., torch.Tensor]) -> PassRunner:
        # one image per eager pass on the CPU, where batching only spills caches
        max_rows = 1 if self.device.type == "cpu" else None
        fn = torch.compile(fn, dynamic=True) if self.compile else fn  # one compile serves every shape
        return PassRunner(fn, self.device, static=self.graphs, memory_format=self.memory_format, max_rows=max_rows)

    @cached_property
    def encoder_pass(self) -> PassRunner:
        """Images ``[B, 3, H, W]`` (uint8 or [0, 1]; multiples of the downsampling) -> latents, on the device."""
        return self._runner(lambda x: self.model.encode(_to_unit(x, self.dtype)))

    @cached_property
    def decoder_pass(self) -> PassRunner:
        """Latents -> RGB images in [0, 1], on the device."""
        return self._runner(lambda z: self.model.decode(z).clamp_(0, 1))

    def denoiser(self, denoiser_id: str) -> LoadedDenoiser:
        """A denoiser on this codec's device and dtype (loaded on first use, cached)."""
        return load_denoiser(denoiser_id, self.device, self.dtype, self.denoiser_source, self.memory_format)

    def denoised_decoder_pass(self, denoiser_id: str, key) -> PassRunner:
        """(Latents, noise levels ``[B]``) -> RGB in [0, 1]: the denoiser and the decoder as one pass (one
        CUDA graph per shape on GPU), for streams whose schedule key is ``key``."""
        if (denoiser_id, key) not in self._denoised_passes:
            denoise = self.denoiser(denoiser_id).pass_fn(key)
            self._denoised_passes[denoiser_id, key] = self._runner(
                lambda z, sigma: self.model.decode(denoise(z, sigma)).clamp_(0, 1)
            )
        return self._denoised_passes[denoiser_id, key]

    def close(self) -> None:
        """Stop the host threads (the codec stays usable for nothing after this)."""
        self._host.shutdown()

    # ----------------------------------------------------------------------------------------- encoding

    def encode(self, image: ImageInput, **options) -> bytes:
        """Encode one image (path, bytes, Pillow image or array) to a stream. See :class:`EncodeOptions`."""
        return self.encode_batch([image], **options)[0].unwrap()

    def encode_batch(
        self, images: Sequence[ImageInput], *, progress: Progress | None = None, **options
    ) -> list[Result[bytes]]:
        """Encode many images; one :class:`Result` per image."""
        opts = self._options(options)
        results: list[Result[bytes] | None] = [None] * len(images)
        keep_alpha = opts.alpha == "keep"
        ready = self._on_host(lambda image: prepare(image, keep_alpha), images, results, progress)
        self._encode_prepared(ready, opts, results, progress)
        return results  # type: ignore[return-value]

    def encode_tensors(self, images: torch.Tensor | Sequence[torch.Tensor], **options) -> list[bytes]:
        """Encode RGB tensors (``[B, 3, H, W]`` or a list of ``[3, H, W]``; float in [0, 1] or uint8)."""
        opts = self._options(options)
        ready = {}
        for index, rgb in enumerate(images):
            if rgb.ndim != 3 or rgb.shape[0] != 3 or not (rgb.is_floating_point() or rgb.dtype == torch.uint8):
                raise InvalidImageError(
                    f"expected [3, H, W] float or uint8 tensors, got {tuple(rgb.shape)} {rgb.dtype}"
                )
            height, width = rgb.shape[1:]
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
                raise InvalidImageError(f"image size {width}x{height} outside the supported range")
            if rgb.is_floating_point():
                if not torch.isfinite(rgb).all():
                    raise InvalidImageError("image tensor holds NaN or infinite values")
                rgb = rgb.detach().float().clamp(0, 1)
            ready[index] = PreparedImage(rgb, None, ColorKind.RGB)
        results: list[Result[bytes] | None] = [None] * len(ready)
        self._encode_prepared(ready, opts, results, None)
        return [r.unwrap() for r in results]  # type: ignore[union-attr]

    def _options(self, options: dict) -> EncodeOptions:
        opts = EncodeOptions(**options)
        denoiser_id = opts.denoiser_for(self.model_id)  # one of another latent space fails here, before any work
        if denoiser_id and opts.checks_denoiser:
            try:
                self.denoiser(denoiser_id)
            except WeightsNotFoundError as exc:  # "auto" uses the denoiser where it can; a named one must load
                warnings.warn(f"{exc}; encoding without a denoiser", stacklevel=3)
                return replace(opts, denoiser=None)
        return opts

    def _encode_prepared(
        self, ready: dict[int, PreparedImage], opts: EncodeOptions, results: list, progress: Progress | None
    ) -> None:
        if opts.target_bpp is None and opts.target_psnr is None:
            jobs = {i: self._encode_job(p.rgb, p.alpha, p.kind, opts) for i, p in ready.items()}
            self._encode_jobs(jobs, opts, results, progress)
        else:
            search = self._encode_to_rate if opts.target_bpp is not None else self._encode_to_quality
            for index, prepared in ready.items():  # rate control: one image at a time
                self._run_isolated([index], lambda _members, p=prepared: [Result(search(p, opts))], results)
                if progress:
                    progress(1)
        if opts.checks_denoiser and opts.denoiser_for(self.model_id):
            self._choose_denoising(ready, results)

    def _choose_denoising(self, ready: dict[int, PreparedImage], results: list) -> None:
        """``denoiser="auto"``: decode each stream without its denoiser and at each strength
        (:mod:`~latentcodec.engine.denoise.strength`), a batch at a time, and keep the best by PSNR (on a
        tie, the stream without the denoiser)."""
        encoded = [i for i in ready if results[i].ok]
        per_stream = len(strength.STRENGTHS) + 1
        streams_per_batch = max(1, self.batch_size // per_stream)
        for start in range(0, len(encoded), streams_per_batch):
            chunk = encoded[start : start + streams_per_batch]
            choices = [strength.variants(results[i].value) for i in chunk]
            decoded = self.decode_batch_tensors([variant for variants in choices for variant in variants])
            for n, i in enumerate(chunk):
                outcomes = decoded[n * per_stream : (n + 1) * per_stream]
                if failed := next((r for r in outcomes if not r.ok), None):
                    results[i] = failed  # a stream we cannot decode is no result
                    continue
                best = strength.choose(_to_unit(ready[i].rgb, torch.float32), [r.value.rgb for r in outcomes])
                results[i] = Result(choices[n][best])

    def _encode_to_rate(self, prepared: PreparedImage, opts: EncodeOptions) -> bytes:
        """The best-PSNR stream within 10% of ``opts.target_bpp`` over the candidate scales and steps."""
        height, width = prepared.rgb.shape[1:]
        budget = opts.target_bpp * width * height / 8
        reference = _to_unit(prepared.rgb, torch.float32)
        candidates = []
        for stream in self._streams_at_scales(prepared, opts):
            data = stream(rate_control.finest_step_within(lambda step, stream=stream: len(stream(step)), budget))
            candidates.append(self._candidate(data, reference, opts))
        return rate_control.choose(candidates, budget)

    def _encode_to_quality(self, prepared: PreparedImage, opts: EncodeOptions) -> bytes:
        """The smallest stream whose decoded PSNR reaches ``opts.target_psnr``, over the candidate scales (the
        best-PSNR stream tried when none does)."""
        reference = _to_unit(prepared.rgb, torch.float32)
        reached, tried = [], []
        for stream in self._streams_at_scales(prepared, opts):

            @cache
            def quality(step: float, stream=stream) -> float:
                tried.append(self._candidate(stream(step), reference, opts))
                return tried[-1].psnr

            step = rate_control.coarsest_step_reaching(quality, opts.target_psnr)
            if step is not None:
                reached.append(stream(step))
        return min(reached, key=len) if reached else max(tried, key=lambda c: c.psnr).data

    def _streams_at_scales(self, prepared: PreparedImage, opts: EncodeOptions):
        """For each rate-control scale, ``step -> stream`` (cached) over latents computed once for that scale."""
        for scale in rate_control.SCALES:
            at_scale = replace(opts, scale=scale, target_bpp=None, target_psnr=None, quality=None)
            job = self._encode_job(prepared.rgb, prepared.alpha, prepared.kind, at_scale)
            latents = self._latents(job.rgb[None])
            yield cache(lambda step, job=job, latents=latents, at_scale=at_scale: self._pack_latents(
                job, latents, replace(at_scale, step=step)
            ))  # fmt: skip

    def _candidate(self, data: bytes, reference: torch.Tensor, opts: EncodeOptions) -> rate_control.Candidate:
        """A stream and the PSNR of its decoded image against ``reference``. Under ``denoiser="auto"`` it is
        decoded without the denoiser: the strength chosen afterwards decodes at least as well, so a PSNR
        target reached here holds (the measured level the candidate records can cost dBs)."""
        decoded = self.decode_tensors([data], denoise=not opts.checks_denoiser)[0]
        return rate_control.Candidate(data, rate_control.psnr(reference, decoded))

    def _pack_latents(self, job: _EncodeJob, latents: torch.Tensor, opts: EncodeOptions) -> bytes:
        """The stream of one image's latents ``[1, C, h, w]`` under ``opts``."""
        coder = opts.coder(self.backend, self.device)
        coded = coder.encode(latents)
        copies = (HostCopy(coded.params), HostCopy(coded.planes), HostCopy(coded.noise))
        return self._pack(job, coder, *copies, 0, opts)

    @staticmethod
    def _encode_job(rgb: torch.Tensor, alpha, kind: ColorKind, opts: EncodeOptions) -> _EncodeJob:
        height, width = rgb.shape[1:]
        if opts.scale < 1:
            size = (max(1, round(height * opts.scale)), max(1, round(width * opts.scale)))
            rgb = _to_unit(rgb, torch.float32)
            rgb = F.interpolate(rgb[None], size=size, mode="bicubic", antialias=True)[0].clamp_(0, 1)
        return _EncodeJob(rgb, alpha, kind, width, height)

    def _encode_jobs(
        self, jobs: dict[int, _EncodeJob], opts: EncodeOptions, results: list, progress: Progress | None
    ) -> None:
        coder = opts.coder(self.backend, self.device)

        def on_device(members: list[int]) -> list[Result[Future]]:
            images = _stack([jobs[i].rgb for i in members], self.device)
            coded = coder.encode(self._refined(self._latents(images), images, opts))
            params, planes, noise = HostCopy(coded.params), HostCopy(coded.planes), HostCopy(coded.noise)
            return [
                Result(self._host.submit(self._pack, jobs[i], coder, params, planes, noise, row, opts))
                for row, i in enumerate(members)
            ]

        key = lambda i: (tuple(jobs[i].rgb.shape), jobs[i].rgb.dtype)  # noqa: E731
        self._pipeline(batches_by_key(jobs, key, self.batch_size), on_device, results, progress)

    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (device, model dtype) of images ``[B, 3, H, W]``, padded to the model's multiple here."""
        padded = pad_to_multiple(images, self.spec.downsample)
        if padded is not images and self.device.type == "cuda":  # pinned: the copy to the device is asynchronous
            padded = padded.pin_memory()
        return self.encoder_pass(padded)

    def _refined(self, latents: torch.Tensor, images: torch.Tensor, opts: EncodeOptions) -> torch.Tensor:
        """Latents after ``opts.effort`` refinement steps through float32 copies of the decoder side: the
        decoder, after the stream's denoiser when one is named. Under ``"auto"`` the latents are refined for the
        decoder alone (the strength is chosen afterwards; refined through the latent denoiser, a 72x40 Kodak
        crop at step 2 gained 0.5 dB instead of 1.8)."""
        if not opts.effort:
            return latents
        decoder = load_model(self.model_id, self.device, torch.float32, self.source, self.memory_format)
        denoiser_id = None if opts.checks_denoiser else opts.denoiser_for(self.model_id)
        if denoiser_id is None:
            decode = lambda quantized, _noise: decoder.decode(quantized)  # noqa: E731
        else:
            placement = (self.device, torch.float32, self.denoiser_source, self.memory_format)
            loaded = load_denoiser(denoiser_id, *placement)
            fraction = opts.noise_fraction(denoiser_id)  # of the noise level, as the stream will record it
            denoise = loaded.pass_fn(loaded.schedule_key(fraction * opts.step_value / 12**0.5, opts.mode))
            decode = lambda quantized, noise: decoder.decode(denoise(quantized, fraction * noise))  # noqa: E731
        target = _to_unit(pad_to_multiple(images, self.spec.downsample), torch.float32).to(self.device)
        return latent_refinement.refine(decode, latents, target, opts.step_value, opts.effort)

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Float latents ``[B, C, h, w]`` (on the codec's device) of RGB images ``[B, 3, H, W]`` in [0, 1]."""
        return self._latents(images).float().contiguous()

    def _pack(
        self,
        job: _EncodeJob,
        coder: Coder,
        params: HostCopy,
        planes: HostCopy,
        noise: HostCopy,
        row: int,
        opts: EncodeOptions,
    ) -> bytes:
        model = self.model
        denoiser_id = opts.denoiser_for(self.model_id)
        denoiser = None
        if denoiser_id:
            loaded = self.denoiser(denoiser_id)
            level = float(noise.get()[row]) * opts.noise_fraction(denoiser_id)
            denoiser = DenoiserRef(denoiser_id, loaded.fingerprint, level)
        height, width = job.rgb.shape[1:]
        down = model.spec.downsample
        mode_params = params.get()[row].numpy().tobytes()
        latent_shape = (model.spec.latent_channels, -(-height // down), -(-width // down))
        symbols = planes.get()[row, : coder.planes_size(mode_params, latent_shape)].numpy().tobytes()
        header = Header(
            kind=job.kind,
            mode=opts.mode,
            width=job.width,
            height=job.height,
            coded_width=width,
            coded_height=height,
            model_id=model.spec.model_id,
            fingerprint=model.fingerprint,
            has_alpha=job.alpha is not None,
            denoiser=denoiser,
        )
        alpha = entropy.compress(job.alpha.tobytes(), opts.level) if job.alpha is not None else b""
        return bitstream.pack(Stream(header, mode_params, entropy.compress(symbols, opts.level), alpha))

    # ----------------------------------------------------------------------------------------- decoding

    def decode(self, data: bytes, *, denoise: bool = True) -> Image.Image:
        """Decode one stream to a Pillow image (L, LA, RGB or RGBA as recorded).

        ``denoise=False`` skips the denoiser the stream asks for (faster, and needs no denoiser weights).
        """
        return self.decode_batch([data], denoise=denoise)[0].unwrap()

    def decode_batch(
        self, streams: Sequence[bytes], *, progress: Progress | None = None, denoise: bool = True
    ) -> list[Result[Image.Image]]:
        """Decode many streams; one :class:`Result` per stream."""
        return self._decode(streams, progress, to_pil=True, denoise=denoise)

    def decode_tensors(self, streams: Sequence[bytes], *, denoise: bool = True) -> list[torch.Tensor]:
        """Decode streams to RGB tensors ``[3, H, W]`` in [0, 1]; raises the first failure."""
        return [r.unwrap().rgb for r in self.decode_batch_tensors(streams, denoise=denoise)]

    def decode_batch_tensors(
        self, streams: Sequence[bytes], *, progress: Progress | None = None, denoise: bool = True
    ) -> list[Result[DecodedImage]]:
        """Decode many streams to :class:`DecodedImage` results."""
        return self._decode(streams, progress, to_pil=False, denoise=denoise)

    def _decode(self, streams: Sequence[bytes], progress: Progress | None, to_pil: bool, denoise: bool) -> list[Result]:
        results: list[Result | None] = [None] * len(streams)
        jobs = self._on_host(lambda data: self._decode_job(data, denoise), streams, results, progress)

        def on_device(members: list[int]) -> list[Result[Future]]:
            job = jobs[members[0]]
            shape = (self.spec.latent_channels, *job.header.latent_size(self.spec.downsample))
            coder = decoder_for(job.header.mode, self.backend, self.device)
            planes = planes_tensor([jobs[i].planes for i in members], self.device)
            params = [jobs[i].params for i in members]
            latents = coder.decode(params, planes, shape, dtype=self.dtype, memory_format=self.memory_format)
            if job.denoiser is None:
                decoded = self.decoder_pass(latents)
            else:
                levels = [jobs[i].header.denoiser.noise_level for i in members]  # type: ignore[union-attr]
                sigma = torch.tensor(levels, dtype=self.dtype)
                decoded = self.denoised_decoder_pass(*job.denoiser)(latents, sigma)
            # float32 made on the device: conversions in the host threads would oversubscribe the CPU's
            # intra-op threads (run 5 vs 6 on an H100: 1199 vs 961 images/s, taef2 512x512 b32)
            images = HostCopy(decoded.float())
            return [
                Result(self._host.submit(self._finish, jobs[i], images, row, to_pil)) for row, i in enumerate(members)
            ]

        def key(i: int) -> tuple:
            h = jobs[i].header
            return h.mode, h.latent_size(self.spec.downsample), len(jobs[i].planes), jobs[i].denoiser

        self._pipeline(batches_by_key(jobs, key, self.batch_size), on_device, results, progress)
        return results  # type: ignore[return-value]

    def _decode_job(self, data: bytes, denoise: bool) -> _DecodeJob:
        stream = bitstream.unpack(data)
        header = stream.header
        self.check_model(header)
        denoiser = None
        if denoise and header.denoiser:
            ref = header.denoiser
            loaded = self.denoiser(ref.denoiser_id)
            if loaded.fingerprint != ref.fingerprint:
                raise ModelMismatchError(
                    f"stream expects denoiser {ref.denoiser_id!r} weights {ref.fingerprint.hex()}, but the loaded "
                    f"weights are {loaded.fingerprint.hex()}; decode with denoise=False to skip it"
                )
            denoiser = (ref.denoiser_id, loaded.schedule_key(ref.noise_level, header.mode))
        shape = (self.spec.latent_channels, *header.latent_size(self.spec.downsample))
        coder = decoder_for(header.mode, self.backend, self.device)
        planes = entropy.decompress(stream.latents, coder.planes_size(stream.params, shape))
        alpha = None
        if header.has_alpha:
            raw = entropy.decompress(stream.alpha, header.width * header.height)
            alpha = np.frombuffer(raw, dtype=np.uint8).reshape(header.height, header.width)
        return _DecodeJob(header, stream.params, planes, alpha, denoiser)

    def check_model(self, header: Header) -> None:
        """Raise ModelMismatchError unless this codec's model made the stream."""
        if header.model_id != self.model_id:
            raise ModelMismatchError(f"stream was made by model {header.model_id!r}; this codec uses {self.model_id!r}")
        if header.fingerprint != self.model.fingerprint:
            raise ModelMismatchError(
                f"stream was made by {header.model_id!r} weights {header.fingerprint.hex()}, "
                f"but the loaded weights are {self.model.fingerprint.hex()}"
            )

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """RGB images ``[B, 3, H, W]`` in [0, 1] (float32, CPU) from latents ``[B, C, h, w]``."""
        return self.decoder_pass(latents.to(self.device, self.dtype)).float().cpu()

    @staticmethod
    def _finish(job: _DecodeJob, images: HostCopy, row: int, to_pil: bool) -> DecodedImage | Image.Image:
        h = job.header
        rgb = images.get()[row, :, : h.coded_height, : h.coded_width]
        if (h.coded_width, h.coded_height) != (h.width, h.height):
            rgb = F.interpolate(rgb[None], size=(h.height, h.width), mode="bicubic")[0].clamp_(0, 1)
        decoded = DecodedImage(rgb.contiguous(), job.alpha, h.kind)
        return decoded.to_pil() if to_pil else decoded

    # ----------------------------------------------------------------------------------------- batching

    def _on_host(
        self, fn: Callable[[object], T], items: Sequence, results: list, progress: Progress | None
    ) -> dict[int, T]:
        """``fn`` over ``items`` on the host threads; library errors go straight into ``results``."""
        done: dict[int, T] = {}
        for index, outcome in enumerate(self._host.map(lambda item: _attempt(fn, item), items)):
            if isinstance(outcome, LatentCodecError):
                results[index] = Result(error=outcome)
                if progress:
                    progress(1)
            else:
                done[index] = outcome
        return done

    def _pipeline(
        self,
        batches,
        on_device: Callable[[list[int]], list[Result[Future]]],
        results: list,
        progress: Progress | None,
    ) -> None:
        """Run ``on_device`` batch by batch while host threads finish earlier batches.

        At most about two batches are in flight on the host, which bounds memory on long runs.
        """
        in_flight: deque[tuple[int, Future]] = deque()
        staged: dict[int, Result[Future]] = {}

        def settle(keep: int) -> None:
            while len(in_flight) > keep:
                index, future = in_flight.popleft()
                try:
                    results[index] = Result(future.result())
                except LatentCodecError as exc:
                    results[index] = Result(error=exc)
                except Exception as exc:
                    results[index] = Result(error=EngineError(f"{type(exc).__name__}: {exc}"))
                if progress:
                    progress(1)

        for batch in batches:
            self._run_isolated(batch, on_device, staged)
            for index in batch:
                outcome = staged.pop(index)
                if outcome.ok:
                    in_flight.append((index, outcome.value))
                else:
                    results[index] = outcome
                    if progress:
                        progress(1)
            settle(keep=2 * self.batch_size)
        settle(keep=0)

    @staticmethod
    def _run_isolated(members: list[int], run: Callable[[list[int]], list[Result[T]]], results) -> None:
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
