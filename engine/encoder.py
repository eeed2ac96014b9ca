"""The encode path: prepared images -> (device) encoder pass, refinement and quantization kernels -> (host)
entropy-coded, packed streams. Targets and the denoiser strength are searched by :mod:`~latentcodec.engine.search`."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from latentcodec.engine import bitstream, latent_refinement, search
from latentcodec.engine.batching import batches_by_key
from latentcodec.engine.bitstream import DenoiserRef, Header, Stream
from latentcodec.engine.coders import Coder
from latentcodec.engine.decoder import Decoder
from latentcodec.engine.entropy import latent_stage, zstd
from latentcodec.engine.format import ColorKind
from latentcodec.engine.images import downscaled, pad_to_multiple
from latentcodec.engine.intake import PreparedImage
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.pipeline import BatchPipeline, Outcomes, isolated
from latentcodec.engine.plan import EncodePlan, plan_encode
from latentcodec.engine.results import Result
from latentcodec.engine.runner import HostCopy
from latentcodec.engine.session import ModelSession, to_unit


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
        rgb = prepared.rgb
        height, width = rgb.shape[1:]
        if options.scale < 1:
            rgb = downscaled(to_unit(rgb, torch.float32), options.scale)
        return cls(rgb, prepared.alpha, prepared.kind, width, height)


class Encoder:
    """Encodes prepared images with the session's model; ``decoder`` scores the searches' candidates."""

    def __init__(self, session: ModelSession, pipeline: BatchPipeline, decoder: Decoder) -> None:
        self.session, self.pipeline, self.decoder = session, pipeline, decoder

    def plan(self, options: EncodeOptions) -> EncodePlan:
        return plan_encode(options, self.session.model_id, self.session.denoiser)

    def encode(self, ready: dict[int, PreparedImage], plan: EncodePlan, outcomes: Outcomes[bytes]) -> None:
        """Settle one stream per prepared image (searches run one image at a time)."""
        if plan.options.search is None:
            self._encode_batches({i: EncodeJob.of(p, plan.options) for i, p in ready.items()}, plan, outcomes)
        else:
            target = search.to_rate if plan.options.search == "rate" else search.to_quality
            for index, prepared in ready.items():
                run = lambda _members, p=prepared: [Result(target(self, p, plan))]  # noqa: E731
                outcomes.settle(index, isolated([index], run)[index])
        if plan.choose_strength:
            search.choose_strengths(self.decoder, ready, outcomes, self.pipeline.batch_size, plan.options.metric)

    def _encode_batches(self, jobs: dict[int, EncodeJob], plan: EncodePlan, outcomes: Outcomes[bytes]) -> None:
        coder = self.session.coder(plan.options.mode)

        def on_device(members: list[int]) -> list[Result[Future]]:
            images = _stack([jobs[i].rgb for i in members], self.session.device)
            coded = coder.encode(self._refined(self.session.latents(images), images, plan), plan.options)
            params, planes, noise = HostCopy(coded.params), HostCopy(coded.planes), HostCopy(coded.noise)
            host = self.pipeline.host
            return [
                Result(host.submit(self.pack, jobs[i], coder, params, planes, noise, row, plan))
                for row, i in enumerate(members)
            ]

        key = lambda i: (tuple(jobs[i].rgb.shape), jobs[i].rgb.dtype)  # noqa: E731
        self.pipeline.run(batches_by_key(jobs, key, self.pipeline.batch_size), on_device, outcomes)

    def stream(self, job: EncodeJob, latents: torch.Tensor, plan: EncodePlan) -> bytes:
        """The stream of one image's latents ``[1, C, h, w]`` under ``plan``, coded at once (searches)."""
        coder = self.session.coder(plan.options.mode)
        coded = coder.encode(latents, plan.options)
        return self.pack(job, coder, HostCopy(coded.params), HostCopy(coded.planes), HostCopy(coded.noise), 0, plan)

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

    def pack(
        self,
        job: EncodeJob,
        coder: Coder,
        params: HostCopy,
        planes: HostCopy,
        noise: HostCopy,
        row: int,
        plan: EncodePlan,
    ) -> bytes:
        """Row ``row`` of a coded batch as a finished stream: header, entropy-coded planes and alpha."""
        model = self.session.model
        denoiser = None
        if plan.denoiser_id:
            level = float(noise.get()[row]) * plan.noise_fraction
            denoiser = DenoiserRef(plan.denoiser_id, self.session.denoiser(plan.denoiser_id).fingerprint, level)
        height, width = job.rgb.shape[1:]
        down = model.spec.downsample
        mode_params = params.get()[row].numpy().tobytes()
        latent_shape = (model.spec.latent_channels, -(-height // down), -(-width // down))
        symbols = planes.get()[row, : coder.planes_size(mode_params, latent_shape)].numpy().tobytes()
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
            noise_level=float(noise.get()[row]) if model.spec.conditioned else None,
            entropy=method,
        )
        alpha = zstd.compress(job.alpha.tobytes(), options.level) if job.alpha is not None else b""
        payload = latent_stage.compress(symbols, method, latent_shape, space, options.level)
        return bitstream.pack(Stream(header, mode_params, payload, alpha))


def _stack(images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One batch tensor; in pinned memory when it is bound for a CUDA device (no second copy to pin it)."""
    if device.type != "cuda":
        return torch.stack(images)
    batch = torch.empty((len(images), *images[0].shape), dtype=images[0].dtype, pin_memory=True)
    return torch.stack(images, out=batch)
