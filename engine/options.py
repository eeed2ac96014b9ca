"""Encoder options: the coding mode and its quality knobs, validated once."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from latentcodec.engine.coding import (
    MAX_PALETTE,
    MAX_STEP,
    MIN_STEP,
    Coder,
    CodingMode,
    PaletteCoder,
    Scalar8Coder,
    UniformCoder,
    palette_size_for_quality,
    uniform_step_for_quality,
)
from latentcodec.engine.denoise.registry import DEFAULT_DENOISERS, denoiser_spec
from latentcodec.engine.entropy import DEFAULT_LEVEL
from latentcodec.engine.errors import UnknownModelError

DEFAULT_MODE = CodingMode.UNIFORM
AUTO = "auto"
MAX_DENOISER_STRENGTH = 4.0


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode.

    ``quality`` (0..100) sets the mode's knob unless it is given directly: the uniform ``step`` (latent
    units, larger is coarser) or the ``palette_size``. ``scalar8`` has no knob. ``scale`` (0, 1] encodes a
    downscaled image and restores the size on decode. ``alpha`` is ``"keep"`` (stored losslessly) or
    ``"drop"``. ``level`` is the zstd level. ``target_bpp`` (uniform mode) makes the encoder choose the step
    and scale itself: the best PSNR it finds within 10% of that many bits per pixel; ``target_psnr`` (dB) the
    smallest stream whose decoded PSNR reaches it (each try decodes: slower). ``effort`` (uniform mode)
    is the number of latent-refinement steps through the decoder (0: off; each costs a decoder forward and
    backward pass, seconds per Kodak image on a CPU). ``denoiser`` names the latent denoiser the stream asks
    the decoder to run first: ``"auto"`` (the model's default, for the uniform and palette modes: the encoder
    decodes each stream without it and at three strengths and keeps the best PSNR, four more decoder passes;
    none, with a warning, where its weights are not installed), an id such as
    ``"latent-denoiser"`` or ``"sd-unet"`` (always named, no check), or ``None``. ``denoiser_strength`` (with a
    named id) is the fraction of the measured quantization noise level the stream records, i.e. how strongly
    the decoder denoises; by default the denoiser's own (0.5 for ``latent-denoiser``, 1 for ``sd-unet``).
    """

    mode: CodingMode = DEFAULT_MODE
    quality: float | None = None
    step: float | None = None
    palette_size: int | None = None
    dither: bool = True
    scale: float = 1.0
    alpha: str = "keep"
    level: int = DEFAULT_LEVEL
    target_bpp: float | None = None
    target_psnr: float | None = None
    effort: int = 0
    denoiser: str | None = AUTO
    denoiser_strength: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", CodingMode.parse(self.mode))
        if self.denoiser in ("none", ""):
            object.__setattr__(self, "denoiser", None)
        if self.denoiser not in (None, AUTO):
            try:
                denoiser_spec(self.denoiser)
            except UnknownModelError as exc:
                raise ValueError(str(exc)) from None
        if self.denoiser_strength is not None:
            if self.denoiser in (None, AUTO):
                raise ValueError("denoiser_strength needs a named denoiser ('auto' chooses the strength itself)")
            if not 0 < self.denoiser_strength <= MAX_DENOISER_STRENGTH:
                raise ValueError(
                    f"denoiser_strength must be in (0, {MAX_DENOISER_STRENGTH}], got {self.denoiser_strength}"
                )
        if self.quality is not None and not 0 <= self.quality <= 100:
            raise ValueError(f"quality must be in [0, 100], got {self.quality}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        if self.alpha not in ("keep", "drop"):
            raise ValueError(f"alpha must be 'keep' or 'drop', got {self.alpha!r}")
        if not 1 <= self.level <= 22:
            raise ValueError(f"zstd level must be in [1, 22], got {self.level}")
        if self.step is not None and not MIN_STEP <= self.step <= MAX_STEP:
            raise ValueError(f"step must be in [{MIN_STEP}, {MAX_STEP}], got {self.step}")
        if self.palette_size is not None and not 2 <= self.palette_size <= MAX_PALETTE:
            raise ValueError(f"palette size must be in [2, {MAX_PALETTE}], got {self.palette_size}")
        if not 0 <= self.effort <= 1000:
            raise ValueError(f"effort must be in [0, 1000], got {self.effort}")
        if self.effort and self.mode is not CodingMode.UNIFORM:
            raise ValueError("effort needs mode 'uniform' (refinement works on its step grid)")
        if self.target_bpp is not None:
            if not 0 < self.target_bpp <= 24:
                raise ValueError(f"target_bpp must be in (0, 24], got {self.target_bpp}")
            if self.mode is not CodingMode.UNIFORM:
                raise ValueError("target_bpp needs mode 'uniform' (its step is the knob rate control turns)")
            if self.effort:
                raise ValueError("effort cannot be combined with target_bpp yet (refinement depends on the step)")
        if self.target_psnr is not None:
            if not 10 <= self.target_psnr <= 60:
                raise ValueError(f"target_psnr must be in [10, 60] dB, got {self.target_psnr}")
            if self.mode is not CodingMode.UNIFORM or self.effort or self.target_bpp is not None:
                raise ValueError("target_psnr needs mode 'uniform', without effort or target_bpp")

    def denoiser_for(self, model_id: str) -> str | None:
        """The denoiser a stream of ``model_id`` should name, or None."""
        if self.denoiser != AUTO:
            if self.denoiser is not None and model_id not in denoiser_spec(self.denoiser).model_ids:
                raise ValueError(f"denoiser {self.denoiser!r} does not work in the latent space of {model_id!r}")
            return self.denoiser
        return DEFAULT_DENOISERS.get(model_id) if self.mode is not CodingMode.SCALAR8 else None

    def noise_fraction(self, denoiser_id: str) -> float:
        """The fraction of the measured noise level a stream naming ``denoiser_id`` records (``"auto"``: all of
        it; the strengths are applied to it afterwards)."""
        if self.checks_denoiser:
            return 1.0
        return self.denoiser_strength or denoiser_spec(denoiser_id).strength

    @property
    def checks_denoiser(self) -> bool:
        """Whether the encoder keeps the denoiser only where it helps (``"auto"``) rather than always."""
        return self.denoiser == AUTO

    @property
    def step_value(self) -> float:
        if self.step is not None:
            return self.step
        return uniform_step_for_quality(50 if self.quality is None else self.quality)

    @property
    def palette_size_value(self) -> int:
        if self.palette_size is not None:
            return self.palette_size
        return 256 if self.quality is None else palette_size_for_quality(self.quality)

    def coder(self, backend: str | None = None, device: torch.device | str = "cpu") -> Coder:
        if self.mode is CodingMode.SCALAR8:
            return Scalar8Coder(backend, device)
        if self.mode is CodingMode.UNIFORM:
            return UniformCoder(self.step_value, backend, device)
        return PaletteCoder(self.palette_size_value, self.dither, backend, device)
