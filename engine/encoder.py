"""The encode path: prepared images -> (device) encoder pass, refinement and quantization kernels -> (host)
entropy-coded, packed streams. Targets are searched by :mod:`~latentcodec.engine.search`, the denoiser strength
by :mod:`~latentcodec.engine.strength_search`."""

from __future__ import annotations

import dataclasses
import functools
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from latentcodec.engine import bitstream, latent_refinement, search, strength_search
from latentcodec.engine.batching import batches_by_key
from latentcodec.engine.bitstream import DenoiserRef, Header, Stream
from latentcodec.engine.coders import Coder
from latentcodec.engine.coders.base import CodedBatch, HostRows
from latentcodec.engine.decoder import Decoder
from latentcodec.engine.entropy import latent_stage, zstd
from latentcodec.engine.format import ColorKind, EntropyMethod
from latentcodec.engine.images import downscaled, pad_to_multiple
from latentcodec.engine.intake import PreparedImage
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.pipeline import BatchPipeline, Outcomes, isolated
from latentcodec.engine.plan import EncodePlan, plan_encode
from latentcodec.engine.results import Result
from latentcodec.engine.session import ModelSession, to_unit
from latentcodec.engine.stage_timer import staged


@dataclass
class EncodeJob:
    """One image as the encoder codes it: RGB at the coded size, and what the header records."""

    rgb: torch.Tensor  # [3, h, w]: uint8, or float in [0, 1]
    alpha: np.ndarray | None
    kind: ColorKind
    width: int
    height: int

    @classmethod
    def of(cls, prepared: PreparedImage, options: EncodeOptions) -> EncodeJob:
        """``prepared`` downscaled by ``options.scale`` (antialiased bicubic) when it is below 1."""
        rgb, (height, width) = prepared.rgb, prepared.rgb.shape[1:]
        if options.scale < 1:
            rgb = downscaled(to_unit(rgb, torch.float32), options.scale)
        return cls(rgb, prepared.alpha, prepared.kind, width, height)


