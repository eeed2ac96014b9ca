"""Networks assembled from stored weights, skipping the random initialisation those weights overwrite."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

Module = TypeVar("Module", bound=nn.Module)


def with_state(build: Callable[[], Module], state: Mapping[str, torch.Tensor]) -> Module:
    """``build()`` holding ``state`` in float32 (every parameter and buffer, strictly): built on the meta device,
    so no time goes to initialising weights (about a third of a cold start's model loading on the CPU)."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return module
