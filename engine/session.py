"""The networks of one codec on one device: the autoencoder, its denoisers and the passes that run them."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import cached_property

import torch

from latentcodec.engine.coders import Coder, coder_for
from latentcodec.engine.denoise.registry import LoadedDenoiser, load_denoiser
from latentcodec.engine.format import CodingMode
from latentcodec.engine.images import pad_to_multiple
from latentcodec.engine.models import LatentAutoencoder, ModelSpec, get_spec, load_model
from latentcodec.engine.runner import PassRunner


def to_unit(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 or float images -> ``dtype`` in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255)
    return images.to(dtype)


class ModelSession:
    """An autoencoder (and the denoisers its streams name) placed on one device, dtype and memory layout.

    Networks load on first use. ``graphs`` runs the passes through static bucketed batches (CUDA graphs on GPU),
    ``compile`` through ``torch.compile``; on the CPU each eager pass takes one image (batching only spills
    caches), which also makes every pass batch-invariant. ``backend`` picks the coders' kernels.
    """

    def __init__(
        self,
        model_id: str,
        device: torch.device,
        dtype: torch.dtype,
        *,
        backend: str | None,
        source: str | None,
        graphs: bool,
        memory_format: torch.memory_format,
        compile: bool,
        denoiser_source: str | None,
    ) -> None:
        self.model_id = get_spec(model_id).model_id  # fails early for unknown ids
        self.device, self.dtype, self.backend, self.source = device, dtype, backend, source
        self.graphs, self.memory_format, self.compile = graphs, memory_format, compile
        self.denoiser_source = denoiser_source
        self._denoised_passes: dict[tuple[str, Hashable], PassRunner] = {}

    @cached_property
    def model(self) -> LatentAutoencoder:
        return load_model(self.model_id, self.device, self.dtype, self.source, self.memory_format)

    @property
    def spec(self) -> ModelSpec:
        """The loaded model's latent-space description (diffusers configs may refine the registry's)."""
        return self.model.spec

    def float32_model(self) -> LatentAutoencoder:
        """The autoencoder in float32 on this device (refinement takes gradients through it)."""
        return load_model(self.model_id, self.device, torch.float32, self.source, self.memory_format)

    def coder(self, mode: CodingMode) -> Coder:
        return coder_for(mode, self.backend, self.device)

    def _runner(self, fn: Callable[..., torch.Tensor]) -> PassRunner:
        max_rows = 1 if self.device.type == "cpu" else None
        fn = torch.compile(fn, dynamic=True) if self.compile else fn  # one compile serves every shape
        return PassRunner(fn, self.device, static=self.graphs, memory_format=self.memory_format, max_rows=max_rows)

    @cached_property
    def encoder_pass(self) -> PassRunner:
        """Images ``[B, 3, H, W]`` (uint8 or [0, 1]; multiples of the downsampling) -> latents, on the device."""
        return self._runner(lambda x: self.model.encode(to_unit(x, self.dtype)))

    @cached_property
    def decoder_pass(self) -> PassRunner:
        """Latents (and, for a conditioned decoder, noise levels ``[B]``) -> RGB images in [0, 1], on the device."""
        return self._runner(lambda z, *sigma: self.model.decode(z, *sigma).clamp_(0, 1))

    def denoiser(self, denoiser_id: str, dtype: torch.dtype | None = None) -> LoadedDenoiser:
        """A denoiser on this device, in the session's dtype unless told (loaded on first use, cached)."""
        return load_denoiser(denoiser_id, self.device, dtype or self.dtype, self.denoiser_source, self.memory_format)

    def denoised_decoder_pass(self, denoiser_id: str, key: Hashable) -> PassRunner:
        """(Latents, noise levels ``[B]``) -> RGB in [0, 1]: the denoiser and the decoder as one pass (one
        CUDA graph per shape on GPU), for streams whose schedule key is ``key``."""
        if (denoiser_id, key) not in self._denoised_passes:
            denoise = self.denoiser(denoiser_id).pass_fn(key)
            self._denoised_passes[denoiser_id, key] = self._runner(
                lambda z, sigma: self.model.decode(denoise(z, sigma)).clamp_(0, 1)
            )
        return self._denoised_passes[denoiser_id, key]

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (device, model dtype) of images ``[B, 3, H, W]``, padded to the model's multiple here."""
        padded = pad_to_multiple(images, self.spec.downsample)
        if padded is not images and self.device.type == "cuda":  # pinned: the copy to the device is asynchronous
            padded = padded.pin_memory()
        return self.encoder_pass(padded)
