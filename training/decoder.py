"""Fine-tuning TAEF2's decoder for the latents the codec sends (the ``taef2-q`` model's decoder).

Images: ``../shared/data/photos`` (natural photos, first) and ``../shared/data/train`` (aerial, greyscale); never
Kodak. Each image is encoded once by TAEF2's encoder at the rate-control scales (1, 0.71, 0.5, 0.35), as the
codec encodes downscaled operating points. Each step draws latent crops and quantizes them through the codec's own
coders (``Coder.simulate``): uniform steps (log-uniform), dithered palettes fitted on the window around the crop, or
scalar8; the noise level the decoder is told is the window's, as the encoder records it for the whole image. The
loss follows what people see: L1 + MS-SSIM (3 scales) + L1 of image gradients (edges), scored away from crop borders.

Seeded; checkpoints every ``checkpoint_every`` steps and resumes from the last one; ends by scoring the held-out
photos at the codec's operating points against the original decoder and writing fp16 safetensors.
``latentcodec-lab train-decoder OUT.safetensors [options]`` runs it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentcodec.engine.coders import simulate
from latentcodec.engine.images import image_files, pad_to_multiple, psnr, to_array
from latentcodec.engine.models import load_model
from latentcodec.engine.models.conditioned_decoder import ConditionedTinyDecoder
from latentcodec.training.common import cached, fit, save_fp16, training_main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class TrainConfig:
    output: Path
    folders: tuple[Path, ...] = (SHARED / "photos", SHARED / "train")
    steps: int = 1500
    batch: int = 8
    crop: int = 16  # latent pixels per side (128 image pixels)
    window: int = 32  # latent pixels per side of the region a crop's palette and noise level come from
    lr: float = 1e-4
    film_lr: float = 1e-3
    min_step: float = 0.3
    max_step: float = 4.0
    palette_share: float = 0.3
    scalar8_share: float = 0.1
    scales: tuple[float, ...] = (1.0, 0.71, 0.5, 0.35)
    ssim_weight: float = 0.4
    edge_weight: float = 0.5
    holdout: int = 4  # photos (last by name) kept out of training, scored at the end
    seed: int = 0
    channel_steps: bool = False  # the shipped weights learned one step for all channels (README, "Steps per channel")
    limit: int | None = None  # images per folder (tests)
    max_side: int = 1024  # images are shrunk to this longest side before encoding (memory and time)
    checkpoint_every: int = 100
    cache: Path | None = None


@dataclass
class Sample:
    image: torch.Tensor  # [3, 8h, 8w] uint8
    latents: torch.Tensor  # [C, h, w] float32


def load_image(path: Path, max_side: int) -> Image.Image:
    """An RGB image shrunk to ``max_side`` pixels on its longest side (LANCZOS) when larger."""
    image = Image.open(path).convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _scaled(image: Image.Image, scale: float) -> torch.Tensor:
    """``[3, H, W]`` uint8 at ``scale`` (antialiased bicubic, as the encoder scales), cropped to multiples of 8."""
    rgb = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255
    if scale < 1:
        size = (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[2] * scale)))
        rgb = F.interpolate(rgb[None], size=size, mode="bicubic", antialias=True)[0].clamp_(0, 1)
    h, w = rgb.shape[1] // 8 * 8, rgb.shape[2] // 8 * 8
    return (rgb[:, :h, :w] * 255).round_().to(torch.uint8)


@torch.no_grad()
def encode_images(paths: list[Path], config: TrainConfig, log=print) -> list[list[Sample]]:
    """Each image at each scale: pixels and TAEF2 latents."""
    model = load_model("taef2")
    groups = []
    for n, path in enumerate(paths):
        image = load_image(path, config.max_side)
        group = []
        for scale in config.scales:
            rgb = _scaled(image, scale)
            if min(rgb.shape[1:]) < 8 * config.window:
                continue
            group.append(Sample(rgb, model.encode(rgb[None].float() / 255)[0].float()))
        groups.append(group)
        if (n + 1) % 10 == 0:
            log(f"encoded {n + 1}/{len(paths)} images")
    return groups


def quantize(window: torch.Tensor, kind: str, generator: torch.Generator, config: TrainConfig):
    """A latent window ``[C, H, W]`` quantized by the codec's coder of mode ``kind`` (uniform, palette, scalar8), and
    its noise level as the stream records it. The window stands for a whole image: palettes, scalar8 ranges and the
    noise level are the window's."""
    u = float(torch.rand((), generator=generator))
    if kind == "uniform":
        knobs = {"step": math.exp(math.log(config.min_step) + u * math.log(config.max_step / config.min_step))}
    elif kind == "palette":
        knobs = {"palette_size": 2 ** (3 + int(u * 6))}  # 8..256
    else:
        knobs = {}
    quantized, sigma = simulate(window[None], mode=kind, channel_steps=config.channel_steps, **knobs)
    return quantized[0], sigma[0]


