"""Latent streams: latents of a named space <-> version-5 streams through the image streams' coders, entropy stage
and container, and the latents of any stream (image streams too). No network runs: (host) intake or parsing and
entropy decoding -> (device) the coders' kernels -> (host) entropy coding and packing."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from latentcodec.engine import bitstream
from latentcodec.engine.batching import batches_by_key
from latentcodec.engine.bitstream import Header, Stream
from latentcodec.engine.coders import Coder, coder_for, planes_tensor
from latentcodec.engine.entropy import latent_stage
from latentcodec.engine.errors import InvalidLatentsError
from latentcodec.engine.format import CodingMode, ColorKind
from latentcodec.engine.info import StreamInput, read_stream
from latentcodec.engine.latent_intake import prepare_latents
from latentcodec.engine.latent_options import LatentOptions
from latentcodec.engine.latent_spaces import LatentShape, LatentSpace, stream_latents
from latentcodec.engine.latent_steps import finest_step, step_for_rmse
from latentcodec.engine.pipeline import BatchPipeline, Outcomes, Progress
from latentcodec.engine.results import Result

_MAX_F16 = 65504.0  # the largest noise level a header's float16 holds
_DECODED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class _Coded:
    """One latent coded: its shape, mode parameters, symbol planes and RMS error (a conditioned decoder's input)."""

    shape: LatentShape
    params: bytes
    planes: bytes
    noise: float


@dataclass(frozen=True)
class _Parsed:
    """A stream parsed and entropy-decoded: what the coder's kernels turn into latents."""

    mode: CodingMode
    params: bytes
    planes: bytes
    shape: LatentShape


class LatentStreams:
    """Codes latents on ``device`` (the coders' kernels by ``backend``) beside ``pipeline``'s host threads."""

    def __init__(self, pipeline: BatchPipeline, device: torch.device, backend: str | None = None) -> None:
        self.pipeline, self.device, self.backend = pipeline, device, backend

    def encode(
        self, items: Sequence[object], space: LatentSpace, options: LatentOptions, progress: Progress | None = None
    ) -> list[Result[bytes]]:
        """One latent stream of ``space`` per latent; one :class:`Result` per item (bad items fail alone)."""
        outcomes: Outcomes[bytes] = Outcomes(len(items), progress)
        ready = self.pipeline.on_host(lambda latents: prepare_latents(latents, space), items, outcomes)
        coder = coder_for(options.mode, self.backend, self.device)

        def on_device(members: list[int]) -> list[Result[Future]]:
            latents = torch.stack([ready[i].to(self.device) for i in members])
            host = self.pipeline.host
            return [
                Result(host.submit(_pack, space, options, c, self.device)) for c in self._coded(coder, latents, options)
            ]

        searched = options.target_rmse is not None  # each latent its own step: batches of one
        key = lambda i: (tuple(ready[i].shape), i if searched else None)  # noqa: E731
        self.pipeline.run(batches_by_key(ready, key, self.pipeline.batch_size), on_device, outcomes)
        return outcomes.results()

    def _coded(self, coder: Coder, latents: torch.Tensor, options: LatentOptions) -> list[_Coded]:
        coding = options.coding
        if options.mode is CodingMode.UNIFORM:
            step = coding.step_value if options.target_rmse is None else step_for_rmse(latents[0], options.target_rmse)
            finest = finest_step(latents)
            if step < finest:  # a batch fails as a whole here, then its latents one by one: only these fail
                raise InvalidLatentsError(
                    f"latents of magnitude up to {float(latents.abs().amax()):g} need a step of at least "
                    f"{finest:.6g} (symbols are int16); got step {step:g}"
                )
            coding = options.at_step(step)
        coded = coder.encode(latents, coding)
        params, planes, noise = coded.params.cpu().numpy(), coded.planes.cpu().numpy(), coded.noise.cpu().tolist()
        shape: LatentShape = tuple(latents.shape[1:])  # type: ignore[assignment]
        rows = []
        for row in range(len(latents)):
            mode_params = params[row].tobytes()
            size = coder.planes_size(mode_params, shape)
            rows.append(_Coded(shape, mode_params, planes[row, :size].tobytes(), min(noise[row], _MAX_F16)))
        return rows

    def decode(
        self, streams: Sequence[StreamInput], dtype: torch.dtype = torch.float32, progress: Progress | None = None
    ) -> list[Result[torch.Tensor]]:
        """The latents ``[C, h, w]`` (``dtype``, on the device) of each stream, latent or image stream; ValueError for
        another ``dtype``."""
        if dtype not in _DECODED_DTYPES:
            raise ValueError(f"latents decode to float16, bfloat16, float32 or float64, not {dtype}")
        outcomes: Outcomes[torch.Tensor] = Outcomes(len(streams), progress)
        jobs = self.pipeline.on_host(_parsed, streams, outcomes)

        def on_device(members: list[int]) -> list[Result[Future]]:
            first = jobs[members[0]]
            planes = planes_tensor([jobs[i].planes for i in members], self.device)
            coder = coder_for(first.mode, self.backend, self.device)
            latents = coder.decode([jobs[i].params for i in members], planes, first.shape).to(dtype)
            return [Result(_done(latents[row].clone())) for row in range(len(members))]

        key = lambda i: (jobs[i].mode, jobs[i].shape, len(jobs[i].planes))  # noqa: E731
        self.pipeline.run(batches_by_key(jobs, key, self.pipeline.batch_size), on_device, outcomes)
        return outcomes.results()


def _pack(space: LatentSpace, options: LatentOptions, coded: _Coded, device: torch.device | None = None) -> bytes:
    """A finished latent stream: its header (sized as the image its latents decode to) and entropy-coded planes
    (contexts on ``device``)."""
    mode, shape = options.mode, coded.shape
    method = latent_stage.method_for(options.entropy, mode, len(coded.planes), shape, space.name)
    payload = latent_stage.compress(coded.planes, method, shape, space.name, options.level, device)
    width, height = space.image_size(*shape[1:])
    header = Header(
        kind=ColorKind.RGB,
        mode=mode,
        width=width,
        height=height,
        coded_width=width,
        coded_height=height,
        model_id="",
        fingerprint=b"",
        noise_level=coded.noise,
        entropy=method,
        latent_space=space.name,
    )
    return bitstream.pack(Stream(header, coded.params, payload))


def _parsed(data: StreamInput) -> _Parsed:
    """A stream's header checked and its symbols entropy-decoded (CorruptStreamError, ModelError if not usable)."""
    stream = bitstream.unpack(read_stream(data))
    header = stream.header
    shape, space = stream_latents(header)
    size = coder_for(header.mode).planes_size(stream.params, shape)
    planes = latent_stage.decompress(stream.latents, header.entropy, header.mode, size, shape, space)
    return _Parsed(header.mode, stream.params, planes, shape)


def _done(value: object) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future
