"""The project's own latent denoiser: a small U-Net (``unet.py``, diffusers' ``UNet2DModel`` in plain torch) that
cleans quantized TAEF2 latents."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from latentcodec.engine.denoise.unet import UNet, UNetConfig
from latentcodec.engine.errors import ModelError, WeightsMismatchError
from latentcodec.engine.models.assembly import with_state
from latentcodec.engine.models.weights import file_sha256

# The U-Net's timestep is 4 ln(noise level): over the noise levels the codec makes (about 0.05..2) its sinusoidal
# embedding turns slowly, so nearby levels get nearby corrections (why not 1000 x the level: README, "Latent
# denoiser").
CONDITIONING = "4 ln sigma"  # written into weight files; files trained for another conditioning are refused
_MIN_SIGMA = 1e-3
METADATA_KEY = "latentcodec"  # the weight file's one metadata entry: JSON of the config, conditioning, provenance
_LEVELS = 3


def unet_config(latent_channels: int = 32) -> dict:
    """The U-Net config (``UNet2DModel``'s fields): three levels of 32/48/64 channels, one self-attention in the
    mid block (0.92M parameters at 32)."""
    return {
        "in_channels": latent_channels,
        "out_channels": latent_channels,
        "block_out_channels": (32, 48, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D",) * _LEVELS,
        "up_block_types": ("UpBlock2D",) * _LEVELS,
        "norm_num_groups": 8,
        "num_class_embeds": 3,  # the coding mode (scalar8, uniform, palette): their noises differ in kind
    }


def stored_config(latent_channels: int = 32) -> dict:
    """:func:`unet_config` as weight files store it (JSON: lists for tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in unet_config(latent_channels).items()}


class LatentDenoiser(nn.Module):
    """Quantized latents ``y``, their noise level ``sigma`` ``[B]`` and coding mode -> clean latents,
    ``y + sigma * unet(y, 4 ln sigma, mode)``.

    The residual is scaled by the noise level, so the network starts (zero output layer) as the identity and
    learns corrections in units of the noise it removes. The mode tells uniform noise (bounded, on a grid)
    from dithered palette noise of the same level.
    """

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.unet = unet
        self.multiple = 2 ** (len(unet.config.block_out_channels) - 1)

    @classmethod
    def untrained(cls, latent_channels: int = 32) -> LatentDenoiser:
        model = cls(UNet(UNetConfig.from_dict(unet_config(latent_channels))))
        nn.init.zeros_(model.unet.conv_out.weight)
        nn.init.zeros_(model.unet.conv_out.bias)
        return model

    def schedule_key(self, noise_level: float, mode: int) -> int:
        """Streams of one coding mode share a pass."""
        return int(mode)

    def forward(self, latents: torch.Tensor, sigma: torch.Tensor, mode: int | torch.Tensor) -> torch.Tensor:
        h, w = latents.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        x = F.pad(latents, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else latents
        sigma = sigma.to(latents.dtype).reshape(-1)
        if isinstance(mode, torch.Tensor):
            modes = mode.to(latents.device).expand(latents.shape[0])
        else:  # a fill, not a host-to-device copy: CUDA-graph safe
            modes = torch.full((latents.shape[0],), int(mode), dtype=torch.long, device=latents.device)
        correction = self.unet(x, timestep(sigma), modes)[..., :h, :w]
        return latents + sigma[:, None, None, None] * correction


def timestep(sigma: torch.Tensor) -> torch.Tensor:
    """The U-Net timestep for noise levels ``sigma`` (see :data:`CONDITIONING`)."""
    return 4 * sigma.clamp_min(_MIN_SIGMA).log()


def save(model: LatentDenoiser, path: Path, metadata: dict[str, str]) -> None:
    """Write fp16 weights and the U-Net config as a safetensors file."""
    from safetensors.torch import save_file

    state = {k: v.detach().half().contiguous() for k, v in model.unet.state_dict().items()}
    config = stored_config(model.unet.config.in_channels)
    # one metadata entry: safetensors writes several in a random order, so equal weights would hash differently
    entry = json.dumps({"config": config, "conditioning": CONDITIONING, **metadata}, sort_keys=True)
    save_file(state, str(path), metadata={METADATA_KEY: entry})


def load(path: Path, sha256: str | None = None) -> tuple[LatentDenoiser, dict[str, torch.Tensor]]:
    """A denoiser from a file written by :func:`save` (verified against ``sha256`` when given), and its state."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"denoiser weights {path} are missing")
    if sha256 is not None and (actual := file_sha256(path)) != sha256:
        raise WeightsMismatchError(f"{path} has sha256 {actual}, expected {sha256}")
    with safe_open(str(path), "pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
    if metadata.get("conditioning") != CONDITIONING:
        raise ModelError(
            f"denoiser weights {path} were written by an older version (timestep"
            f" {metadata.get('conditioning', '1000 sigma')!r}, now {CONDITIONING!r}): train them again"
            " (latentcodec train-denoiser)"
        )
    config = metadata["config"]
    state = load_file(str(path))
    try:
        unet_config = UNetConfig.from_dict(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"denoiser weights {path} have an unsupported config: {exc}") from exc
    model = LatentDenoiser(with_state(lambda: UNet(unet_config), state))
    return model, state
