"""Steps per latent channel for the uniform coder: a table of weights per latent space, named in the stream.

The channels of a latent space do not matter equally to the picture: in FLUX.2's space (TAEF2), noise in
channels 3 and 8 changes the decoded image 7-8x as much as the average channel and in some 4x less. One step for
all spends bits alike on all of them; a channel's step here is the stream's step times its weight, coarser where
the picture cares less (weights measured and fitted by ``training/step_weights.py`` on the training photos:
README, "Steps per channel"). A stream's parameters name its table by id (0: one step for every channel, the
streams made before tables existed), so the numbers below are part of the bitstream: never change one; add a
table under a new id instead.
"""

from __future__ import annotations

from functools import cache

import torch

from latentcodec.engine.errors import CorruptStreamError

TABLES: dict[int, tuple[float, ...]] = {
    # flux2, v1: exponent 0.3 (training/step_weights.py)
    1: (
        *(1.274, 0.850, 0.908, 0.458, 1.178, 0.877, 1.099, 1.072, 0.482, 1.266, 1.287, 0.993, 1.170, 1.301, 1.005),
        *(0.693, 1.188, 1.268, 1.211, 0.711, 1.199, 1.133, 1.028, 1.247, 0.865, 1.074, 0.871, 1.196, 1.172, 0.870),
        *(1.147, 0.865),
    ),
}
SPACES = ("flux2",)  # the latent spaces the tables were measured in (the encoder uses them for no other)


def table_for(channels: int) -> int:
    """The newest table for latents of ``channels`` channels (0: none)."""
    return max((t for t, weights in TABLES.items() if len(weights) == channels), default=0)


def channel_steps(steps: torch.Tensor, tables: list[int], channels: int) -> torch.Tensor:
    """Per-image ``steps`` ``[B]`` (float32) and table ids -> each channel's step ``[B, channels]`` (float32: the
    encoder's and every decoder's product is the same number)."""
    return steps.float()[:, None].cpu() * torch.stack([_weights(table, channels) for table in tables])


@cache
def _weights(table: int, channels: int) -> torch.Tensor:
    """Table ``table``'s weights ``[channels]`` (table 0: all ones), made once."""
    if not table:
        return torch.ones(channels)
    if table not in TABLES or len(TABLES[table]) != channels:
        raise CorruptStreamError(f"step table {table} does not fit {channels} latent channels")
    return torch.tensor(TABLES[table])
