"""Training the latent denoiser on TAEF2 latents of a training folder (never the Kodak benchmark).

Each step draws random latent crops, quantizes them the way the codec does (uniform steps and dithered
palettes of random sizes), and fits the denoiser to predict the clean latents: latent MSE plus the MSE of
decoded image crops (frozen decoder) against the original pixels. Seeded and CPU-feasible.
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
from PIL import Image

from latentcodec.engine.coding import CodingMode, PaletteCoder
from latentcodec.engine.denoise import latent_denoiser
from latentcodec.engine.denoise.latent_denoiser import LatentDenoiser
from latentcodec.engine.models import LatentAutoencoder, load_model

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm"}


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    output: Path
    model: str = "taef2"
    steps: int = 800
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
    max_palette: int = 256
    holdout: int = 4  # images (last by name) kept out of training to report a validation gain
    seed: int = 0
    limit: int | None = None  # use at most this many images (tests)
    cache: Path | None = None  # keep the encoded training latents here between runs


@dataclass
class Sample:
    latents: torch.Tensor  # [C, h, w] float32
    image: torch.Tensor  # [3, 8h, 8w] float32 in [0, 1] (cropped to whole latents)


def image_paths(folder: Path) -> list[Path]:
    if "kodak" in str(folder).lower():
        raise ValueError("refusing to train on Kodak: it is the benchmark")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


@torch.no_grad()
def encode_folder(paths: list[Path], model: LatentAutoencoder) -> list[Sample]:
    down = model.spec.downsample
    samples = []
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        image = torch.from_numpy(rgb).permute(2, 0, 1)
        h, w = (image.shape[1] // down) * down, (image.shape[2] // down) * down
        image = image[:, :h, :w].contiguous()
        samples.append(Sample(model.encode(image[None])[0], image))
    return samples


def modes(batch: int) -> torch.Tensor:
    """The coding mode of each row :func:`quantize` makes: even rows uniform, odd rows palette."""
    return torch.where(torch.arange(batch) % 2 == 0, int(CodingMode.UNIFORM), int(CodingMode.PALETTE))


def quantize(latents: torch.Tensor, generator: torch.Generator, config: TrainConfig) -> torch.Tensor:
    """Latents ``[B, C, h, w]`` quantized like the codec: even rows uniform steps, odd rows one palette size."""
    out = torch.empty_like(latents)
    log_uniform = lambda lo, hi: math.exp(math.log(lo) + float(torch.rand((), generator=generator)) * math.log(hi / lo))  # noqa: E731
    for i in range(0, latents.shape[0], 2):
        step = log_uniform(config.min_step, config.max_step)
        out[i] = torch.round(latents[i] / step).clamp(-32767, 32767) * step
    rows = latents[1::2]
    if len(rows):
        coder = PaletteCoder(round(log_uniform(config.min_palette, config.max_palette)), dither=True)
        coded = coder.encode(rows)
        params = [p.numpy().tobytes() for p in coded.params]
        out[1::2] = coder.decode(params, coded.planes, tuple(rows.shape[1:]))
    return out


def noise_level(quantized: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """RMS quantization error per image ``[B]``: the denoiser's conditioning, as the encoder records it."""
    return (quantized - latents).pow(2).flatten(1).mean(1).sqrt()


def _crops(samples: list[Sample], n: int, size: int, generator: torch.Generator, down: int):
    latents, images = [], []
    for _ in range(n):
        sample = samples[int(torch.randint(len(samples), (), generator=generator))]
        _, h, w = sample.latents.shape
        y = int(torch.randint(h - size + 1, (), generator=generator))
        x = int(torch.randint(w - size + 1, (), generator=generator))
        latents.append(sample.latents[:, y : y + size, x : x + size])
        images.append(sample.image[:, y * down : (y + size) * down, x * down : (x + size) * down])
    return torch.stack(latents), torch.stack(images)


def _losses(denoiser, decoder, latents, images, generator, config, down):
    quantized = quantize(latents, generator, config)
    sigma = noise_level(quantized, latents)
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
    if config.cache is not None and config.cache.is_file():
        samples = [Sample(**fields) for fields in torch.load(config.cache)]
    else:
        samples = encode_folder(paths, model)
        if config.cache is not None:
            torch.save([vars(sample) for sample in samples], config.cache)
    samples = [s for s in samples if min(s.latents.shape[1:]) >= config.crop]
    holdout = samples[len(samples) - config.holdout :] if 0 < config.holdout < len(samples) else []
    samples = samples[: len(samples) - len(holdout)]
    log(f"{len(samples)} training and {len(holdout)} held-out images encoded in {time.perf_counter() - started:.0f} s")

    denoiser = LatentDenoiser.untrained(model.spec.latent_channels)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.05)
    for step in range(1, config.steps + 1):
        latents, images = _crops(samples, config.batch, config.crop, generator, down)
        latent_loss, image_loss, _, _ = _losses(denoiser, model, latents, images, generator, config, down)
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
        log(validate(denoiser, model, holdout, config))
    config.output.parent.mkdir(parents=True, exist_ok=True)
    latent_denoiser.save(
        denoiser.eval(),
        config.output,
        {"model": config.model, "steps": str(config.steps), "seed": str(config.seed), "data": config.data.name},
    )
    return denoiser


@torch.no_grad()
def validate(denoiser: LatentDenoiser, model: LatentAutoencoder, samples: list[Sample], config: TrainConfig) -> str:
    """Held-out latent MSE and decoded-crop PSNR before and after denoising, per mode, on fixed crops and noise."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    down = model.spec.downsample
    latents, images = _crops(samples, 4 * config.batch, config.crop, generator, down)
    quantized = quantize(latents, generator, config)
    labels = modes(len(latents))
    cleaned = denoiser(quantized, noise_level(quantized, latents), labels)
    lines = []
    for mode in (CodingMode.UNIFORM, CodingMode.PALETTE):
        rows = labels == int(mode)
        before, after = (F.mse_loss(z[rows], latents[rows]).item() for z in (quantized, cleaned))
        psnr = [
            -10 * math.log10(F.mse_loss(model.decode(z[rows]).clamp(0, 1), images[rows]).item())
            for z in (quantized, cleaned)
        ]
        lines.append(
            f"held-out {mode.label}: latent MSE {before:.4f} -> {after:.4f}, PSNR {psnr[0]:.2f} -> {psnr[1]:.2f} dB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="latentcodec train-denoiser", description=__doc__)
    parser.add_argument("data", type=Path, help="folder of training images (never Kodak)")
    parser.add_argument("output", type=Path, help="where to write the .safetensors weights")
    for name, value in vars(TrainConfig(Path(), Path())).items():
        if name not in ("data", "output") and value is not None:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    train(TrainConfig(**vars(args)))
