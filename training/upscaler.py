"""Training the resizers of the downscaled operating points: the upscaler (``taef2-q4``'s; ``taef2-q2``'s with
``--source-model taef2 --no-channel-steps --no-told-level --scales 0.71 0.5 0.35 --min-step 0.35 --max-step 1.4
--steps-per-image 2 --steps 4000``) and a synthesis stage
(``--kind synthesis``: :class:`~latentcodec.engine.models.synthesis.Synthesizer`, not shipped).

Images: ``../shared/data/photos`` (natural photos, first) and ``../shared/data/train`` (aerial, greyscale); never
Kodak. Each image is downscaled as the encoder downscales (the rate-control scales), encoded, its latents
quantized by the uniform coder (``Coder.simulate``; steps per channel unless ``--no-channel-steps``) at steps drawn
log-uniformly from the range rate control picks at those scales, and decoded by the ``source_model`` as the codec
decodes (a switched model's decoders told the noise level): the small pictures the codec resizes. Each training step
resizes random crops of them to the original's size and scores them against the original: L1 + MS-SSIM + L1 of
image gradients (the decoder's loss, :func:`latentcodec.training.decoder.loss_terms`), and for the synthesis stage
a texture term: the L1 between the local high-frequency energy of the output and the original's, which a blur
cannot meet (no pretrained perceptual network is available here).

Seeded; checkpoints every ``checkpoint_every`` steps and resumes from the last one; ends by scoring the held-out
photos against bicubic resizing and writing fp16 safetensors. ``latentcodec-lab train-upscaler OUT`` runs it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from latentcodec.bench.metrics import psnr, ssimulacra2
from latentcodec.engine.coders import simulate
from latentcodec.engine.images import downscaled, image_files, pad_to_multiple
from latentcodec.engine.models import load_model
from latentcodec.engine.models.synthesis import Synthesizer
from latentcodec.engine.models.upscaler import RATE_LADDER, Upscaler, bicubic
from latentcodec.training.common import cached, fit, save_fp16, training_main
from latentcodec.training.decoder import SHARED, load_image, loss_terms

UPSCALER_LAYOUT = {"width": 48, "depth": 4}  # the engine builds the shipped upscaler with these
SYNTHESIS_WIDTHS = (48, 96, 192)  # and the shipped synthesis stage with these
SCALES = {"upscaler": RATE_LADDER[1:], "synthesis": (0.71, 0.5, 0.35, 0.25)}  # the scales each kind learns


@dataclass(frozen=True)
class UpscalerConfig:
    output: Path
    folders: tuple[Path, ...] = (SHARED / "photos", SHARED / "train")
    kind: str = "upscaler"  # or "synthesis"
    source_model: str = "taef2-q3"  # the model whose decodes it resizes
    channel_steps: bool = True  # whether its streams have steps per channel
    told_level: bool = True  # the upscaler: whether it reads the noise level (taef2-q2's does not)
    steps: int = 3000
    batch: int = 8
    crop: int = 128  # output pixels per side
    lr: float = 1e-3
    min_step: float = 0.4
    max_step: float = 2.0
    steps_per_image: int = 1  # quantization steps drawn per image and scale
    scales: tuple[float, ...] | None = None  # None: the kind's (SCALES)
    ssim_weight: float = 0.4
    edge_weight: float = 0.5
    texture_weight: float = 0.0  # the synthesis stage's texture term
    holdout: int = 4  # photos (last by name) kept out of training, scored at the end
    seed: int = 0
    limit: int | None = None  # images per folder (tests)
    max_side: int = 768  # images are shrunk to this longest side first (memory and time)
    checkpoint_every: int = 250
    cache: Path | None = None


@dataclass
class Sample:
    base: torch.Tensor  # [3, H, W] float16: TAEF2's decode of the downscaled, quantized image, bicubic to size
    image: torch.Tensor  # [3, H, W] uint8: the original
    ratio: float  # output side over decoded side
    level: float = 0.0  # the stream's noise level (what the synthesis stage is told)


def _load(path: Path, max_side: int) -> torch.Tensor:
    return torch.from_numpy(np.array(load_image(path, max_side))).permute(2, 0, 1)


@torch.no_grad()
def decoded_small(
    model, image: torch.Tensor, scale: float, step: float, channel_steps: bool
) -> tuple[torch.Tensor, float]:
    """What the codec's decoder hands the resize at ``scale`` and uniform ``step`` (no denoiser): ``[3, h, w]``, and
    the noise level the stream records."""
    rgb = downscaled(image.float() / 255, scale)
    latents = model.encode(pad_to_multiple(rgb[None], model.spec.downsample))
    quantized = simulate(latents, mode="uniform", step=step, channel_steps=channel_steps)
    decoded = model.decode(quantized.latents, quantized.noise if model.spec.conditioned else None)
    return decoded[0, :, : rgb.shape[1], : rgb.shape[2]].clamp(0, 1), float(quantized.noise[0])


def learned(config: UpscalerConfig) -> tuple[float, ...]:
    """The scales a run learns: ``config.scales`` or its kind's."""
    return tuple(config.scales or SCALES[config.kind])