class Encoder:
    """Encodes prepared images with the session's model; ``decoder`` scores the searches' candidates."""

    def __init__(self, session: ModelSession, pipeline: BatchPipeline, decoder: Decoder) -> None:
        self.session, self.pipeline, self.decoder = session, pipeline, decoder

    def plan(self, options: EncodeOptions) -> EncodePlan:
        return plan_encode(options, self.session)

    def encode(self, ready: dict[int, PreparedImage], plan: EncodePlan, outcomes: Outcomes[bytes]) -> None:
        """Settle one stream per prepared image (searches run one image at a time)."""
        if plan.options.search is None:
            self._encode_batches({i: EncodeJob.of(p, plan.options) for i, p in ready.items()}, plan, outcomes)
        else:
            target = search.to_rate if plan.options.search == "rate" else search.to_quality
            for index, prepared in ready.items():
                coding_at = functools.partial(self._coding, prepared, plan)
                run = lambda _members, c=coding_at, p=prepared: [Result(target(c, self.decoder, p, plan))]  # noqa: E731
                outcomes.settle(index, isolated([index], run)[index])
        if plan.choose_strength and plan.options.strength_by == "pixels":
            strength_search.choose_strengths(
                self.decoder, ready, outcomes, self.pipeline.batch_size, plan.options.metric
            )

    def _encode_batches(self, jobs: dict[int, EncodeJob], plan: EncodePlan, outcomes: Outcomes[bytes]) -> None:
        coder = self.session.coder(plan.options.mode)

        def on_device(members: list[int]) -> list[Result[Future]]:
            images = _stack([jobs[i].rgb for i in members], self.session.device)
            latents = self._refined(self.session.latents(images), images, plan)
            coded = plan.quantize(coder, latents)
            fractions = self._fractions(coder, coded, latents, images, plan)
            rows, host = self._on_host(coded, latents, plan, batched=True), self.pipeline.host
            return [
                Result(host.submit(self.pack, jobs[i], coder, rows, row, plan, fractions[row]))
                for row, i in enumerate(members)
            ]

        key = lambda i: (tuple(jobs[i].rgb.shape), jobs[i].rgb.dtype)  # noqa: E731
        self.pipeline.run(batches_by_key(jobs, key, self.pipeline.batch_size), on_device, outcomes)

    def _coding(self, prepared: PreparedImage, plan: EncodePlan, scale: float) -> search.Coding:
        """The searches' view of one candidate scale: latents computed once, streams and sizes per step."""
        at_scale = plan.with_options(scale=scale, target_bpp=None, target_psnr=None, quality=None)
        job = EncodeJob.of(prepared, at_scale.options)
        latents = self.session.latents(job.rgb[None])
        return search.Coding(
            stream=functools.cache(lambda step: self.stream(job, latents, at_scale.with_options(step=step))),
            size=lambda step: self.stream_size(job, latents, at_scale.with_options(step=step)),
            final=lambda step: self.stream(job, latents, at_scale.with_options(step=step), choose=True),
        )

    def stream(self, job: EncodeJob, latents: torch.Tensor, plan: EncodePlan, choose: bool = False) -> bytes:
        """One image's stream (searches): its denoiser entry at the plan's fraction, or (``choose``) the chosen one."""
        coder, coded, rows = self._coded(latents, plan)
        fraction = self._fractions(coder, coded, latents, job.rgb[None], plan)[0] if choose else _recorded(plan)
        return self.pack(job, coder, rows, 0, plan, fraction)

    def _coded(self, latents: torch.Tensor, plan: EncodePlan) -> tuple[Coder, CodedBatch, HostRows]:
        """The mode's coder, its coded batch of ``latents`` and that batch on its way to the host."""
        coder = self.session.coder(plan.options.mode)
        coded = plan.quantize(coder, latents)
        return coder, coded, self._on_host(coded, latents, plan)

    def _on_host(self, coded: CodedBatch, latents: torch.Tensor, plan: EncodePlan, batched: bool = False) -> HostRows:
        """``coded`` on its way to the host; ``batched``: with its entropy contexts (all rows at once, on device)."""
        if not batched:
            return HostRows.of(coded)
        wanted, shape = (plan.options.entropy, plan.options.mode), tuple(latents.shape[1:])
        return HostRows.of(coded, latent_stage.batch_contexts(coded.planes, *wanted, shape, self._entropy(plan)[0]))

    @staged("strength search", device=True, scope=True)
    def _fractions(
        self, coder: Coder, coded: CodedBatch, latents: torch.Tensor, images: torch.Tensor, plan: EncodePlan
    ) -> list:
        """Per image, the fraction of its noise level its denoiser entry records (None: no entry). Under
        ``denoiser="auto"`` with ``strength_by="crops"``: decided by decoding a few sampled windows of the image at
        each strength (:func:`strength_search.sampled_strengths`), on the device."""
        if not (plan.denoiser_id and plan.choose_strength and plan.options.strength_by == "crops"):
            return [_recorded(plan)] * len(latents)
        shape = tuple(latents.shape[1:])
        params = [bytes(row) for row in coded.params.cpu().numpy()]
        sizes = [coder.planes_size(p, shape) for p in params]  # per row: symbol widths may differ within a batch
        quantized = torch.cat(
            [coder.decode([p], coded.planes[i : i + 1, : sizes[i]], shape) for i, p in enumerate(params)]
        )
        session, noise = self.session, coded.noise.to(self.session.device)
        loaded = session.denoiser(plan.denoiser_id)
        denoiser = (plan.denoiser_id, loaded.schedule_key(float(noise[0]), plan.options.mode))
        recorded = noise if session.spec.conditioned else torch.zeros_like(noise)  # what a stream without one says

        def decode(windows: torch.Tensor, owners: torch.Tensor, fractions: torch.Tensor | None) -> torch.Tensor:
            windows = windows.to(session.dtype).contiguous(memory_format=session.memory_format)
            if fractions is None:
                return session.decode(windows, recorded[owners].to(session.dtype))
            return session.decode(windows, (fractions * noise[owners]).to(session.dtype), denoiser)

        target = to_unit(pad_to_multiple(images, session.spec.downsample), torch.float32).to(session.device)
        return strength_search.sampled_strengths(decode, quantized, target, session.spec.downsample)

    def _refined(self, latents: torch.Tensor, images: torch.Tensor, plan: EncodePlan) -> torch.Tensor:
        """Latents after ``effort`` refinement steps through float32 copies of the decoder side: the decoder,
        after the stream's named denoiser (:attr:`EncodePlan.refinement_denoiser`)."""
        options = plan.options
        if not options.effort:
            return latents
        decoder = self.session.float32_model()
        denoiser_id = plan.refinement_denoiser
        if denoiser_id is None:
            decode = decoder.decode  # (quantized, noise): a conditioned decoder is told the noise level
        else:
            loaded = self.session.denoiser(denoiser_id, torch.float32)
            fraction = plan.noise_fraction  # of the noise level, as the stream will record it
            denoise = loaded.pass_fn(loaded.schedule_key(fraction * options.step_value / 12**0.5, options.mode))
            decode = lambda quantized, noise: decoder.decode(denoise(quantized, fraction * noise))  # noqa: E731
        target = to_unit(pad_to_multiple(images, self.session.spec.downsample), torch.float32).to(self.session.device)
        return latent_refinement.refine(decode, latents, target, options.step_value, options.effort)

    @staged("pack")
    def pack(
        self,
        job: EncodeJob,
        coder: Coder,
        rows: HostRows,
        row: int,
        plan: EncodePlan,
        fraction: float | None,
    ) -> bytes:
        """Row ``row`` of a coded batch as a finished stream: header, entropy-coded planes and alpha; its denoiser
        entry (if ``fraction`` is not None) records that fraction of the measured noise level."""
        unfinished, symbols, method, shape = self._unfinished(job, coder, rows, row, plan, fraction)
        payload = latent_stage.compress(symbols, method, shape, *self._entropy(plan), rows.contexts_of(row))
        return bitstream.pack(dataclasses.replace(unfinished, latents=payload))

    def stream_size(self, job: EncodeJob, latents: torch.Tensor, plan: EncodePlan) -> float:
        """The size in bytes of :meth:`stream`'s stream, without entropy-coding the latents where the method knows
        their rate from its model (to within one 32-bit word: tests measure it)."""
        coder, _, rows = self._coded(latents, plan)
        # the plan's entry stands for the chosen one: same bytes, whatever its level
        unfinished, symbols, method, shape = self._unfinished(job, coder, rows, 0, plan, _recorded(plan))
        bits = latent_stage.payload_bits(symbols, method, shape, *self._entropy(plan))
        return len(bitstream.pack(unfinished)) + bits / 8

    def _entropy(self, plan: EncodePlan) -> tuple[str, int, torch.device]:
        """The entropy stage's latent space, zstd level and device (where a method's contexts run)."""
        return self.session.spec.latent_space, plan.options.level, self.session.device

    def _unfinished(
        self,
        job: EncodeJob,
        coder: Coder,
        rows: HostRows,
        row: int,
        plan: EncodePlan,
        fraction: float | None,
    ) -> tuple[Stream, bytes, EntropyMethod, tuple[int, int, int]]:
        """The stream without its latent payload, the symbol planes, the entropy method and the latents' shape."""
        model = self.session.model
        denoiser = None
        if plan.denoiser_id and fraction is not None:
            level = float(rows.noise.get()[row]) * fraction
            denoiser = DenoiserRef(plan.denoiser_id, self.session.denoiser(plan.denoiser_id).fingerprint, level)
        height, width = job.rgb.shape[1:]
        down = model.spec.downsample
        mode_params = rows.params.get()[row].numpy().tobytes()
        latent_shape = (model.spec.latent_channels, -(-height // down), -(-width // down))
        symbols = rows.planes.get()[row, : coder.planes_size(mode_params, latent_shape)].numpy().tobytes()
        options, space = plan.options, model.spec.latent_space
        method = latent_stage.method_for(options.entropy, options.mode, len(symbols), latent_shape, space)
        header = Header(
            kind=job.kind,
            mode=options.mode,
            width=job.width,
            height=job.height,
            coded_width=width,
            coded_height=height,
            model_id=model.spec.model_id,
            fingerprint=model.fingerprint,
            has_alpha=job.alpha is not None,
            denoiser=denoiser,
            noise_level=float(rows.noise.get()[row]) if model.spec.conditioned else None,
            entropy=method,
        )
        alpha = zstd.compress(job.alpha.tobytes(), options.level) if job.alpha is not None else b""
        return Stream(header, mode_params, b"", alpha), symbols, method, latent_shape


def _recorded(plan: EncodePlan) -> float | None:
    """The fraction of the noise level a stream's denoiser entry records when nothing is chosen (None: no entry)."""
    return plan.noise_fraction if plan.denoiser_id else None


def _stack(images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One batch tensor; in pinned memory when it is bound for a CUDA device (no second copy to pin it)."""
    if device.type != "cuda":
        return torch.stack(images)
    batch = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=True)
    return torch.stack(images, out=batch)