def draw_batch(samples: list[Sample], generator: torch.Generator, config: TrainConfig):
    """Quantized latent crops ``[B, C, c, c]``, their noise levels ``[B]`` and the pixels ``[B, 3, 8c, 8c]``."""
    latents, sigmas, images = [], [], []
    for _ in range(config.batch):
        sample = samples[int(torch.randint(len(samples), (), generator=generator))]
        _, h, w = sample.latents.shape
        wy = int(torch.randint(h - config.window + 1, (), generator=generator))
        wx = int(torch.randint(w - config.window + 1, (), generator=generator))
        window = sample.latents[:, wy : wy + config.window, wx : wx + config.window]
        pick = float(torch.rand((), generator=generator))
        kind = (
            "palette"
            if pick < config.palette_share
            else "scalar8"
            if pick < config.palette_share + config.scalar8_share
            else "uniform"
        )
        quantized, sigma = quantize(window, kind, generator, config)
        y = int(torch.randint(config.window - config.crop + 1, (), generator=generator))
        x = int(torch.randint(config.window - config.crop + 1, (), generator=generator))
        latents.append(quantized[:, y : y + config.crop, x : x + config.crop])
        sigmas.append(sigma)
        top, left = 8 * (wy + y), 8 * (wx + x)
        images.append(sample.image[:, top : top + 8 * config.crop, left : left + 8 * config.crop])
    return torch.stack(latents), torch.stack(sigmas), torch.stack(images).float() / 255


def loss_terms(decoded: torch.Tensor, target: torch.Tensor, config: TrainConfig) -> dict[str, torch.Tensor]:
    """L1, 1 - MS-SSIM (3 scales) and the L1 of horizontal and vertical gradients, inside an 8-pixel margin."""
    from pytorch_msssim import ms_ssim

    d, t = decoded[..., 8:-8, 8:-8], target[..., 8:-8, 8:-8]
    l1 = (d - t).abs().mean()
    ssim = 1 - ms_ssim(d, t, data_range=1.0, win_size=7, weights=[0.0448, 0.2856, 0.3001])
    edges = sum((dd - tt).abs().mean() for dd, tt in zip(_gradients(d), _gradients(t), strict=True))
    return {
        "l1": l1,
        "ssim": ssim,
        "edges": edges,
        "total": l1 + config.ssim_weight * ssim + config.edge_weight * edges,
    }


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def conditioned_from_taef2() -> ConditionedTinyDecoder:
    """The conditioned decoder with TAEF2's decoder weights (identical output before training)."""
    base = load_model("taef2")
    model = ConditionedTinyDecoder(base.spec.latent_channels)
    model.decoder.load_state_dict(base.decoder.state_dict())
    return model