def upscaler_layout(config: UpscalerConfig) -> dict:
    """What the upscaler's file records: its layout, and the scales rate control may offer (1: no resize)."""
    offered = tuple(sorted({1.0, *learned(config)}, reverse=True))
    return {**UPSCALER_LAYOUT, "told_level": config.told_level, "scales": offered}


def resizer(config: UpscalerConfig) -> Upscaler:
    """An untrained resizer of ``config.kind`` in the shipped layout."""
    return Synthesizer(SYNTHESIS_WIDTHS) if config.kind == "synthesis" else Upscaler(**upscaler_layout(config))


def make_samples(paths: list[Path], config: UpscalerConfig, generator: torch.Generator, log=print):
    model = load_model(config.source_model)
    groups = []
    span = math.log(config.max_step / config.min_step)
    for n, path in enumerate(paths):
        image = _load(path, config.max_side)
        group = []
        for scale in learned(config):
            for _ in range(config.steps_per_image):
                step = config.min_step * math.exp(span * float(torch.rand((), generator=generator)))
                small, level = decoded_small(model, image, scale, step, config.channel_steps)
                ratio = math.sqrt(image.shape[1] * image.shape[2] / (small.shape[-2] * small.shape[-1]))
                group.append(Sample(bicubic(small[None], tuple(image.shape[1:]))[0].half(), image, ratio, level))
        groups.append(group)
        if (n + 1) % 10 == 0:
            log(f"decoded {n + 1}/{len(paths)} images")
    return groups


