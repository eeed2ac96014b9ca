"""The Codec: the public facade over a model session, a batch pipeline, the encoder and the decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from latentcodec.engine.decoder import DecodedImage, Decoder
from latentcodec.engine.devices import resolve_device
from latentcodec.engine.encoder import Encoder
from latentcodec.engine.errors import NotAStreamError
from latentcodec.engine.info import StreamInput
from latentcodec.engine.intake import ImageInput, prepare, prepare_tensor
from latentcodec.engine.latent_intake import LatentInput, batch_items
from latentcodec.engine.latent_options import LatentOptions
from latentcodec.engine.latent_spaces import space_of_model
from latentcodec.engine.latent_streams import LatentStreams
from latentcodec.engine.models import DEFAULT_MODEL, get_spec
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.pipeline import BatchPipeline, Outcomes, Progress
from latentcodec.engine.results import Result
from latentcodec.engine.session import ModelSession
from latentcodec.engine.tiling import TilePolicy

__all__ = ["Codec", "DecodedImage", "Progress"]


def _from_session(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.session, name), doc=doc)


class Codec:
    """Encoder and decoder bound to one model, device and dtype.

    Batch methods return one :class:`Result` per input, in order; an item's failure never affects the others.
    Images are coded by ``encode*``/``decode*``; latents of the model's latent space by ``encode_latents*`` (and
    ``decode_latents*`` gives any stream's latents); ``latents_of``/``images_of`` run the networks alone.
    ``graphs`` (default: on for CUDA) runs the network passes through static bucketed batches, captured as
    CUDA graphs on GPU. ``channels_last`` sets the activation layout. ``compile`` runs the passes through
    ``torch.compile`` (one-off compile cost of seconds to a minute per pass). ``host_threads`` sizes the pool
    that decodes images and runs zstd beside the device. ``denoiser_source`` overrides where a diffusers
    denoiser (``sd-unet``) is loaded from. Encode options (keywords, or ``options=``): :class:`EncodeOptions`.
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
        tile: int | None = None,
    ) -> None:
        device = resolve_device(device)
        self.session = ModelSession(
            model,
            device,
            dtype or (torch.float16 if device.type == "cuda" else torch.float32),
            backend=backend,
            source=source,
            graphs=device.type == "cuda" if graphs is None else graphs,
            # channels-last activations: faster on tensor cores, and 1.3-1.5x faster on the CPU (oneDNN)
            memory_format=torch.channels_last if channels_last else torch.contiguous_format,
            compile=compile,
            denoiser_source=denoiser_source,
            tiles=TilePolicy.of(tile, device, get_spec(model).downsample),
        )
        self.pipeline = BatchPipeline(batch_size, host_threads)
        self.decoder = Decoder(self.session, self.pipeline)
        self.encoder = Encoder(self.session, self.pipeline, self.decoder)
        self.latent_streams = LatentStreams(self.pipeline, device, backend)

    model_id = _from_session("model_id", "The autoencoder's registry id.")
    device = _from_session("device", "The torch device every pass runs on.")
    dtype = _from_session("dtype", "The networks' dtype (float16 on CUDA, float32 elsewhere by default).")
    graphs = _from_session("graphs", "Whether passes run through static batches (CUDA graphs on GPU).")
    model = _from_session("model", "The loaded :class:`LatentAutoencoder`.")
    spec = _from_session("spec", "The model's latent-space :class:`ModelSpec`.")
    encoder_pass = _from_session("encoder_pass", "The encoder's :class:`PassRunner`.")
    decoder_pass = _from_session("decoder_pass", "The decoder's :class:`PassRunner`.")

    @property
    def batch_size(self) -> int:
        return self.pipeline.batch_size

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self.pipeline.batch_size = max(1, size)

    def denoiser(self, denoiser_id: str):
        """A denoiser on this codec's device and dtype (loaded on first use, cached)."""
        return self.session.denoiser(denoiser_id)

    def close(self) -> None:
        """Stop the host threads (the codec stays usable for nothing after this)."""
        self.pipeline.close()

    # ----------------------------------------------------------------------------------------- encoding

    def encode(self, image: ImageInput, *, options: EncodeOptions | None = None, **overrides) -> bytes:
        """Encode one image (path, bytes, Pillow image, ``[H, W, C]`` array or ``[3, H, W]`` tensor) to a stream."""
        return self.encode_batch([image], options=options, **overrides)[0].unwrap()

    def encode_batch(
        self,
        images: Sequence[ImageInput],
        *,
        progress: Progress | None = None,
        options: EncodeOptions | None = None,
        **overrides,
    ) -> list[Result[bytes]]:
        """Encode many images; one :class:`Result` per image."""
        plan = self.encoder.plan(EncodeOptions.resolve(options, overrides))
        outcomes: Outcomes[bytes] = Outcomes(len(images), progress)
        keep_alpha = plan.options.alpha == "keep"
        ready = self.pipeline.on_host(lambda image: prepare(image, keep_alpha), images, outcomes)
        self.encoder.encode(ready, plan, outcomes)
        return outcomes.results()

    def encode_tensors(
        self, images: torch.Tensor | Sequence[torch.Tensor], *, options: EncodeOptions | None = None, **overrides
    ) -> list[bytes]:
        """Encode RGB tensors (``[B, 3, H, W]`` or a list of ``[3, H, W]``; float in [0, 1] or uint8); raises the
        first failure."""
        plan = self.encoder.plan(EncodeOptions.resolve(options, overrides))
        ready = {index: prepare_tensor(rgb) for index, rgb in enumerate(images)}
        outcomes: Outcomes[bytes] = Outcomes(len(ready))
        self.encoder.encode(ready, plan, outcomes)
        return [r.unwrap() for r in outcomes.results()]

    def encode_latents(self, latents: LatentInput, *, options: LatentOptions | None = None, **overrides) -> bytes:
        """A latent stream of one latent ``[C, h, w]`` (or ``[1, C, h, w]``) of this model's latent space (tensor or
        array; float16, bfloat16, float32 or float64). Options (keywords, or ``options=``): :class:`LatentOptions`."""
        return self.encode_latents_batch([latents], options=options, **overrides)[0].unwrap()

    def encode_latents_batch(
        self,
        latents: LatentInput | Sequence[LatentInput],
        *,
        progress: Progress | None = None,
        options: LatentOptions | None = None,
        **overrides,
    ) -> list[Result[bytes]]:
        """Latent streams of a ``[B, C, h, w]`` batch or a sequence of latents; one :class:`Result` per latent."""
        space = space_of_model(self.model_id)
        items, resolved = batch_items(latents), LatentOptions.resolve(options, overrides)
        return self.latent_streams.encode(items, space, resolved, progress)

    def latents_of(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder pass alone: float32 latents ``[B, C, h, w]`` (on the codec's device) of RGB images
        ``[B, 3, H, W]`` (uint8, or float in [0, 1])."""
        return self.session.latents(images).float().contiguous()

    # ----------------------------------------------------------------------------------------- decoding

    def decode(self, data: StreamInput, *, denoise: bool = True, max_pixels: int | None = None) -> Image.Image:
        """Decode one stream (bytes, or the file at a path) to a Pillow image (L, LA, RGB or RGBA as recorded).

        ``denoise=False`` skips the denoiser the stream asks for (faster, and needs no denoiser weights).
        ``max_pixels`` refuses (LimitError) streams that declare more pixels, before any work: set it for
        untrusted streams (the format allows 67.1 Mpixel).
        """
        return self.decode_batch([data], denoise=denoise, max_pixels=max_pixels)[0].unwrap()

    def decode_batch(
        self,
        streams: Sequence[StreamInput],
        *,
        progress: Progress | None = None,
        denoise: bool = True,
        max_pixels: int | None = None,
    ) -> list[Result[Image.Image]]:
        """Decode many streams (bytes or paths); one :class:`Result` per stream."""
        outcomes: Outcomes[Image.Image] = Outcomes(len(streams), progress)
        self.decoder.decode(streams, outcomes, to_pil=True, denoise=denoise, max_pixels=max_pixels)
        return outcomes.results()

    def decode_tensors(self, streams: Sequence[StreamInput], *, denoise: bool = True) -> list[torch.Tensor]:
        """Decode streams to RGB tensors ``[3, H, W]`` in [0, 1]; raises the first failure."""
        return self.decoder.tensors(streams, denoise=denoise)

    def decode_batch_tensors(
        self, streams: Sequence[StreamInput], *, progress: Progress | None = None, denoise: bool = True
    ) -> list[Result[DecodedImage]]:
        """Decode many streams to :class:`DecodedImage` results."""
        outcomes: Outcomes[DecodedImage] = Outcomes(len(streams), progress)
        self.decoder.decode(streams, outcomes, to_pil=False, denoise=denoise)
        return outcomes.results()

    def decode_latents(self, data: StreamInput, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The latents ``[C, h, w]`` (on the codec's device) of one stream of any model or latent space: a latent
        stream's, or an image stream's coded latents (its whole grid). No network runs."""
        if isinstance(data, torch.Tensor):
            raise NotAStreamError("decode_latents reads a stream; Codec.images_of(latents) runs the decoder")
        return self.decode_latents_batch([data], dtype=dtype)[0].unwrap()

    def decode_latents_batch(
        self, streams: Sequence[StreamInput], *, progress: Progress | None = None, dtype: torch.dtype = torch.float32
    ) -> list[Result[torch.Tensor]]:
        """The latents of many streams; one :class:`Result` per stream."""
        return self.latent_streams.decode(streams, dtype, progress)

    def images_of(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder pass alone: RGB images ``[B, 3, H, W]`` in [0, 1] (float32, CPU) of latents ``[B, C, h, w]``
        (no denoiser; a conditioned decoder is told noise level 0)."""
        sigma = torch.zeros(latents.shape[0], dtype=self.dtype)
        return self.session.decode(latents.to(self.device, self.dtype), sigma).float().cpu()

    def check_model(self, header) -> None:
        """Raise ModelMismatchError unless this codec's model made the stream."""
        self.decoder.check_model(header)
