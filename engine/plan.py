"""An encode plan: the options resolved once against the codec's model (coder mode, denoiser, strength)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from latentcodec.engine.coders import Coder, step_weights
from latentcodec.engine.coders.base import CodedBatch
from latentcodec.engine.denoise.registry import DEFAULT_DENOISERS, denoiser_spec
from latentcodec.engine.entropy import rdo
from latentcodec.engine.entropy.passes_model import PassesModel
from latentcodec.engine.errors import WeightsNotFoundError
from latentcodec.engine.format import CodingMode
from latentcodec.engine.models.upscaler import Upscaler
from latentcodec.engine.options import AUTO, EncodeOptions

if TYPE_CHECKING:
    from latentcodec.engine.session import ModelSession


@dataclass(frozen=True)
class EncodePlan:
    """What every stream of one encode call names and how it is chosen.

    ``denoiser_id`` is the denoiser the streams name (None: none). With ``choose_strength`` (``denoiser="auto"``)
    the encoder decodes each stream without it and at each search strength and keeps the best; the stream records
    the measured noise level (``noise_fraction`` 1) until then. A named denoiser records ``noise_fraction`` of it.
    """

    options: EncodeOptions
    denoiser_id: str | None = None
    choose_strength: bool = False
    noise_fraction: float = 1.0
    rounding: PassesModel | None = None  # uniform: the model whose code lengths the rounding weighs (``options.rdo``)
    scales: tuple[float, ...] = Upscaler.scales  # the scales the rate and quality searches try (the model's)

    def quantize(self, coder: Coder, latents: torch.Tensor) -> CodedBatch:
        """The coder's batch of ``latents``, rounded for rate and distortion where the plan says so."""
        coded = coder.encode(latents, self.options)
        if self.rounding is None:
            return coded
        steps = coder.encode_steps(self.options, *latents.shape[:2]).to(latents.device)  # type: ignore[attr-defined]
        return rdo.recoded(coded, latents, steps, self.rounding, self.options.rdo)

    def with_options(self, **changes) -> EncodePlan:
        """The same plan over changed options (the rate search's scales and steps)."""
        return replace(self, options=replace(self.options, **changes))

    @property
    def refinement_denoiser(self) -> str | None:
        """The denoiser refinement decodes through: the named one; none under ``"auto"``, whose strength is
        chosen afterwards (README, "Latent refinement")."""
        return None if self.choose_strength else self.denoiser_id


def plan_encode(options: EncodeOptions, session: ModelSession) -> EncodePlan:
    """The plan of ``options`` for streams of ``session``'s model (searched over the scales its resizer offers). A
    named denoiser of another latent space fails here, before any work; under ``"auto"`` a denoiser whose weights
    are not installed is left out, with a warning."""
    latent_space = session.spec.latent_space
    if options.channel_steps and (options.effort or latent_space not in step_weights.SPACES):
        options = replace(options, channel_steps=False)  # refinement works on one step's grid
    plan = replace(_denoising(options, session.model_id, session.denoiser), scales=session.model.rate_scales)
    if options.rdo and options.mode is CodingMode.UNIFORM and latent_space is not None:
        plan = replace(plan, rounding=rdo.model_for(options.entropy, latent_space))
    return plan


def _denoising(options: EncodeOptions, model_id: str, load_denoiser: Callable[[str], object]) -> EncodePlan:
    if options.denoiser != AUTO:
        if options.denoiser is None:
            return EncodePlan(options)
        spec = denoiser_spec(options.denoiser)
        if model_id not in spec.model_ids:
            raise ValueError(f"denoiser {options.denoiser!r} does not work in the latent space of {model_id!r}")
        return EncodePlan(options, options.denoiser, noise_fraction=options.denoiser_strength or spec.strength)
    denoiser_id = DEFAULT_DENOISERS.get(model_id) if options.mode is not CodingMode.SCALAR8 else None
    if denoiser_id is None:
        return EncodePlan(options)
    try:
        load_denoiser(denoiser_id)
    except WeightsNotFoundError as exc:
        warnings.warn(f"{exc}; encoding without a denoiser", stacklevel=4)
        return EncodePlan(options)
    return EncodePlan(options, denoiser_id, choose_strength=True)
