"""A minimal class-conditioned 2D U-Net in plain torch: the latent denoiser's network.

It computes what diffusers' ``UNet2DModel`` computes for the configs the project trains (``DownBlock2D`` /
``UpBlock2D`` levels, a mid block with one self-attention, sinusoidal timestep and class embeddings), op for op,
with the same module names, so the same state dicts load and the outputs are equal (``tests/test_denoise.py``
compares them while diffusers is installed). Modules are created in diffusers' order, so a seeded untrained
network starts from the same weights. The default codec path never imports diffusers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-5
_HEAD_DIM = 8  # UNet2DModel's attention_head_dim default: the mid block's attention has channels / 8 heads


@dataclass(frozen=True)
class UNetConfig:
    """The ``UNet2DModel`` config fields this module supports (as weight files store them)."""

    in_channels: int
    out_channels: int
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    norm_num_groups: int
    num_class_embeds: int
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]

    @classmethod
    def from_dict(cls, config: dict) -> UNetConfig:
        levels = len(config["block_out_channels"])
        expected = {"down_block_types": ("DownBlock2D",) * levels, "up_block_types": ("UpBlock2D",) * levels}
        for key, value in expected.items():
            if tuple(config[key]) != value:
                raise ValueError(f"unsupported U-Net {key} {config[key]!r} (this module builds {value!r})")
        fields = {**config, **{k: tuple(config[k]) for k in ("block_out_channels", *expected)}}
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cosines first (diffusers' ``get_timestep_embedding`` with ``flip_sin_to_cos``)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32, device=timesteps.device)
    frequencies = torch.exp(exponent / half)
    angles = timesteps[:, None].float() * frequencies[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepProjection(nn.Module):
    """Timesteps ``[B]`` -> their sinusoidal embedding ``[B, dim]`` (no parameters)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(timesteps, self.dim)


class TimestepEmbedding(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(n_in, n_out)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(n_out, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added between, a 1x1 shortcut when the width changes."""

    def __init__(self, n_in: int, n_out: int, temb_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, n_in, eps=_EPS)
        self.conv1 = nn.Conv2d(n_in, n_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, n_out)
        self.norm2 = nn.GroupNorm(groups, n_out, eps=_EPS)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(n_in, n_out, 1) if n_in != n_out else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SelfAttention(nn.Module):
    """Spatial self-attention with a GroupNorm in front and a residual connection."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.heads = channels // _HEAD_DIM
        self.group_norm = nn.GroupNorm(groups, channels, eps=_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.view(b, c, h * w).transpose(1, 2)
        tokens = self.group_norm(tokens.transpose(1, 2)).transpose(1, 2)
        q, k, v = (
            proj(tokens).view(b, -1, self.heads, c // self.heads).transpose(1, 2)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = self.to_out[0](out.transpose(1, 2).reshape(b, -1, c))
        return out.transpose(-1, -2).reshape(b, c, h, w) + x


class DownBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, layers: int, temb: int, groups: int, downsample: bool) -> None:
        super().__init__()
        widths = [n_in] + [n_out] * layers
        self.resnets = nn.ModuleList(ResnetBlock(widths[i], n_out, temb, groups) for i in range(layers))
        self.downsamplers = nn.ModuleList([Downsample(n_out)]) if downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for resnet in self.resnets:
            x = resnet(x, temb)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    def __init__(self, n_prev: int, n_skip_last: int, n_out: int, layers: int, temb: int, groups: int, up: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock((n_prev if i == 0 else n_out) + (n_skip_last if i == layers else n_out), n_out, temb, groups)
            for i in range(layers + 1)
        )
        self.upsamplers = nn.ModuleList([Upsample(n_out)]) if up else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidBlock(nn.Module):
    def __init__(self, channels: int, temb: int, groups: int) -> None:
        super().__init__()
        first = ResnetBlock(channels, channels, temb, groups)
        self.attentions = nn.ModuleList([SelfAttention(channels, groups)])
        self.resnets = nn.ModuleList([first, ResnetBlock(channels, channels, temb, groups)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x, temb)), temb)


class UNet(nn.Module):
    """``(sample [B, C, H, W], timesteps [B], class_labels [B]) -> [B, C_out, H, W]``; H and W multiples of
    ``2 ** (levels - 1)``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths, groups, layers = config.block_out_channels, config.norm_num_groups, config.layers_per_block
        temb = widths[0] * 4
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        self.time_proj = TimestepProjection(widths[0])
        self.time_embedding = TimestepEmbedding(widths[0], temb)
        self.class_embedding = nn.Embedding(config.num_class_embeds, temb)
        last = len(widths) - 1
        self.down_blocks = nn.ModuleList(
            DownBlock(widths[max(i - 1, 0)], widths[i], layers, temb, groups, downsample=i < last)
            for i in range(len(widths))
        )
        self.mid_block = MidBlock(widths[-1], temb, groups)
        up = widths[::-1]
        self.up_blocks = nn.ModuleList(
            UpBlock(up[max(i - 1, 0)], up[min(i + 1, last)], up[i], layers, temb, groups, up=i < last)
            for i in range(len(widths))
        )
        self.conv_norm_out = nn.GroupNorm(groups, widths[0], eps=_EPS)
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        timesteps = timesteps * torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
        emb = self.time_embedding(self.time_proj(timesteps).to(self.conv_in.weight.dtype))
        emb = emb + self.class_embedding(class_labels).to(self.conv_in.weight.dtype)
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb)
            skips.extend(block_skips)
        x = self.mid_block(x, emb)
        for block in self.up_blocks:
            x = block(x, skips, emb)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
