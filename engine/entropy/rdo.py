"""Rate-distortion optimized rounding of uniform symbols for the ``passes`` entropy method.

Plain uniform quantization rounds each latent to the nearest multiple of the step. Here each symbol is the floor
or the ceiling of ``latent / step``, whichever costs less in ``(latent / step - symbol)^2 + lam * bits``, where
``bits`` is its code length under the ``passes`` model given the symbols chosen before it: the model's own coding
order, one batched tensor computation per step. Decoders need nothing new (the streams are ordinary ``passes``
streams, whose side bytes come from the symbols chosen). The decisions see side information from plain rounding.
"""

from __future__ import annotations

import torch

from latentcodec.engine.coders.base import CodedBatch
from latentcodec.engine.coders.planes import rms_error
from latentcodec.engine.entropy import latent_stage
from latentcodec.engine.entropy.context_model import RADIUS, SYMBOL_MAX
from latentcodec.engine.entropy.passes_coder import coding_steps
from latentcodec.engine.entropy.passes_model import LOG_TABLE, PASSES, PassesModel, centre_columns, features, side_info
from latentcodec.engine.format import EntropyMethod


@torch.no_grad()
def rounded(scaled: torch.Tensor, model: PassesModel, lam: float) -> torch.Tensor:
    """int8 symbols ``[B, C, H, W]`` of latents over the step ``scaled`` (float, within +-127), each the floor or
    ceiling of its value that minimizes squared error plus ``lam`` times its code length."""
    grid = scaled.round().clamp(-SYMBOL_MAX, SYMBOL_MAX).to(torch.int8)
    side, batch = side_info(grid, model.side), len(scaled)
    lengths = model.code_lengths.to(scaled.device, torch.float32)
    logs = LOG_TABLE.to(scaled.device)
    grid.zero_()
    z, current = None, None
    for step, p, g in coding_steps(model, tuple(scaled.shape[1:])):
        if p != current:  # a pass's features once; each group then fills in its own centre columns
            z, current = features(grid, p, side), p
        centre, keys = model.contexts(z, step)
        (pi, pj), channels = PASSES[p], model.group_channels(g)
        target = grid[:, channels, pi::2, pj::2]
        x = scaled[:, channels, pi::2, pj::2].float().flatten(2).transpose(1, 2).reshape(centre.shape)
        low = x.floor().clamp(-SYMBOL_MAX, SYMBOL_MAX - 1)
        cost_low, cost_high = (
            (x - q).square() + lam * lengths[keys, q.long() - centre + RADIUS] for q in (low, low + 1)
        )
        chosen = (low + (cost_high < cost_low).float()).to(torch.int8)
        target.copy_(chosen.reshape(batch, -1, chosen.shape[1]).transpose(1, 2).reshape(target.shape))
        z[:, centre_columns(grid.shape[1], channels).to(z.device)] = torch.cat([chosen, logs[chosen.abs().long()]], 1)
    return grid


def model_for(method: EntropyMethod, latent_space: str) -> PassesModel | None:
    """The model whose code lengths the rounding weighs: ``method``'s, where it is a ``passes`` model."""
    model = latent_stage.model_for(method, latent_space)
    return model if isinstance(model, PassesModel) else None


def recoded(
    coded: CodedBatch, latents: torch.Tensor, steps: torch.Tensor, model: PassesModel, lam: float
) -> CodedBatch:
    """A uniform coder's batch (steps per channel ``[B, C]``) with the int8 rows' symbols :func:`rounded` (their
    noise levels measured again); rows of wider symbols, and latents of another channel count than the model's, as
    they were."""
    if latents.shape[1] != model.channels:
        return coded
    batch, size, step = len(latents), latents[0].numel(), steps[:, :, None, None]
    symbols = rounded(latents.float().div(step).clamp_(-SYMBOL_MAX, SYMBOL_MAX), model, lam)
    narrow = coded.params[:, -1] == 1  # the symbol width, the parameters' last byte
    planes = coded.planes.clone()
    planes[:, :size] = torch.where(narrow[:, None], symbols.view(torch.uint8).reshape(batch, size), planes[:, :size])
    noise = torch.where(narrow, rms_error(latents, symbols.float() * step), coded.noise)
    return CodedBatch(coded.params, planes, noise)
