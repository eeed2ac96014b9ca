"""Options of latent streams: the coding knobs images have (validated by :class:`EncodeOptions` itself) and a
target on the latent error. The image-only options (scale, alpha, denoiser, image rate control) do not apply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from numbers import Real
from typing import Any

from latentcodec.engine.entropy.zstd import DEFAULT_LEVEL
from latentcodec.engine.format import CodingMode, EntropyMethod
from latentcodec.engine.options import EncodeOptions

MIN_TARGET_RMSE, MAX_TARGET_RMSE = 3e-4, 16.0  # from about the finest step's error (0.001 / sqrt(12)) up


@dataclass(frozen=True)
class LatentOptions:
    """How to code latents: ``mode``, ``quality`` or the mode's knob (``step``, ``palette_size``), ``dither``,
    ``entropy`` and ``level`` as for images (:class:`EncodeOptions`: same defaults, same quality map).

    ``target_rmse`` (uniform mode; instead of ``quality`` or ``step``) chooses each stream's step: the coarsest
    whose RMS latent error is at most the target (the finest step the latents' magnitudes allow when none
    reaches it). Uniform streams are within ``step / 2`` of the latents everywhere.
    """

    mode: CodingMode = CodingMode.UNIFORM
    quality: float | None = None
    step: float | None = None
    palette_size: int | None = None
    dither: bool = True
    entropy: EntropyMethod = EntropyMethod.PASSES
    level: int = DEFAULT_LEVEL
    target_rmse: float | None = None
    coding: EncodeOptions = field(init=False, repr=False, compare=False)  # what the coders read

    def __post_init__(self) -> None:
        knobs = {name: getattr(self, name) for name in _CODING}
        # ValueError for bad values; one step for every channel: target_rmse is an error in latent units
        coding = EncodeOptions(**knobs, denoiser=None, channel_steps=False)
        object.__setattr__(self, "coding", coding)
        object.__setattr__(self, "mode", self.coding.mode)
        object.__setattr__(self, "entropy", self.coding.entropy)
        target = self.target_rmse
        if target is None:
            return
        if not isinstance(target, Real) or isinstance(target, bool):
            raise ValueError(f"target_rmse must be a number, got {type(target).__name__} {target!r}")
        if not MIN_TARGET_RMSE <= target <= MAX_TARGET_RMSE:
            raise ValueError(f"target_rmse must be in [{MIN_TARGET_RMSE}, {MAX_TARGET_RMSE}], got {target}")
        if self.mode is not CodingMode.UNIFORM:
            raise ValueError("target_rmse needs mode 'uniform' (its step is the knob rate control turns)")
        if self.quality is not None or self.step is not None:
            raise ValueError("give one of quality, step, target_rmse: each sets the step")
        object.__setattr__(self, "target_rmse", float(target))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.init)

    @classmethod
    def resolve(cls, options: LatentOptions | None = None, overrides: Mapping[str, Any] | None = None) -> LatentOptions:
        """``options`` (default: the defaults) with ``overrides`` applied; ValueError for options latents lack."""
        if options is not None and not isinstance(options, LatentOptions):
            raise ValueError(f"latent streams take LatentOptions, not {type(options).__name__}")
        unknown = sorted(set(overrides or ()) - set(cls.names()))
        if unknown:
            what = "image options" if set(unknown) <= set(EncodeOptions.names()) else "unknown options"
            raise ValueError(f"{what} {', '.join(unknown)}; latent streams take {', '.join(cls.names())}")
        base = options or cls()
        return base if not overrides else cls(**{**{n: getattr(base, n) for n in cls.names()}, **overrides})

    def at_step(self, step: float) -> EncodeOptions:
        """The coders' options at ``step`` (the one rate control chose)."""
        return replace(self.coding, step=step, quality=None)


_CODING = ("mode", "quality", "step", "palette_size", "dither", "entropy", "level")