def train(config: TrainConfig, log=print) -> ConditionedTinyDecoder:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    photos, *others = [image_files(folder)[: config.limit] for folder in config.folders]
    for folder in config.folders:
        if "kodak" in str(folder).lower():
            raise ValueError("refusing to train on Kodak: it is the benchmark")
    held = config.holdout if 0 < config.holdout < len(photos) else 0
    train_paths = photos[: len(photos) - held] + [p for paths in others for p in paths]
    started = time.perf_counter()
    groups = _cached(train_paths, config, log)
    samples = [s for group in groups for s in group]
    log(f"{len(samples)} training samples from {len(train_paths)} images in {time.perf_counter() - started:.0f} s")

    model = conditioned_from_taef2().train()
    film = [p for n, p in model.named_parameters() if n.startswith("film")]
    base = [p for n, p in model.named_parameters() if not n.startswith("film")]
    optimizer = torch.optim.AdamW([{"params": base, "lr": config.lr}, {"params": film, "lr": config.film_lr}])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, [config.lr, config.film_lr], total_steps=config.steps, pct_start=0.05
    )
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}

    def losses() -> dict[str, torch.Tensor]:
        latents, sigma, target = draw_batch(samples, generator, config)
        return loss_terms(model(latents, sigma).clamp(0, 1), target, config)

    fit(parts, losses, generator, config, log, 25, started)
    save_fp16(model, config.output, {"steps": str(config.steps), "seed": str(config.seed)})
    if held:
        for line in validate(model, photos[len(photos) - held :], config):
            log(line)
    return model


def _cached(paths: list[Path], config: TrainConfig, log) -> list[list[Sample]]:
    recipe = {"paths": [str(p) for p in paths], "scales": list(config.scales), "max_side": config.max_side}
    return cached(config.cache, recipe, lambda: encode_images(paths, config, log), Sample)


# the codec's operating points: (label, scale, kind, knob)
POINTS = (
    ("step 1 @ 1", 1.0, "uniform", 1.0),
    ("step 2 @ 1", 1.0, "uniform", 2.0),
    ("step 3 @ 1", 1.0, "uniform", 3.0),
    ("step 1 @ 0.5", 0.5, "uniform", 1.0),
    ("step 0.5 @ 0.35", 0.35, "uniform", 0.5),
    ("palette 8 @ 1", 1.0, "palette", 8),
    ("palette 32 @ 1", 1.0, "palette", 32),
)


@torch.no_grad()
def validate(model: ConditionedTinyDecoder, paths: list[Path], config: TrainConfig) -> list[str]:
    """Mean PSNR of whole held-out photos at :data:`POINTS`, original decoder against ``model`` (the codec's
    own quantization, whole-image noise levels)."""
    base = load_model("taef2")
    lines = []
    images = [load_image(p, config.max_side) for p in paths]
    for label, scale, kind, knob in POINTS:
        scores = []
        for image in images:
            reference = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)
            rgb = _scaled(image, scale)
            latents = base.encode(pad_to_multiple(rgb[None].float() / 255, 8))
            knobs = {"step" if kind == "uniform" else "palette_size": knob}
            quantized, sigma = simulate(latents, mode=kind, channel_steps=config.channel_steps, **knobs)
            decodes = (base.decode(quantized), model(quantized, sigma))
            row = []
            for decoded in decodes:
                decoded = decoded.clamp(0, 1)[0, :, : rgb.shape[1], : rgb.shape[2]]
                if scale < 1:
                    size = tuple(reference.shape[1:])
                    decoded = F.interpolate(decoded[None], size=size, mode="bicubic")[0].clamp_(0, 1)
                    row.append(psnr(to_array(reference), to_array(decoded)))
                else:
                    row.append(psnr(to_array(reference[:, : rgb.shape[1], : rgb.shape[2]]), to_array(decoded)))
            scores.append(row)
        original, tuned = np.mean(scores, axis=0)
        lines.append(f"held-out {label}: PSNR original {original:.2f}, tuned {tuned:.2f} ({tuned - original:+.2f}) dB")
    return lines


def main(argv: list[str] | None = None) -> None:
    training_main(argv, "latentcodec-lab train-decoder", __doc__, TrainConfig, train)