def draw_batch(samples: list[Sample], generator: torch.Generator, config: UpscalerConfig):
    """Crops of the bicubic upscales ``[B, 3, c, c]``, their ratios and noise levels ``[B]`` and the originals'
    crops; crops start at even pixels, as the upscaler's half-resolution grid does on whole images."""
    bases, ratios, levels, targets = [], [], [], []
    for _ in range(config.batch):
        sample = samples[int(torch.randint(len(samples), (), generator=generator))]
        height, width = sample.image.shape[1:]
        y = 2 * int(torch.randint((height - config.crop) // 2 + 1, (), generator=generator))
        x = 2 * int(torch.randint((width - config.crop) // 2 + 1, (), generator=generator))
        window = (slice(None), slice(y, y + config.crop), slice(x, x + config.crop))
        bases.append(sample.base[window].float())
        targets.append(sample.image[window].float() / 255)
        ratios.append(sample.ratio)
        levels.append(sample.level)
    return torch.stack(bases), torch.tensor(ratios), torch.tensor(levels), torch.stack(targets)


def batch_loss(model: Upscaler, bases, ratios, levels, targets, config: UpscalerConfig) -> dict[str, torch.Tensor]:
    out = bases + model.residual(bases, ratios, levels)
    # the synthesis stage: clamped with the gradient of the unclamped (a clamp's zero gradient trapped a run)
    out = out + (out.clamp(0, 1) - out).detach() if config.kind == "synthesis" else out.clamp(0, 1)
    terms = loss_terms(out, targets, config)
    if config.texture_weight:
        terms["texture"] = texture_loss(out, targets)
        terms["total"] = terms["total"] + config.texture_weight * terms["texture"]
    return terms


def texture_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the local high-frequency amplitude (RMS over 9x9 of the image less its 5x5 mean) of ``out`` and
    ``target``: as low for any texture of the right strength, high for a blur."""

    def amplitude(x: torch.Tensor) -> torch.Tensor:
        detail = x - F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
        return (F.avg_pool2d(detail.square(), 9, stride=1, padding=4, count_include_pad=False) + 1e-6).sqrt()

    return (amplitude(out) - amplitude(target))[..., 8:-8, 8:-8].abs().mean()


def train(config: UpscalerConfig, log=print) -> Upscaler:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    for folder in config.folders:
        if "kodak" in str(folder).lower():
            raise ValueError("refusing to train on Kodak: it is the benchmark")
    photos, *others = [image_files(folder)[: config.limit] for folder in config.folders]
    held = config.holdout if 0 < config.holdout < len(photos) else 0
    paths = photos[: len(photos) - held] + [p for group in others for p in group]
    started = time.perf_counter()
    recipe = {"paths": [str(p) for p in paths], "config": {k: str(v) for k, v in vars(config).items()}}
    kept = ("source_model", "channel_steps", "min_step", "max_step", "steps_per_image", "seed")
    recipe["config"] = {k: recipe["config"][k] for k in kept} | {"scales": str(learned(config))}
    groups = cached(config.cache, recipe, lambda: make_samples(paths, config, generator, log), Sample)
    samples = [s for group in groups for s in group]
    log(f"{len(samples)} samples from {len(paths)} images in {time.perf_counter() - started:.0f} s")

    model = resizer(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    warmup = max(0.05, 2 / config.steps)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=warmup)
    parts = {"model": model, "optimizer": optimizer, "schedule": schedule}
    losses = lambda: batch_loss(model, *draw_batch(samples, generator, config), config)  # noqa: E731
    fit(parts, losses, generator, config, log, 50, started)
    layout = (
        {"kind": "synthesis", "widths": SYNTHESIS_WIDTHS} if config.kind == "synthesis" else upscaler_layout(config)
    )
    save_fp16(model, config.output, {"steps": str(config.steps), "seed": str(config.seed), **layout})
    if held:
        for line in validate(model, photos[len(photos) - held :], config):
            log(line)
    return model


@torch.no_grad()
def validate(model: Upscaler, paths: list[Path], config: UpscalerConfig) -> list[str]:
    """Mean PSNR and SSIMULACRA2 of whole held-out photos, bicubic against the upscaler, per scale and step."""
    base = load_model(config.source_model)
    lines = []
    images = [_load(p, config.max_side) for p in paths]
    for scale in (0.71, 0.5, 0.35, 0.25):
        for step in (0.6, 1.2):
            scores = []
            for image in images:
                small, level = decoded_small(base, image, scale, step, config.channel_steps)
                reference, size = image.permute(1, 2, 0).numpy(), tuple(image.shape[1:])
                row = []
                for out in (bicubic(small[None], size), model(small[None], size, level)):
                    pixels = (out[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
                    row += [psnr(reference, pixels), ssimulacra2(reference, pixels)]
                scores.append(row)
            b_psnr, b_s2, u_psnr, u_s2 = np.mean(scores, axis=0)
            lines.append(
                f"held-out step {step} @ {scale}: PSNR bicubic {b_psnr:.2f}, {config.kind} {u_psnr:.2f} "
                f"({u_psnr - b_psnr:+.2f}) dB; SSIMULACRA2 {b_s2:.1f}, {u_s2:.1f} ({u_s2 - b_s2:+.1f})"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    training_main(argv, "latentcodec-lab train-upscaler", __doc__, UpscalerConfig, train)
