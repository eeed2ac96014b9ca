"""The tiny autoencoder's whole-image layers at latent resolution, in row stripes: exact, in bounded memory.

Tiling leaves the layers whose GroupNorm must see the whole image (TAEF2's midblocks) to run whole. At 64
Mpixel their 256-channel pooled branch alone would take 1 GB, so this runs them stripe by stripe: the pooled
branch is pointwise apart from the GroupNorm statistics, which a first pass gathers over all stripes; a
block's three 3x3 convolutions see a halo of three rows, a lone 3x3 convolution one. A layer costs two feature
maps and one stripe.
"""

from __future__ import annotations

import torch
from torch import nn

from latentcodec.engine.models.tiny_autoencoder import Block, Clamp

STRIPE_CELLS = 1 << 15  # latent cells per stripe
HALO = 3  # rows a block's three 3x3 convolutions reach


@torch.no_grad()
def run_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a layer of the tiny autoencoder, in stripes where it pays; may overwrite ``x``."""
    if isinstance(layer, Block):
        return _block(layer, x)
    if isinstance(layer, nn.ReLU):
        return x.relu_()
    if isinstance(layer, Clamp):
        return x.div_(3).tanh_().mul_(3)
    if isinstance(layer, nn.Conv2d) and (layer.kernel_size, layer.stride, layer.padding) == ((3, 3), (1, 1), (1, 1)):
        return _conv(layer, x)
    return layer(x)


def _stripes(height: int, width: int) -> list[tuple[int, int]]:
    rows = max(16, STRIPE_CELLS // max(1, width))
    return [(start, min(height, start + rows)) for start in range(0, height, rows)]


def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution stripe by stripe (each sees one more row on either side): the same numbers as whole,
    without the whole convolution's workspace. The stripes are of equal height, so none is small enough for
    PyTorch to pick another convolution algorithm than the whole image's (it does below 20480 input values)."""
    height, width = x.shape[-2:]
    out = x.new_empty((x.shape[0], conv.out_channels, height, width))
    rows = -(-height // len(_stripes(height, width)))
    for start, end in ((start, min(height, start + rows)) for start in range(0, height, rows)):
        low = max(0, start - 1)
        out[:, :, start:end] = conv(x[:, :, low : min(height, end + 1)])[:, :, start - low : end - low]
    return out


def _block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """The block over ``x`` in stripes, written back into ``x`` when the channels allow (the input rows a later
    stripe's halo still needs are kept aside first)."""
    height, width = x.shape[-2:]
    stripes = _stripes(height, width)
    if block.pool is not None:
        _add_pooled(block.pool, x, stripes)
    channels = block.conv[-1].out_channels
    out = x if channels == x.shape[1] else x.new_empty((x.shape[0], channels, height, width))
    above = x[:, :, :0].clone()  # input rows just above the current stripe (already overwritten in ``x``)
    for start, end in stripes:
        below = x[:, :, end : min(height, end + HALO)]
        window = torch.cat([above, x[:, :, start:end], below], dim=2)
        convolved = block.conv(window)[:, :, above.shape[2] : above.shape[2] + end - start]
        result = block.fuse(convolved + block.skip(x[:, :, start:end]))
        above = x[:, :, max(start, end - HALO) : end].clone()
        out[:, :, start:end] = result
    return out


def _add_pooled(pool: nn.Sequential, x: torch.Tensor, stripes: list[tuple[int, int]]) -> None:
    """``x += pool(x)`` for the pooled branch (1x1 conv, GroupNorm, ReLU, 1x1 conv), GroupNorm over the whole."""
    widen, norm, _, narrow = pool
    batch, groups = x.shape[0], norm.num_groups
    sums = torch.zeros(batch, groups, dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(sums)
    for start, end in stripes:
        wide = widen(x[:, :, start:end]).double().reshape(batch, groups, -1)
        sums += wide.sum(-1)
        squares += wide.square().sum(-1)
    count = widen.out_channels // groups * x.shape[-2] * x.shape[-1]
    mean = sums / count
    scale = (squares / count - mean.square()).clamp_(min=0).add_(norm.eps).rsqrt_()
    mean, scale = (
        t.repeat_interleave(widen.out_channels // groups, 1).to(x.dtype)[..., None, None] for t in (mean, scale)
    )
    for start, end in stripes:
        wide = (widen(x[:, :, start:end]) - mean) * scale
        wide = wide * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
        x[:, :, start:end] += narrow(wide.relu_())
