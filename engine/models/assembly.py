"""Networks assembled from stored weights."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

Module = TypeVar("Module", bound=nn.Module)


def with_state(build: Callable[[], Module], state: Mapping[str, torch.Tensor]) -> Module:
    """``build()`` holding ``state`` in float32, every parameter and buffer (strictly). Built on the CPU as usual:
    building on the meta device would skip the random initialisation, but its first ``normal_`` imports
    torch's compiler stack (about 2 s of a cold start)."""
    module = build()
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return module
