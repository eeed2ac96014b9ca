"""The decode path: streams -> (host) parsed and entropy-decoded symbols -> (device) latents, denoiser and
decoder pass -> (host) cropped, resized and converted images."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from latentcodec.engine import bitstream
from latentcodec.engine.bands import finish_bands, streamed
from latentcodec.engine.batching import batches_by_key
from latentcodec.engine.bitstream import Header
from latentcodec.engine.coders import Layout, planes_tensor
from latentcodec.engine.entropy import latent_stage, zstd
from latentcodec.engine.errors import LimitError, ModelMismatchError
from latentcodec.engine.format import ColorKind
from latentcodec.engine.images import finish
from latentcodec.engine.info import StreamInput, read_stream
from latentcodec.engine.latent_spaces import check_renders
from latentcodec.engine.pipeline import BatchPipeline, Outcomes
from latentcodec.engine.results import Result
from latentcodec.engine.runner import HostCopy
from latentcodec.engine.session import ModelSession
from latentcodec.engine.stage_timer import staged


@dataclass
class DecodedImage:
    """A decoded image as tensors: RGB ``[3, H, W]`` float in [0, 1] on the CPU, alpha, colour kind."""

    rgb: torch.Tensor
    alpha: np.ndarray | None
    kind: ColorKind

    def to_pil(self) -> Image.Image:
        return finish(self.rgb, self.kind, self.alpha)


@dataclass
class _DecodeJob:
    header: Header
    params: bytes
    planes: bytes
    alpha: np.ndarray | None
    denoiser: tuple[str, Hashable] | None = None  # (denoiser id, schedule key) when it runs


class Decoder:
    """Decodes streams of the session's model, batched by mode, latent size, symbol width, denoiser pass and
    decoder branch."""

    def __init__(self, session: ModelSession, pipeline: BatchPipeline) -> None:
        self.session, self.pipeline = session, pipeline

    def decode(
        self,
        streams: Sequence[StreamInput],
        outcomes: Outcomes,
        *,
        to_pil: bool,
        denoise: bool,
        max_pixels: int | None = None,
    ) -> None:
        """Settle one result per stream: a Pillow image (``to_pil``) or a :class:`DecodedImage`. A stream whose
        header declares more than ``max_pixels`` pixels (decoded or coded) fails before any allocation."""
        session = self.session
        jobs = self.pipeline.on_host(lambda data: self._job(data, denoise, max_pixels), streams, outcomes)

        def latents_of(members: list[int]) -> torch.Tensor:
            job = jobs[members[0]]
            shape = (session.spec.latent_channels, *job.header.latent_size(session.spec.downsample))
            planes = planes_tensor([jobs[i].planes for i in members], session.device)
            params = [jobs[i].params for i in members]
            coder = session.coder(job.header.mode)
            return coder.decode(params, planes, shape, Layout(session.dtype, session.memory_format))

        def on_device(members: list[int]) -> list[Result[Future]]:
            job = jobs[members[0]]
            if job.denoiser is None:
                levels = [jobs[i].header.noise_level or 0.0 for i in members]
            else:
                levels = [jobs[i].header.denoiser.noise_level for i in members]  # type: ignore[union-attr]
            sigma = torch.tensor(levels, dtype=session.dtype)
            if streamed(job.header):  # alone in its batch (see key); the latents go to the bands alone
                across, bands = session.decode_bands(latents_of(members), sigma, job.denoiser)
                job.planes = b""  # decoded: up to 64 MB no longer needed
                image = finish_bands(session, bands, across, job.header, job.alpha, to_pil)
                return [Result(_done(image if to_pil else DecodedImage(image, job.alpha, job.header.kind)))]
            decoded = session.decode(latents_of(members), sigma, job.denoiser)
            # float32 made on the device: conversions in the host threads would oversubscribe the CPU's intra-op
            # threads (README, "The engine")
            images = _resized(session, decoded, [jobs[i].header for i in members])
            host = self.pipeline.host
            return [Result(host.submit(_finish, jobs[i], images[row], to_pil)) for row, i in enumerate(members)]

        def key(i: int) -> tuple:
            h, denoiser = jobs[i].header, jobs[i].denoiser
            level = None if denoiser else torch.tensor([h.noise_level or 0.0])
            branch = session.model.branches(level)[0][0]  # the decoder a switched model runs
            alone = i if streamed(h) else None
            return h.mode, h.latent_size(session.spec.downsample), len(jobs[i].planes), denoiser, branch, alone

        self.pipeline.run(batches_by_key(jobs, key, self.pipeline.batch_size), on_device, outcomes)

    def tensors(self, streams: Sequence[StreamInput], *, denoise: bool = True) -> list[torch.Tensor]:
        """RGB tensors ``[3, H, W]`` in [0, 1]; raises the first failure."""
        outcomes: Outcomes[DecodedImage] = Outcomes(len(streams))
        self.decode(streams, outcomes, to_pil=False, denoise=denoise)
        return [r.unwrap().rgb for r in outcomes.results()]

    @staged("parse")
    def _job(self, data: StreamInput, denoise: bool, max_pixels: int | None) -> _DecodeJob:
        stream = bitstream.unpack(read_stream(data))
        header = stream.header
        pixels = max(header.width * header.height, header.coded_width * header.coded_height)
        if max_pixels is not None and pixels > max_pixels:
            raise LimitError(f"stream declares {pixels} pixels, over the limit of {max_pixels}")
        self.check_model(header)
        spec = self.session.spec
        denoiser = self._denoiser_pass(header) if denoise and header.denoiser else None
        shape = (spec.latent_channels, *header.latent_size(spec.downsample))
        size = self.session.coder(header.mode).planes_size(stream.params, shape)
        planes = latent_stage.decompress(
            stream.latents, header.entropy, header.mode, size, shape, spec.latent_space, self.session.device
        )
        alpha = None
        if header.has_alpha:
            raw = zstd.decompress(stream.alpha, header.width * header.height)
            alpha = np.frombuffer(raw, dtype=np.uint8).reshape(header.height, header.width)
        return _DecodeJob(header, stream.params, planes, alpha, denoiser)

    def _denoiser_pass(self, header: Header) -> tuple[str, Hashable]:
        """(denoiser id, schedule key) of the pass a stream's denoiser runs in; its weights must match."""
        ref = header.denoiser
        loaded = self.session.denoiser(ref.denoiser_id)
        if loaded.fingerprint != ref.fingerprint:
            raise ModelMismatchError(
                f"stream expects denoiser {ref.denoiser_id!r} weights {ref.fingerprint.hex()}, but the loaded "
                f"weights are {loaded.fingerprint.hex()}; decode with denoise=False to skip it"
            )
        return ref.denoiser_id, loaded.schedule_key(ref.noise_level, header.mode)

    def check_model(self, header: Header) -> None:
        """Raise ModelMismatchError unless the session's model made the stream (a latent stream: decodes its space)."""
        if header.latent_space is not None:
            return check_renders(header, self.session.spec)
        model_id, model = self.session.model_id, self.session.model
        if header.model_id != model_id:
            raise ModelMismatchError(f"stream was made by model {header.model_id!r}; this codec uses {model_id!r}")
        if header.fingerprint != model.fingerprint:
            raise ModelMismatchError(
                f"stream was made by {header.model_id!r} weights {header.fingerprint.hex()}, "
                f"but the loaded weights are {model.fingerprint.hex()}"
            )


