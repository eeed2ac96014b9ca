"""The networks of one codec on one device: the autoencoder, its denoisers and the passes that run them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import replace
from functools import cached_property, partial

import torch

from latentcodec.engine.coders import Coder, coder_for
from latentcodec.engine.denoise.registry import LoadedDenoiser, load_denoiser
from latentcodec.engine.format import CodingMode
from latentcodec.engine.images import pad_to_multiple
from latentcodec.engine.models import LatentAutoencoder, ModelSpec, get_spec, load_model
from latentcodec.engine.models.bicubic import Grid, Span
from latentcodec.engine.models.switched import by_branch, take
from latentcodec.engine.runner import PassRunner
from latentcodec.engine.stage_timer import staged
from latentcodec.engine.tiling import Bands, TilePolicy, joined, run_tiled, sweeps_across, tiled_bands

log = logging.getLogger(__name__)
DenoiserPass = tuple[str, Hashable]  # (denoiser id, schedule key)


def to_unit(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 or float images -> ``dtype`` in [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255)
    return images.to(dtype)


class ModelSession:
    """An autoencoder (and the denoisers its streams name) placed on one device, dtype and memory layout.

    Networks load on first use. ``graphs`` runs the passes through static bucketed batches (CUDA graphs on GPU),
    ``compile`` through ``torch.compile``; on the CPU each eager pass takes one image (batching only spills
    caches), which also makes every pass batch-invariant. ``backend`` picks the coders' kernels. ``tiles``
    says which images run in overlapping tiles (:mod:`~latentcodec.engine.tiling`). A half-precision pass whose
    output is not finite is run again in float32 (``fallbacks`` counts them).
    """

    def __init__(
        self,
        model_id: str,
        device: torch.device,
        dtype: torch.dtype,
        *,
        backend: str | None,
        source: str | None,
        graphs: bool,
        memory_format: torch.memory_format,
        compile: bool,
        denoiser_source: str | None,
        tiles: TilePolicy | None = None,
    ) -> None:
        self.model_id = get_spec(model_id).model_id  # fails early for unknown ids
        self.device, self.dtype, self.backend, self.source = device, dtype, backend, source
        self.graphs, self.memory_format, self.compile = graphs, memory_format, compile
        self.denoiser_source = denoiser_source
        self.tiles = tiles or TilePolicy.auto(device)
        self.fallbacks = 0
        self._passes: dict[Hashable, PassRunner] = {}  # the decoders', denoised decoders' and upscaler's, by kind

    @cached_property
    def model(self) -> LatentAutoencoder:
        return load_model(self.model_id, self.device, self.dtype, self.source, self.memory_format)

    @property
    def spec(self) -> ModelSpec:
        """The loaded model's latent-space description (diffusers configs may refine the registry's)."""
        return self.model.spec

    def float32_model(self) -> LatentAutoencoder:
        """The autoencoder in float32 on this device (refinement takes gradients through it)."""
        return load_model(self.model_id, self.device, torch.float32, self.source, self.memory_format)

    def coder(self, mode: CodingMode) -> Coder:
        return coder_for(mode, self.backend, self.device)

    def _runner(self, fn: Callable[..., torch.Tensor]) -> PassRunner:
        max_rows = 1 if self.device.type == "cpu" else None
        fn = torch.compile(fn, dynamic=True) if self.compile else fn  # one compile serves every shape
        return PassRunner(fn, self.device, static=self.graphs, memory_format=self.memory_format, max_rows=max_rows)

    @cached_property
    def encoder_pass(self) -> PassRunner:
        """Images ``[B, 3, H, W]`` (uint8 or [0, 1]; multiples of the downsampling) -> latents, on the device."""
        return self._runner(lambda x: self.model.encode(to_unit(x, self.dtype)))

    @property
    def decoder_pass(self) -> PassRunner:
        """The decoder's pass for clean latents (see :meth:`branch_decoder_pass`)."""
        return self.branch_decoder_pass(self.model.branches(None)[0][0])

    def branch_decoder_pass(self, branch: int) -> PassRunner:
        """Latents (and, for a conditioned decoder, noise levels ``[B]``) -> RGB images, on the device (not
        clamped: :meth:`decode` checks them first), through the model's decoder ``branch``."""
        return self._keyed_pass(("decode", branch), lambda z, *sigma: self.model.branch(branch).decode(z, *sigma))

    @cached_property
    def encoder_tile_pass(self) -> PassRunner:
        """Image tiles -> the encoder's local features (:meth:`LatentAutoencoder.encode_local`)."""
        return self._runner(lambda x: self.model.encode_local(to_unit(x, self.dtype)))

    def decoder_tile_pass(self, branch: int) -> PassRunner:
        """Feature tiles (and noise levels) -> RGB tiles (:meth:`LatentAutoencoder.decode_local`, not clamped)."""
        return self._keyed_pass(("local", branch), lambda f, *sigma: self.model.branch(branch).decode_local(f, *sigma))

    def _keyed_pass(self, key: Hashable, fn: Callable[..., torch.Tensor]) -> PassRunner:
        if key not in self._passes:
            self._passes[key] = self._runner(fn)
        return self._passes[key]

    def denoiser(self, denoiser_id: str, dtype: torch.dtype | None = None) -> LoadedDenoiser:
        """A denoiser on this device, in the session's dtype unless told (loaded on first use, cached)."""
        return load_denoiser(denoiser_id, self.device, dtype or self.dtype, self.denoiser_source, self.memory_format)

    def denoised_decoder_pass(self, denoiser_id: str, key: Hashable) -> PassRunner:
        """(Latents, noise levels ``[B]``) -> RGB (not clamped): the denoiser and the decoder as one pass (one
        CUDA graph per shape on GPU), for streams whose schedule key is ``key``."""
        if ("denoised", denoiser_id, key) not in self._passes:
            denoise = staged("denoiser", device=True)(self.denoiser(denoiser_id).pass_fn(key))
            self._keyed_pass(("denoised", denoiser_id, key), lambda z, sigma: self.model.decode(denoise(z, sigma)))
        return self._passes["denoised", denoiser_id, key]

    @torch.no_grad()
    @staged("encoder network", device=True)
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (device, model dtype) of images ``[B, 3, H, W]``, padded to the model's multiple here."""
        down = self.spec.downsample
        tiling = self.tiles.for_grid(-(-images.shape[-2] // down), -(-images.shape[-1] // down))
        if tiling is None:
            padded = pad_to_multiple(images, down)
            if padded is not images and self.device.type == "cuda":  # pinned: the copy is asynchronous
                padded = padded.pin_memory()
            return self._finite(self.encoder_pass, self._encode_f32)(padded)
        local = self._finite(self.encoder_tile_pass, self._encode_local_f32)
        features = run_tiled(local, images, (), tiling, cell=down, out_cell=1, chunk=self.tiles.chunk)
        return self.model.encode_global(features.to(self.dtype))

    @torch.no_grad()
    @staged("decoder network", device=True)
    def decode(self, latents: torch.Tensor, sigma: torch.Tensor, denoiser: DenoiserPass | None = None) -> torch.Tensor:
        """RGB ``[B, 3, H, W]`` in [0, 1] on the device from latents and their noise levels ``sigma`` ``[B]``:
        through the stream's denoiser pass when named, else the decoder (told ``sigma`` if conditioned; for a
        model with two decoders, each row through the one its noise level picks)."""
        groups = self.model.branches(None if denoiser else sigma)
        return by_branch(groups, lambda b, rows: self._decode(b, take(latents, rows), take(sigma, rows), denoiser))

    def _decode(self, branch: int, latents: torch.Tensor, sigma: torch.Tensor, denoiser: DenoiserPass | None):
        model = self.model.branch(branch)
        tiling = self.tiles.for_grid(*latents.shape[-2:])
        conditioning = (sigma,) if model.spec.conditioned and denoiser is None else ()
        if tiling is None and denoiser is None:
            fallback = partial(self._decode_f32, branch)
            return self._finite(self.branch_decoder_pass(branch), fallback, clamp=True)(latents, *conditioning)
        if tiling is None:
            fallback = partial(self._denoised_decode_f32, denoiser)
            return self._finite(self.denoised_decoder_pass(*denoiser), fallback, clamp=True)(latents, sigma)
        return joined(self._tiled(branch, latents, sigma, denoiser, False), latents.shape[-2] * self.spec.downsample)

    @torch.no_grad()
    def decode_bands(
        self, latents: torch.Tensor, sigma: torch.Tensor, denoiser: DenoiserPass | None
    ) -> tuple[bool, Bands]:
        """:meth:`decode` of one image (``latents`` ``[1, C, h, w]``) as bands of finished rows (of columns when
        the first item is True: grids far wider than tall), holding one row of tiles, never the whole image (a grid
        that runs whole is one band). Hand it the only reference to ``latents``: they go once the decoder's layers
        at latent resolution have run."""
        ((branch, _),) = self.model.branches(None if denoiser else sigma)
        tiling = self.tiles.for_grid(*latents.shape[-2:])
        if tiling is None:
            return False, iter([(0, self._decode(branch, latents, sigma, denoiser))])
        across = sweeps_across(tiling, *latents.shape[-2:], self.spec.downsample)
        return across, self._tiled(branch, latents, sigma, denoiser, across)

    @torch.no_grad()
    def _tiled(
        self, branch: int, z: torch.Tensor, sigma: torch.Tensor, denoiser: DenoiserPass | None, across: bool
    ) -> Bands:
        """The tiled decode's bands: the layers at latent resolution whole (in stripes), the rest in tiles."""
        tiling = self.tiles.for_grid(*z.shape[-2:])
        assert tiling is not None
        model = self.model.branch(branch)
        conditioning = (sigma,) if model.spec.conditioned and denoiser is None else ()
        z = z.to(self.device, self.dtype)  # the caller's latents go here if it held the only reference
        if denoiser is not None:
            z = self._denoise(denoiser)(z, sigma.to(self.device))
        features = model.decode_global(z, *(s.to(self.device) for s in conditioning))
        del z
        local = self._finite(self.decoder_tile_pass(branch), partial(self._decode_local_f32, branch), clamp=True)
        down, chunk = self.spec.downsample, self.tiles.chunk
        yield from tiled_bands(local, features, conditioning, tiling, cell=1, out_cell=down, chunk=chunk, across=across)

    @torch.no_grad()
    @staged("upscaler", device=True)
    def upscale(self, rgb: torch.Tensor, size: tuple[int, int], level: torch.Tensor) -> torch.Tensor:
        """Decoded images ``[B, 3, h, w]`` (on the device) of streams with noise levels ``level`` ``[B]`` at
        ``size``, as the model resizes them, in [0, 1]: one static pass per size (a CUDA graph on GPU)."""
        fallback = lambda x, s: self.float32_model().upscale(x.float(), size, s.float())  # noqa: E731
        upscale = self._keyed_pass(("upscale", size), lambda x, s: self.model.upscale(x, size, s))
        return self._finite(upscale, fallback, clamp=True)(rgb, level.to(rgb.dtype))

    @torch.no_grad()
    @staged("upscaler", device=True)
    def upscale_block(self, source: Grid, size: tuple[int, int], rows: Span, cols: Span, level: float) -> torch.Tensor:
        """Block ``rows x cols`` of :meth:`upscale`'s output from the decoded samples in ``source``, in [0, 1]."""

        def run(values: torch.Tensor, model: LatentAutoencoder | None = None) -> torch.Tensor:
            return (model or self.model).upscale_block(replace(source, values=values), size, rows, cols, level)

        return self._finite(run, lambda x: run(x.float(), self.float32_model()), clamp=True)(source.values)

    # float32 reruns of the passes (:meth:`_finite`)
    def _encode_f32(self, x: torch.Tensor) -> torch.Tensor:
        return self.float32_model().encode(to_unit(x, torch.float32))

    def _encode_local_f32(self, x: torch.Tensor) -> torch.Tensor:
        return self.float32_model().encode_local(to_unit(x, torch.float32))

    def _decode_f32(self, branch: int, z: torch.Tensor, *sigma: torch.Tensor) -> torch.Tensor:
        return self.float32_model().branch(branch).decode(z.float(), *(s.float() for s in sigma))

    def _decode_local_f32(self, branch: int, features: torch.Tensor, *sigma: torch.Tensor) -> torch.Tensor:
        return self.float32_model().branch(branch).decode_local(features.float(), *(s.float() for s in sigma))

    def _denoised_decode_f32(self, denoiser: DenoiserPass, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.float32_model().decode(self._denoise(denoiser, torch.float32)(z.float(), sigma.float()))

    def _denoise(self, denoiser: DenoiserPass, dtype: torch.dtype | None = None) -> Callable:
        return staged("denoiser", device=True)(self.denoiser(denoiser[0], dtype).pass_fn(denoiser[1]))

    def _finite(self, run: Callable[..., torch.Tensor], fallback: Callable[..., torch.Tensor], clamp: bool = False):
        """``run``, rerun as ``fallback`` (float32) when a half-precision output is not finite; images are
        clamped to [0, 1] after the check (clamping first would turn an overflow into white)."""

        def checked(*xs: torch.Tensor) -> torch.Tensor:
            out = run(*xs)
            if self.dtype != torch.float32 and not bool(torch.isfinite(out).all()):
                self.fallbacks += 1
                log.warning("non-finite %s output of a %s pass; running it again in float32", self.dtype, self.model_id)
                with torch.no_grad():
                    out = fallback(*(x.to(self.device) for x in xs)).to(out.dtype)
            return out.clamp_(0, 1) if clamp else out

        return checked
