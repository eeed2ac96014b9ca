"""Latent spaces: the names latent streams carry instead of a model. A space is what the registered models naming
it share (channels, downsampling); any of them renders its streams, the default model first."""

from __future__ import annotations

from dataclasses import dataclass

from latentcodec.engine.bitstream import Header
from latentcodec.engine.errors import CorruptStreamError, ModelError, ModelMismatchError, UnknownModelError
from latentcodec.engine.format import DEFAULT_MODEL
from latentcodec.engine.models import ModelSpec, available_models, get_spec

DEFAULT_LATENT_SPACE = "flux2"  # the default model's: TAEF2's, 32 channels, /8
LatentShape = tuple[int, int, int]  # (channels, height, width)


@dataclass(frozen=True)
class LatentSpace:
    """A named latent space: its latents' channels and downsampling, and the models that decode it (the one that
    renders its streams by default first)."""

    name: str
    channels: int
    downsample: int
    models: tuple[str, ...]

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) of the image a ``height x width`` latent grid decodes to."""
        return width * self.downsample, height * self.downsample


def latent_spaces() -> list[str]:
    """The latent spaces of the registered models."""
    return sorted({get_spec(model).latent_space for model in available_models()} - {""})


def latent_space(name: str) -> LatentSpace:
    """The space ``name``; UnknownModelError when no registered model names it."""
    members = [get_spec(model) for model in available_models()] if isinstance(name, str) and name else []
    members = sorted((s for s in members if s.latent_space == name), key=lambda s: s.model_id != DEFAULT_MODEL)
    if not members:
        raise UnknownModelError(f"unknown latent space {name!r}; known: {', '.join(latent_spaces()) or 'none'}")
    first = members[0]
    return LatentSpace(name, first.latent_channels, first.downsample, tuple(s.model_id for s in members))


def space_of_model(model_id: str) -> LatentSpace:
    """The latent space of ``model_id``'s latents; ModelError for a model that names none."""
    spec = get_spec(model_id)
    if not spec.latent_space:
        raise ModelError(f"model {model_id!r} names no latent space: its latents cannot be latent streams")
    return latent_space(spec.latent_space)


def stream_latents(header: Header) -> tuple[LatentShape, str]:
    """The shape of a stream's latents and the space the entropy stage models them in (image streams: their
    model's, which may be none, ``""``)."""
    if header.latent_space is None:
        spec = get_spec(header.model_id)
        return (spec.latent_channels, *header.latent_size(spec.downsample)), spec.latent_space
    space = latent_space(header.latent_space)
    _check_grid(header, space.downsample)
    return (space.channels, *header.latent_size(space.downsample)), space.name


def check_renders(header: Header, spec: ModelSpec) -> None:
    """ModelMismatchError unless a model of ``spec`` may render the latent stream ``header``."""
    if header.latent_space != spec.latent_space:
        decodes = repr(spec.latent_space) if spec.latent_space else "no named latent space"
        raise ModelMismatchError(
            f"stream holds latents of the {header.latent_space!r} space; model {spec.model_id!r} decodes {decodes}"
        )
    _check_grid(header, spec.downsample)


def renderer(header: Header, model: str | None = None) -> str:
    """The model that renders a stream as an image: ``model`` if given (a latent stream's: one of its space), else
    the stream's own model, or a latent stream's space's default."""
    if header.latent_space is None:
        return model or header.model_id
    if model is None:
        return latent_space(header.latent_space).models[0]
    check_renders(header, get_spec(model))
    return model


def _check_grid(header: Header, downsample: int) -> None:
    if header.width % downsample or header.height % downsample:
        raise CorruptStreamError(f"a latent stream's size {header.width}x{header.height} is not a latent grid")
