"""The encode options schema: every option once, with its type, default, help and rules.

Front ends derive from it rather than restating it: the CLI builds its flags from the fields, the HTTP service
and the Pillow plugin parse or pick options by field, and :class:`~latentcodec.engine.queue.RequestQueue` groups
requests by the validated options object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any

from latentcodec.engine.entropy.zstd import DEFAULT_LEVEL
from latentcodec.engine.format import MAX_PALETTE, MAX_STEP, MIN_STEP, CodingMode, EntropyMethod

AUTO = "auto"
METRICS = ("psnr", "ms-ssim")  # what the encoder's searches maximise (engine/quality.py)
MAX_DENOISER_STRENGTH = 4.0
_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_bool(text: str) -> bool:
    """``1/true/yes`` or ``0/false/no`` (any case)."""
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError(f"not a boolean: {text!r}") from None


def _meta(parse: Callable[[str], Any], help: str, **cli: Any) -> dict[str, Any]:
    """What front ends need to offer a field: ``parse`` (text -> value), ``help`` and CLI extras."""
    return {"parse": parse, "help": help, **cli}


def uniform_step_for_quality(quality: float) -> float:
    """Quality 0..100 -> step: 0 -> 2.0, 50 -> 0.5, 100 -> 0.125 (geometric)."""
    return 0.5 * 2 ** ((50 - quality) / 25)


def palette_size_for_quality(quality: float) -> int:
    """Quality 0..100 -> palette size: 0 -> 2 entries, 100 -> 256 (geometric)."""
    return round(2 ** (1 + 7 * quality / 100))


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode (each field's ``help`` says what it does; the rules between them are checked here).

    ``quality`` (0..100) sets the mode's knob, or the knob is given directly (not both): the uniform ``step``
    (latent units, larger is coarser) or the ``palette_size``; ``scalar8`` has none. ``scale`` (0, 1] encodes a
    downscaled image and restores the size on decode. ``entropy`` codes uniform int8 symbols of a latent space with
    a model by ``passes``, the default, or ``context`` (slower), else with zstd (``level``). ``target_bpp`` (uniform
    mode) makes the encoder choose step and scale: the best ``metric`` within 10% of that many bits per pixel
    (``rate_search="peak"`` starts at the scale whose step is near 1, moving while the score improves); ``target_psnr``
    (dB) the smallest stream whose decoded PSNR reaches it (each try decodes). ``denoiser="auto"`` (uniform and
    palette modes) tries each stream without the model's denoiser and at three strengths and keeps the best by
    ``strength_by`` (none, with a warning, where its weights are not installed); a named id is always recorded.
    """

    mode: CodingMode = field(
        default=CodingMode.UNIFORM,
        metadata=_meta(CodingMode.parse, "coding mode", choices=tuple(m.label for m in CodingMode)),
    )
    quality: float | None = field(
        default=None, metadata=_meta(float, "0..100: sets the mode's step or palette size", short="-q")
    )
    step: float | None = field(default=None, metadata=_meta(float, "uniform step in latent units (instead of quality)"))
    palette_size: int | None = field(default=None, metadata=_meta(int, "palette entries (instead of quality)"))
    dither: bool = field(default=True, metadata=_meta(parse_bool, "palette mode: Floyd-Steinberg error diffusion"))
    scale: float = field(default=1.0, metadata=_meta(float, "encode at this fraction of the size (0, 1]"))
    alpha: str = field(
        default="keep", metadata=_meta(str, "keep the alpha plane (lossless) or drop it", choices=("keep", "drop"))
    )
    entropy: EntropyMethod = field(
        default=EntropyMethod.PASSES,
        metadata=_meta(
            EntropyMethod.parse,
            "latent entropy coder for uniform int8 symbols of a latent space with a model (zstd otherwise): passes"
            " (16 parallel steps), context (wavefronts: slower, a few percent fewer bytes), passes_v1 or zstd",
            choices=tuple(m.label for m in EntropyMethod),
        ),
    )
    level: int = field(default=DEFAULT_LEVEL, metadata=_meta(int, "zstd level 1..22"))
    target_bpp: float | None = field(
        default=None, metadata=_meta(float, "choose step and scale to hit this many bits per pixel")
    )
    target_psnr: float | None = field(
        default=None, metadata=_meta(float, "the smallest stream whose decoded PSNR reaches this (dB)")
    )
    metric: str = field(
        default="psnr",
        metadata=_meta(str, "what target_bpp and the denoiser-strength choice maximise", choices=METRICS),
    )
    effort: int = field(default=0, metadata=_meta(int, "latent refinement steps through the decoder (uniform)"))
    rdo: float = field(default=0.0, metadata=_meta(float, "uniform: code length's weight in rounding (0: nearest)"))
    channel_steps: bool = field(default=True, metadata=_meta(parse_bool, "uniform: a step per latent channel"))
    denoiser: str | None = field(
        default=AUTO,
        metadata=_meta(
            str,
            "denoiser to run before decoding: auto (the model's, at its best strength, if it helps), none, or an id",
        ),
    )
    denoiser_strength: float | None = field(
        default=None, metadata=_meta(float, "with a named denoiser: fraction of the noise level it is told")
    )
    strength_by: str = field(
        default="crops",
        metadata=_meta(
            str,
            "how denoiser=auto picks its strength: crops (decode a few sampled windows at each) or pixels (decode"
            " the whole image at each, score it by metric)",
            choices=("crops", "pixels"),
        ),
    )
    rate_search: str = field(
        default="peak",
        metadata=_meta(
            str,
            "how target_bpp (target_psnr) searches the scales: peak (from the one whose step is near 1 (the smallest)"
            " to the better side), climb (up from the smallest; streams before peak) or every (streams before climb)",
            choices=("peak", "climb", "every"),
        ),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", CodingMode.parse(self.mode))
        object.__setattr__(self, "entropy", EntropyMethod.parse(self.entropy))
        if self.denoiser in ("none", ""):
            object.__setattr__(self, "denoiser", None)
        self._check_types()
        self._check_ranges()
        self._check_mode_rules()
        self._check_denoiser()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def parse(cls, pairs: Iterable[tuple[str, str]]) -> EncodeOptions:
        """Options from ``(name, text)`` pairs (a query string, a form), each typed as its field declares."""
        return cls(**{name: parse_value(name, text) for name, text in pairs})

    @classmethod
    def resolve(cls, options: EncodeOptions | None = None, overrides: Mapping[str, Any] | None = None) -> EncodeOptions:
        """``options`` (default: the defaults) with ``overrides`` applied, validated once."""
        base = options or cls()
        return base if not overrides else cls(**{**base.as_dict(), **overrides})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    def _check_types(self) -> None:
        """Each value of the type its field declares (numbers as Python numbers); ValueError otherwise."""
        for option in fields(self):
            value, parse = getattr(self, option.name), option.metadata["parse"]
            if (value is None and "None" in str(option.type)) or parse in (CodingMode.parse, EntropyMethod.parse):
                continue
            if parse in (int, float) and isinstance(value, Real) and not isinstance(value, bool):
                if parse is int and not isinstance(value, Integral):
                    raise ValueError(f"{option.name} must be a whole number, got {value!r}")
                object.__setattr__(self, option.name, parse(value))
            elif not isinstance(value, {parse_bool: bool, str: str}.get(parse, Real)):
                raise ValueError(f"{option.name} must be {_TYPE_NAMES[parse]}, got {type(value).__name__} {value!r}")

    def _check_ranges(self) -> None:
        for name, lo, hi, open_below in _RANGES:
            value = getattr(self, name)
            if value is not None and not (lo < value <= hi if open_below else lo <= value <= hi):
                bracket = "(" if open_below else "["
                raise ValueError(f"{_LABELS.get(name, name)} must be in {bracket}{lo}, {hi}], got {value}")
        for option in fields(self):  # the text options with a fixed set of values
            choices, value = option.metadata.get("choices"), getattr(self, option.name)
            if option.metadata["parse"] is str and choices and value not in choices:
                raise ValueError(f"{option.name} must be one of {', '.join(choices)}, got {value!r}")

    def _check_mode_rules(self) -> None:
        uniform = self.mode is CodingMode.UNIFORM
        if self.effort and not uniform:
            raise ValueError("effort needs mode 'uniform' (refinement works on its step grid)")
        if self.target_bpp is not None:
            if not uniform:
                raise ValueError("target_bpp needs mode 'uniform' (its step is the knob rate control turns)")
            if self.effort:
                raise ValueError("effort cannot be combined with target_bpp yet (refinement depends on the step)")
        if self.target_psnr is not None and (not uniform or self.effort or self.target_bpp is not None):
            raise ValueError("target_psnr needs mode 'uniform', without effort or target_bpp")
        knob = {CodingMode.UNIFORM: "step", CodingMode.PALETTE: "palette_size"}.get(self.mode)  # scalar8: none
        given = [n for n in ("quality", knob, "target_bpp", "target_psnr") if n and getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of {', '.join(given)}: each sets the {knob}")

    def _check_denoiser(self) -> None:
        from latentcodec.engine.denoise.registry import DENOISERS

        if self.denoiser not in (None, AUTO) and self.denoiser not in DENOISERS:
            raise ValueError(f"unknown denoiser {self.denoiser!r}; known: auto, none, {', '.join(DENOISERS.names())}")
        if self.denoiser_strength is not None and self.denoiser in (None, AUTO):
            raise ValueError("denoiser_strength needs a named denoiser ('auto' chooses the strength itself)")

    @property
    def search(self) -> str | None:
        """``"rate"`` or ``"quality"`` when the encoder searches for the step and scale itself."""
        if self.target_bpp is not None:
            return "rate"
        return "quality" if self.target_psnr is not None else None

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


# (field, low, high, low end open) of the numeric options
_RANGES = (
    ("denoiser_strength", 0, MAX_DENOISER_STRENGTH, True),
    ("quality", 0, 100, False),
    ("scale", 0, 1, True),
    ("level", 1, 22, False),
    ("step", MIN_STEP, MAX_STEP, False),
    ("palette_size", 2, MAX_PALETTE, False),
    ("effort", 0, 1000, False),
    ("rdo", 0, 10, False),
    ("target_bpp", 0, 24, True),
    ("target_psnr", 10, 60, False),
)
_LABELS = {"level": "zstd level", "palette_size": "palette size"}
_TYPE_NAMES = {int: "a whole number", float: "a number", parse_bool: "True or False", str: "a string"}
_FIELDS = {f.name: f for f in fields(EncodeOptions)}


def parse_value(name: str, text: str) -> Any:
    """The value of option ``name`` written as ``text``; ValueError for unknown options or bad values."""
    option = _FIELDS.get(name)
    if option is None:
        raise ValueError(f"unknown option {name!r}")
    try:
        return option.metadata["parse"](text)
    except ValueError:
        raise ValueError(f"bad value {text!r} for option {name!r}") from None
