"""An autoencoder with two decoders, chosen per image by its quantization noise level.

A decoder fine-tuned for coarse latents (``taef2-q``'s) wins where the original breaks and loses where the
latents are nearly clean. :class:`SwitchedAutoencoder` keeps both: the original decoder below a noise-level
``threshold``, the tuned one (told the level) from it on. Streams record the level, so the choice is a function
of the stream. Each decoder is also a plain :class:`LatentAutoencoder` (a *branch*) that the engine's static
passes run on batches of one branch; the model's own ``decode`` routes rows eagerly (refinement, direct use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from latentcodec.engine.models.autoencoder import LatentAutoencoder, ModelSpec

CLEAN, TUNED = 0, 1  # branch indices


class SwitchedAutoencoder(LatentAutoencoder):
    """``encoder`` with ``clean_decoder`` for noise levels below ``threshold`` and the conditioned ``decoder``
    from it on. The fingerprint covers both decoders and the threshold."""

    def __init__(
        self,
        spec: ModelSpec,
        encoder: nn.Module,
        decoder: nn.Module,
        clean_decoder: nn.Module,
        fingerprint: bytes,
        threshold: float,
        **split: int | None,
    ) -> None:
        super().__init__(spec, encoder, decoder, fingerprint, **split)
        self.threshold = threshold
        clean_spec = replace(spec, conditioned=False)
        self.branch_models = nn.ModuleList(
            [
                LatentAutoencoder(clean_spec, encoder, clean_decoder, fingerprint, **split),
                LatentAutoencoder(spec, encoder, decoder, fingerprint, **split),
            ]
        )

    def branches(self, sigma: torch.Tensor | None) -> list[tuple[int, torch.Tensor | None]]:
        """(branch, row indices; ``None``: every row) for noise levels ``sigma`` ``[B]`` (``None``: clean)."""
        if sigma is None:
            return [(CLEAN, None)]
        tuned = sigma.detach().reshape(-1).cpu() >= self.threshold
        if bool(tuned.all()) or not bool(tuned.any()):
            return [(TUNED if bool(tuned[0]) else CLEAN, None)]
        return [(CLEAN, (~tuned).nonzero()[:, 0]), (TUNED, tuned.nonzero()[:, 0])]

    def branch(self, index: int) -> LatentAutoencoder:
        return self.branch_models[index]

    def _decoder(self, x: torch.Tensor, sigma: torch.Tensor | None, start: int, stop: int | None, run=None):
        """Rows below the threshold through the clean decoder, the others through the tuned one."""

        def decode(branch: int, rows: torch.Tensor | None) -> torch.Tensor:
            return self.branch(branch)._decoder(take(x, rows), take(sigma, rows), start, stop, run)

        return by_branch(self.branches(sigma), decode)


def take(x: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    """Rows ``rows`` of ``x`` (all of it for ``None``)."""
    return x if x is None or rows is None else x[rows.to(x.device)]


def by_branch(
    groups: list[tuple[int, torch.Tensor | None]], run: Callable[[int, torch.Tensor | None], torch.Tensor]
) -> torch.Tensor:
    """``run(branch, rows)`` for each of :meth:`LatentAutoencoder.branches`' groups, its rows put back in order."""
    if groups[0][1] is None:
        return run(*groups[0])
    out = None
    for branch, rows in groups:
        part = run(branch, rows)
        out = part.new_empty((sum(len(r) for _, r in groups), *part.shape[1:])) if out is None else out
        out[rows.to(out.device)] = part
    return out
