"""Training the latent denoiser on TAEF2 latents of a training folder (never the Kodak benchmark).

Each training image is used as it is, mirrored and at half size (``augment``). Each step draws random latent
crops, quantizes them through the codec's coders (``Coder.simulate``: uniform steps of random size; dithering with
the whole image's palette of a random size, fitted by the palette coder), and fits the denoiser to predict the
clean latents: latent MSE plus the MSE of decoded image crops (frozen decoder) against the original pixels. The
noise level the denoiser is given is the whole image's, as the encoder records it, not the crop's. The run ends
with the gain on the whole held-out images at the gain bench's six operating points. Seeded and CPU-feasible
(README).

``latentcodec-lab train-denoiser DATA OUT [options]`` runs it.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from latentcodec.bench.denoise import OPERATING_POINTS
from latentcodec.engine.coders import PaletteCoder, simulate
from latentcodec.engine.denoise import latent_denoiser
from latentcodec.engine.denoise.latent_denoiser import LatentDenoiser
from latentcodec.engine.format import CodingMode
from latentcodec.engine.images import image_files, psnr, to_array
from latentcodec.engine.models import LatentAutoencoder, load_model
from latentcodec.engine.strength_search import STRENGTHS
from latentcodec.kernels import ops as kernels
from latentcodec.training.common import add_config_arguments, cached


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    output: Path
    model: str = "taef2"
    steps: int = 1300
    batch: int = 16
    crop: int = 32  # latent pixels per side of the training crops
    image_crop: int = 16  # latent pixels per side of the crops decoded for the image loss
    image_batch: int = 8
    image_weight: float = 100.0
    latent_weight: float = 0.1  # the image term is what PSNR measures; the latent term keeps it anchored
    lr: float = 1e-3
    min_step: float = 0.2
    max_step: float = 6.0
    min_palette: int = 4
    max_palette: int = 256  # palettes of the powers of two from min_palette to max_palette are fitted per image
    augment: bool = True  # also train on each image mirrored and at half size
    holdout: int = 4  # images (last by name) kept out of training to report a validation gain
    seed: int = 1  # the pinned network's (README, "Latent denoiser")
    channel_steps: bool = False  # the shipped weights learned one step for all channels (README, "Steps per channel")
    limit: int | None = None  # use at most this many images (tests)
    cache: Path | None = None  # keep the encoded training latents here between runs


@dataclass
class Sample:
    latents: torch.Tensor  # [C, h, w] float32
    image: torch.Tensor  # [3, 8h, 8w] float32 in [0, 1] (cropped to whole latents)
    palettes: list[torch.Tensor]  # [K, C] as the encoder stores them, one per size of palette_sizes()
    palette_noise: list[float]  # the whole image's noise level coded with each of them, as the stream records it


def palette_sizes(config: TrainConfig) -> list[int]:
    """The palette sizes trained on: powers of two from ``min_palette`` to ``max_palette``."""
    sizes, size = [], config.min_palette
    while size <= config.max_palette:
        sizes.append(size)
        size *= 2
    return sizes


def image_paths(folder: Path) -> list[Path]:
    if "kodak" in str(folder).lower():
        raise ValueError("refusing to train on Kodak: it is the benchmark")
    return image_files(folder)


def views(image: Image.Image, augment: bool) -> list[Image.Image]:
    """The image, and with ``augment`` also mirrored and at half size."""
    if not augment:
        return [image]
    half = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    return [image, ImageOps.mirror(image), half]


@torch.no_grad()
def encode_folder(paths: list[Path], model: LatentAutoencoder, config: TrainConfig) -> list[list[Sample]]:
    """The samples of each image (its :func:`views`): latents, pixels and palettes."""
    down = model.spec.downsample
    coder, sizes = PaletteCoder(), palette_sizes(config)
    groups = []
    for path in paths:
        group = []
        for view in views(Image.open(path).convert("RGB"), config.augment):
            image = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255).permute(2, 0, 1)
            h, w = (image.shape[1] // down) * down, (image.shape[2] // down) * down
            if min(h, w) // down < config.crop:
                continue
            image = image[:, :h, :w].contiguous()
            latents = model.encode(image[None])
            palettes = [coder.fit(latents, size)[3] for size in sizes]
            noise = [simulate(latents, mode="palette", palette_size=size).noise.item() for size in sizes]
            group.append(Sample(latents[0], image, [palette[0] for palette in palettes], noise))
        groups.append(group)
    return groups


def modes(batch: int) -> torch.Tensor:
    """The coding mode of each row :func:`quantize` makes: even rows uniform, odd rows palette."""
    return torch.where(torch.arange(batch) % 2 == 0, int(CodingMode.UNIFORM), int(CodingMode.PALETTE))


def _dithered(latents: torch.Tensor, palettes: torch.Tensor) -> torch.Tensor:
    """Latent crops ``[B, C, h, w]`` dithered with given palettes ``[B, K, C]`` (their whole images'), by the palette
    coder's own steps: a crop's own palette is not what the codec would use."""
    return kernels.palette_lookup(PaletteCoder().indices(latents, palettes), palettes)


def quantize(
    latents: torch.Tensor, picks: list[Sample], generator: torch.Generator, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent crops ``[B, C, h, w]`` of the samples ``picks`` quantized like the codec (even rows with uniform
    steps, odd rows dithered with their image's palette of one size), and the noise level ``[B]`` the encoder
    would record: the whole image's."""
    out, sigma = torch.empty_like(latents), torch.empty(len(latents))
    for i in range(0, latents.shape[0], 2):
        u = float(torch.rand((), generator=generator))
        step = math.exp(math.log(config.min_step) + u * math.log(config.max_step / config.min_step))
        out[i] = simulate(latents[i : i + 1], mode="uniform", step=step, channel_steps=config.channel_steps).latents[0]
        sigma[i] = simulate(
            picks[i].latents[None], mode="uniform", step=step, channel_steps=config.channel_steps
        ).noise[0]
    rows = latents[1::2]
    if len(rows):
        rung = int(torch.randint(len(picks[1].palettes), (), generator=generator))
        out[1::2] = _dithered(rows, torch.stack([pick.palettes[rung] for pick in picks[1::2]]))
        sigma[1::2] = torch.tensor([pick.palette_noise[rung] for pick in picks[1::2]])
    return out, sigma


def _crops(samples: list[Sample], n: int, size: int, generator: torch.Generator, down: int):
    latents, images, picks = [], [], []
    for _ in range(n):
        sample = samples[int(torch.randint(len(samples), (), generator=generator))]
        _, h, w = sample.latents.shape
        y = int(torch.randint(h - size + 1, (), generator=generator))
        x = int(torch.randint(w - size + 1, (), generator=generator))
        latents.append(sample.latents[:, y : y + size, x : x + size])
        images.append(sample.image[:, y * down : (y + size) * down, x * down : (x + size) * down])
        picks.append(sample)
    return torch.stack(latents), torch.stack(images), picks


def _losses(denoiser, decoder, latents, images, picks, generator, config, down):
    quantized, sigma = quantize(latents, picks, generator, config)
    cleaned = denoiser(quantized, sigma, modes(len(latents)))
    latent_loss = F.mse_loss(cleaned, latents)
    n, size = config.image_batch, config.image_crop
    offset = (config.crop - size) // 2
    window = cleaned[:n, :, offset : offset + size, offset : offset + size]
    decoded = decoder.decode(window).clamp(0, 1)
    target = images[:n, :, offset * down : (offset + size) * down, offset * down : (offset + size) * down]
    margin = down  # decoded crop borders lack context: scored inside them
    image_loss = F.mse_loss(decoded[..., margin:-margin, margin:-margin], target[..., margin:-margin, margin:-margin])
    return latent_loss, image_loss, quantized, sigma


def train(config: TrainConfig, log=print) -> LatentDenoiser:
    """Train a denoiser per ``config``, write it to ``config.output`` and return it."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = load_model(config.model)
    down = model.spec.downsample
    paths = image_paths(config.data)[: config.limit]
    started = time.perf_counter()
    groups = _encoded(paths, model, config)
    held = config.holdout if 0 < config.holdout < len(groups) else 0
    samples = [sample for group in groups[: len(groups) - held] for sample in group]
    holdout = [group[0] for group in groups[len(groups) - held :] if group]  # the held-out images as they are
    log(f"{len(samples)} training and {len(holdout)} held-out samples encoded in {time.perf_counter() - started:.0f} s")

    denoiser = LatentDenoiser.untrained(model.spec.latent_channels)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.05)
    for step in range(1, config.steps + 1):
        latents, images, picks = _crops(samples, config.batch, config.crop, generator, down)
        latent_loss, image_loss, _, _ = _losses(denoiser, model, latents, images, picks, generator, config, down)
        loss = config.latent_weight * latent_loss + config.image_weight * image_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == config.steps:
            log(
                f"step {step}/{config.steps}: latent MSE {latent_loss.item():.4f}, image MSE {image_loss.item():.5f}"
                f" ({time.perf_counter() - started:.0f} s)"
            )
    if holdout:
        for score in validate(denoiser, model, holdout, config):
            log(str(score))
    config.output.parent.mkdir(parents=True, exist_ok=True)
    latent_denoiser.save(
        denoiser.eval(),
        config.output,
        {
            "model": config.model,
            "steps": str(config.steps),
            "seed": str(config.seed),
            "data": config.data.name,
            "augment": str(config.augment),
        },
    )
    return denoiser


def _encoded(paths: list[Path], model: LatentAutoencoder, config: TrainConfig) -> list[list[Sample]]:
    """:func:`encode_folder`, kept in ``config.cache`` between runs of one recipe."""
    recipe = {
        "paths": [p.name for p in paths],
        "augment": config.augment,
        "palettes": palette_sizes(config),
        "noise": "whole image, as recorded",
        "crop": config.crop,
        "model": config.model,
    }
    return cached(config.cache, recipe, lambda: encode_folder(paths, model, config), Sample)


@dataclass(frozen=True)
class HeldOutScore:
    """Mean PSNR (dB) of the whole held-out images at one operating point: decoded plain, after the denoiser at
    the measured noise level, and the best of those and the ``denoiser="auto"`` strengths per image."""

    point: str
    plain: float
    measured: float
    auto: float

    def __str__(self) -> str:
        measured, auto = self.measured - self.plain, self.auto - self.plain
        return (
            f"held-out {self.point}: PSNR {self.plain:.2f}, denoised {self.measured:.2f} ({measured:+.2f}),"
            f" auto {self.auto:.2f} ({auto:+.2f}) dB"
        )


@torch.no_grad()
def validate(
    denoiser: LatentDenoiser, model: LatentAutoencoder, samples: list[Sample], config: TrainConfig
) -> list[HeldOutScore]:
    """:class:`HeldOutScore` at each of the denoiser bench's ``OPERATING_POINTS`` (palettes among those trained)
    on the whole held-out images: scores on crops misled (README, "Latent denoiser")."""
    sizes = palette_sizes(config)
    scores = []
    for label, options in OPERATING_POINTS:
        mode = CodingMode.parse(options["mode"])
        if mode == CodingMode.PALETTE and options["palette_size"] not in sizes:
            continue
        rows = []
        for sample in samples:
            quantized, sigma = simulate(sample.latents[None], channel_steps=config.channel_steps, **options)
            decodes = [quantized] + [denoiser(quantized, s * sigma, int(mode)) for s in (1.0, *STRENGTHS)]
            reference = to_array(sample.image)
            psnrs = [psnr(reference, to_array(model.decode(z)[0])) for z in decodes]
            rows.append((psnrs[0], psnrs[1], max(psnrs[:1] + psnrs[2:])))
        plain, measured, auto = np.mean(rows, axis=0).tolist()
        scores.append(HeldOutScore(label, plain, measured, auto))
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="latentcodec-lab train-denoiser", description=__doc__)
    parser.add_argument("data", type=Path, help="folder of training images (never Kodak)")
    parser.add_argument("output", type=Path, help="where to write the .safetensors weights")
    add_config_arguments(parser, TrainConfig(Path(), Path()), skip=("data", "output"))
    args = parser.parse_args(argv)
    train(TrainConfig(**vars(args)))
