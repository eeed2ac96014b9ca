"""Stable Diffusion's U-Net as a quantization-noise remover (SDEdit-style), through diffusers.

Quantized latents ``y = x + e`` with RMS error ``sigma`` look like a diffusion sample at the timestep where
``sqrt((1 - a_t) / a_t) = sigma`` (``a_t`` the cumulative alpha), once scaled by ``sqrt(a_t)``. From there a
few DDIM steps with the empty-prompt text embedding run the U-Net back to a clean latent.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from latentcodec.engine.errors import ModelError
from latentcodec.engine.models.weights import require_local

DEFAULT_STEPS = 4
START_GRID = 25  # start timesteps are rounded to multiples of this, so streams of similar noise share a batch


class SDUNetDenoiser(nn.Module):
    """A ``UNet2DConditionModel``, its DDIM scheduler and the empty-prompt embedding ``[1, tokens, dim]``."""

    def __init__(self, unet: nn.Module, scheduler, prompt_embeds: torch.Tensor, steps: int = DEFAULT_STEPS) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.unet, self.scheduler, self.steps = unet, scheduler, steps
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        self.train_timesteps = int(scheduler.config.num_train_timesteps)

    def start_timestep(self, sigma: float) -> int:
        """The timestep whose noise matches ``sigma``, on the ``START_GRID`` (at least one grid step)."""
        alphas = self.scheduler.alphas_cumprod
        matched = int((alphas - 1 / (1 + sigma**2)).abs().argmin())
        top = (self.train_timesteps - 1) // START_GRID * START_GRID
        return min(top, max(START_GRID, round(matched / START_GRID) * START_GRID))

    def schedule_key(self, sigma: float, mode: int) -> int:
        """Streams whose keys agree run through the same pass (and CUDA graph): those of one start timestep."""
        return self.start_timestep(sigma)

    def timesteps(self, start: int) -> list[int]:
        """At most ``steps`` DDIM timesteps from ``start`` down, evenly spaced."""
        spacing = max(1, start // self.steps)
        self.scheduler.set_timesteps(max(1, self.train_timesteps // spacing))
        return [int(t) for t in self.scheduler.timesteps if int(t) <= start][: self.steps]

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, start: int) -> torch.Tensor:
        """Denoised latents; every row of the batch starts at timestep ``start`` (``sigma`` is not read)."""
        del sigma  # the batch shares ``start``, which is where sigma went
        timesteps = self.timesteps(start)
        sample = latents * self.scheduler.alphas_cumprod[timesteps[0]].to(latents.device, latents.dtype).sqrt()
        context = self.prompt_embeds.to(latents.dtype).expand(latents.shape[0], -1, -1)
        for t in timesteps:
            prediction = self.unet(sample, t, encoder_hidden_states=context).sample
            sample = self.scheduler.step(prediction, t, sample, eta=0.0).prev_sample
        return sample


@functools.cache
def empty_prompt_embedding(source: str, download: bool = False) -> torch.Tensor:
    """The text encoder's output for the empty prompt, ``[1, tokens, dim]``: computed once per source."""
    from transformers import CLIPTextModel, CLIPTokenizer

    local = not download
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local)
    encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", local_files_only=local).eval()
    tokens = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        return encoder(tokens.input_ids)[0].float()


def load_sd_unet(source: str | Path, steps: int = DEFAULT_STEPS, download: bool = False) -> SDUNetDenoiser:
    """The denoiser from a Stable Diffusion pipeline folder or hub id (``unet``, ``scheduler``, ``text_encoder``
    and ``tokenizer`` subfolders), loaded as a user with the weights would with diffusers; without ``download``
    only files already on this machine are read (no network)."""
    source, local = str(source), not download
    if local:
        require_local(
            source, "the sd-unet denoiser", "name its source (Codec(denoiser_source=...), $LATENTCODEC_SD_UNET)"
        )
    from diffusers import DDIMScheduler, UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local)
        scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=local)
        prompt_embeds = empty_prompt_embedding(source, download)
    except ImportError as exc:
        raise ModelError(f"the sd-unet denoiser needs transformers (pip install 'latentcodec[sd]'): {exc}") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the sd-unet denoiser from {source}: {exc}") from exc
    return SDUNetDenoiser(unet, scheduler, prompt_embeds, steps)