def _resized(session: ModelSession, decoded: torch.Tensor, headers: list[Header]) -> list[HostCopy]:
    """Each row of a decoded batch at its image's size, on its way to the host: cropped to the coded size; rows coded
    smaller resized by the model (:meth:`LatentAutoencoder.upscale`) together, one batch per size."""
    rows = [decoded[r : r + 1, :, : h.coded_height, : h.coded_width] for r, h in enumerate(headers)]
    resized: dict[tuple[int, int, int, int], list[int]] = {}
    for r, h in enumerate(headers):
        if (h.coded_width, h.coded_height) != (h.width, h.height):
            resized.setdefault((h.coded_height, h.coded_width, h.height, h.width), []).append(r)
    for (*_, height, width), members in resized.items():
        levels = torch.tensor([headers[r].noise_level or 0.0 for r in members])
        batch = session.upscale(torch.cat([rows[r] for r in members]), (height, width), levels)
        for k, r in enumerate(members):
            rows[r] = batch[k : k + 1]
    return [HostCopy(rgb[0].float()) for rgb in rows]


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


@staged("conversion")
def _finish(job: _DecodeJob, image: HostCopy, to_pil: bool) -> DecodedImage | Image.Image:
    rgb = image.get()
    if to_pil:  # from the cropped view: no full-size copy
        return DecodedImage(rgb, job.alpha, job.header.kind).to_pil()
    return DecodedImage(rgb.contiguous(), job.alpha, job.header.kind)
