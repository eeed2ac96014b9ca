"""Fitting the ``context`` entropy method's model on TAEF2 latents of training folders (never Kodak).

Each image is encoded at the rate-control scales; each step draws latent crops, quantizes them at a random
uniform step (log-uniform in ``[min_step, max_step]``, as ``uniform`` mode does) and fits, by maximum
likelihood of the discretized logistic, the model of :mod:`latentcodec.engine.entropy.context_model`: mean and
log-scale linear in the same integer features the engine computes. The weights are then rounded to the
engine's fixed point, and the tables are re-estimated from the residuals the integer model sees on the fitting
images (smoothed towards the logistic) and written as 24-bit integer frequencies; the held-out images are coded
for real (bytes against zstd) with both kinds of table. Seeded; a few minutes on 2 CPU cores.

``latentcodec-lab train-entropy OUTPUT --folders DATA...`` runs it; the shipped model is the default run on
``../shared/data/photos`` (log: ``training/runs/context_model_flux2.log``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentcodec.engine.entropy import context_coder, zstd
from latentcodec.engine.entropy import context_model as cm
from latentcodec.engine.images import image_files
from latentcodec.engine.models import load_model
from latentcodec.training.common import add_config_arguments, cached, printer


@dataclass(frozen=True)
class EntropyConfig:
    data: tuple[Path, ...]
    output: Path
    model: str = "taef2"
    groups: int = 4
    hidden: int = 16  # ReLU units per channel
    iterations: int = 4000
    batch: int = 24
    crop: int = 24  # latent pixels per side
    lr: float = 0.01
    min_step: float = 0.4
    max_step: float = 6.0
    scales: tuple[float, ...] = (1.0, 0.71, 0.5, 0.35)
    scale_min: float = math.log(0.04)  # the tables' log-scale range
    scale_max: float = math.log(60.0)
    bins: int = 48
    holdout: int = 4  # images per folder (last by name) kept out of the fit and coded for the report
    seed: int = 0
    limit: int | None = None
    cache: Path | None = None
    report_steps: tuple[float, ...] = field(default=(0.5, 1.0, 2.0, 4.0))
    table_steps: tuple[float, ...] = field(default=(0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0))
    prior_count: float = 200.0  # symbols' worth of the logistic in each refitted table


@dataclass
class Sample:
    latents: torch.Tensor  # [C, h, w] float16
    name: str
    scale: float


def encode_folder(config: EntropyConfig) -> list[list[Sample]]:
    """Per folder, each image's latents at each of ``config.scales``."""
    model = load_model(config.model)
    groups = []
    for folder in config.data:
        samples = []
        for path in image_files(folder)[: config.limit]:
            rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
            for scale in config.scales:
                size = (max(8, round(rgb.shape[1] * scale)), max(8, round(rgb.shape[2] * scale)))
                image = F.interpolate(rgb[None], size=size, mode="bicubic", antialias=True) if scale < 1 else rgb[None]
                with torch.no_grad():
                    latents = model.encode(image.clamp(0, 1))[0].half()
                samples.append(Sample(latents, path.name, scale))
        groups.append(samples)
    return groups


class FloatModel(torch.nn.Module):
    """The engine's model in floating point (same features), for fitting."""

    def __init__(self, channels: int, groups: int, hidden: int) -> None:
        super().__init__()
        self.channels, self.groups = channels, groups
        inputs = (cm.NEIGHBOURS + 1) * channels + cm.ACTIVITIES
        self.hidden_weights = torch.nn.Parameter(torch.randn(channels, hidden, inputs) * 0.01)
        self.hidden_bias = torch.nn.Parameter(torch.zeros(channels, hidden))
        self.hidden_mean = torch.nn.Parameter(torch.zeros(channels, hidden))
        self.hidden_scale = torch.nn.Parameter(torch.zeros(channels, hidden))
        self.mean_weights = torch.nn.Parameter(torch.zeros(channels, (cm.NEIGHBOURS + 1) * channels))
        self.mean_bias = torch.nn.Parameter(torch.zeros(channels))
        self.scale_weights = torch.nn.Parameter(torch.zeros(channels, cm.ACTIVITIES))
        self.scale_bias = torch.nn.Parameter(torch.zeros(channels))
        size = channels // groups
        group = torch.arange(channels) // size
        self.register_buffer("earlier", (group[None, :] < group[:, None]).float())  # [C, C'] co-located mask
        neighbours = torch.ones(channels, cm.NEIGHBOURS, channels)
        self.register_buffer("visible", torch.cat([neighbours, self.earlier[:, None]], 1))  # [C, 5, C']
        table = np.round(np.log1p(np.arange(cm.LOG_TABLE_SIZE)) * (1 << cm.LOG_BITS))
        self.register_buffer("log_table", torch.from_numpy(table).float() / (1 << cm.LOG_BITS))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Bits of each symbol of ``q`` ``[B, C, H, W]`` (integers as floats)."""
        c = q.shape[1]
        grid = F.pad(q, (1, 1, 1, 0))
        neighbours = torch.stack(
            [grid[:, :, 1:, :-2], grid[:, :, :-1, 1:-1], grid[:, :, :-1, :-2], grid[:, :, :-1, 2:]], 1
        )  # [B, 4, C, H, W]
        weights = self.mean_weights.view(c, cm.NEIGHBOURS + 1, c)
        mean = torch.einsum("ckd,bkdhw->bchw", weights[:, : cm.NEIGHBOURS], neighbours)
        mean = mean + torch.einsum("cd,bdhw->bchw", weights[:, cm.NEIGHBOURS] * self.earlier, q)
        mean = mean + self.mean_bias[:, None, None]
        magnitude = neighbours.abs()
        stacked = torch.einsum("cd,bdhw->bchw", self.earlier, q.abs())
        activity = torch.cat(
            [magnitude, magnitude.sum(2, keepdim=True).expand_as(magnitude), stacked[:, None]], 1
        ).clamp(max=cm.LOG_TABLE_SIZE - 1)
        logs = self.log_table[activity.long()]  # [B, 9, C, H, W]
        units = self.hidden_weights[..., : -cm.ACTIVITIES].reshape(c, -1, cm.NEIGHBOURS + 1, c) * self.visible[:, None]
        symbols = torch.cat([neighbours, q[:, None]], 1)  # [B, 5, C, H, W]
        pre = torch.einsum("cjkd,bkdhw->bcjhw", units, symbols)
        pre = pre + torch.einsum("cjk,bkchw->bcjhw", self.hidden_weights[..., -cm.ACTIVITIES :], logs)
        hidden = torch.relu(pre + self.hidden_bias[None, :, :, None, None])
        mean = mean + torch.einsum("cj,bcjhw->bchw", self.hidden_mean, hidden)
        log_scale = torch.einsum("ck,bkchw->bchw", self.scale_weights, logs) + self.scale_bias[:, None, None]
        log_scale = log_scale + torch.einsum("cj,bcjhw->bchw", self.hidden_scale, hidden)
        scale = log_scale.clamp(-4, 5).exp()
        upper = torch.sigmoid((q + 0.5 - mean) / scale)
        lower = torch.sigmoid((q - 0.5 - mean) / scale)
        return -torch.log2((upper - lower).clamp(min=1e-9))


def quantized(fitted: FloatModel, config: EntropyConfig) -> cm.ContextModel:
    """The engine's integer model of ``fitted``, with its probability tables."""
    step = (config.scale_max - config.scale_min) / config.bins
    centres = np.exp(config.scale_min + (np.arange(config.bins) + 0.5) * step)
    offsets = (np.arange(cm.PHASES) + 0.5) / cm.PHASES
    r = np.arange(-cm.RADIUS, cm.RADIUS + 1)
    rows = []
    for s in centres:
        for m in offsets:
            cdf = 0.5 + 0.5 * np.tanh((np.concatenate([r - 0.5, [r[-1] + 0.5]]) - m) / (2 * s))  # logistic
            cdf[0], cdf[-1] = 0.0, 1.0
            rows.append(_frequencies(np.diff(cdf)))
    mean_scale, scale_scale = 1 << cm.MEAN_BITS, 1 << (cm.SCALE_BITS - cm.LOG_BITS)
    earlier = torch.cat([torch.ones(fitted.channels, cm.NEIGHBOURS * fitted.channels), fitted.earlier], 1)
    hidden_units = np.concatenate(
        [
            (fitted.hidden_weights[..., : -cm.ACTIVITIES] * earlier[:, None]).detach().double().numpy()
            * (1 << cm.HIDDEN_BITS),
            fitted.hidden_weights[..., -cm.ACTIVITIES :].detach().double().numpy()
            * (1 << (cm.HIDDEN_BITS - cm.LOG_BITS)),
        ],
        axis=-1,
    )
    hidden_bits = cm.HIDDEN_BITS - cm.LOG_BITS
    with torch.no_grad():
        return cm.ContextModel(
            mean_weights=np.round((fitted.mean_weights * earlier).double().numpy() * mean_scale).astype(np.int64),
            mean_bias=np.round(fitted.mean_bias.double().numpy() * mean_scale).astype(np.int64),
            scale_weights=np.round(fitted.scale_weights.double().numpy() * scale_scale).astype(np.int64),
            scale_bias=np.round(fitted.scale_bias.double().numpy() * (1 << cm.SCALE_BITS)).astype(np.int64),
            hidden_weights=np.round(hidden_units).astype(np.int64),
            hidden_bias=np.round(fitted.hidden_bias.double().numpy() * (1 << cm.HIDDEN_BITS)).astype(np.int64),
            hidden_mean=np.round(fitted.hidden_mean.double().numpy() * mean_scale).astype(np.int64),
            hidden_scale=np.round(fitted.hidden_scale.double().numpy() * (1 << (cm.SCALE_BITS - hidden_bits))).astype(
                np.int64
            ),
            log_table=np.round(fitted.log_table.double().numpy() * (1 << cm.LOG_BITS)).astype(np.int64),
            scale_min=round(config.scale_min * (1 << cm.SCALE_BITS)),
            scale_step=round(step * (1 << cm.SCALE_BITS)),
            frequencies=np.stack(rows),
            groups=config.groups,
        )


def _frequencies(pmf: np.ndarray) -> np.ndarray:
    """A PMF as integer frequencies >= 1 summing to ``2**PRECISION``."""
    total = 1 << cm.PRECISION
    counts = np.maximum(1, np.floor(pmf * (total - len(pmf))).astype(np.int64))
    counts[np.argmax(counts)] += total - counts.sum()
    return counts


def refit_tables(model: cm.ContextModel, samples: list[Sample], config: EntropyConfig) -> cm.ContextModel:
    """The tables re-estimated from the residuals the integer model sees on ``samples`` (at ``table_steps``),
    each row smoothed towards its logistic with the weight of ``prior_count`` symbols."""
    counts = np.zeros(model.frequencies.shape, dtype=np.float64)
    for sample in samples:
        for step in config.table_steps:
            q = symbols(sample.latents, step).numpy().astype(np.int64)
            grid, (h, w) = cm.padded_grid(q), q.shape[1:]
            rows, cols = np.divmod(np.arange(h * w), w)
            for group in range(model.groups):
                centre, key = model.contexts(grid, rows, cols, group)
                residual = q[model.group_channels(group)].reshape(-1, h * w) - centre + cm.RADIUS
                cells = key.ravel() * cm.ALPHABET + residual.ravel()
                counts += np.bincount(cells, minlength=counts.size).reshape(counts.shape)
    prior = model.frequencies / float(1 << cm.PRECISION)
    smoothed = counts + config.prior_count * prior
    rows = [_frequencies(row / row.sum()) for row in smoothed]
    return replace(model, frequencies=np.stack(rows))


def save(model: cm.ContextModel, path: Path) -> None:
    from safetensors.numpy import save_file

    scalars = np.array([model.scale_min, model.scale_step, model.groups], dtype=np.int64)
    tensors = {
        "mean_weights": model.mean_weights.astype(np.int32),
        "mean_bias": model.mean_bias.astype(np.int32),
        "scale_weights": model.scale_weights.astype(np.int32),
        "scale_bias": model.scale_bias.astype(np.int32),
        "hidden_weights": model.hidden_weights.astype(np.int32),
        "hidden_bias": model.hidden_bias.astype(np.int32),
        "hidden_mean": model.hidden_mean.astype(np.int32),
        "hidden_scale": model.hidden_scale.astype(np.int32),
        "log_table": model.log_table.astype(np.int32),
        "frequencies": model.frequencies.astype(np.int32),
        "scalars": scalars,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def symbols(latents: torch.Tensor, step: float) -> torch.Tensor:
    return torch.round(latents.float() / step).clamp(-cm.SYMBOL_MAX, cm.SYMBOL_MAX)


def crops(samples: list[Sample], config: EntropyConfig, generator: torch.Generator) -> torch.Tensor:
    """A batch of quantized latent crops ``[B, C, crop, crop]``."""
    batch = []
    for _ in range(config.batch):
        sample = samples[int(torch.randint(len(samples), (1,), generator=generator))]
        h, w = sample.latents.shape[1:]
        size_h, size_w = min(config.crop, h), min(config.crop, w)
        i = int(torch.randint(h - size_h + 1, (1,), generator=generator))
        j = int(torch.randint(w - size_w + 1, (1,), generator=generator))
        u = float(torch.rand((), generator=generator))
        step = math.exp(math.log(config.min_step) + u * (math.log(config.max_step) - math.log(config.min_step)))
        crop = symbols(sample.latents[:, i : i + size_h, j : j + size_w], step)
        batch.append(F.pad(crop, (0, config.crop - size_w, 0, config.crop - size_h)))
    return torch.stack(batch)


def report(model: cm.ContextModel, held_out: list[Sample], steps: tuple[float, ...]) -> list[str]:
    """Bytes of the held-out images, context coder against zstd, per scale and step."""
    lines = []
    for scale in sorted({s.scale for s in held_out}, reverse=True):
        for step in steps:
            ours, theirs = 0, 0
            for sample in (s for s in held_out if s.scale == scale):
                q = symbols(sample.latents, step).numpy().astype(np.int8)
                ours += len(context_coder.encode(q, model))
                theirs += len(zstd.compress(q.tobytes()))
            lines.append(f"scale {scale} step {step}: zstd {theirs} context {ours} ({ours / theirs - 1:+.1%})")
    return lines


def fit(
    config: EntropyConfig, build: Callable[[int], torch.nn.Module], log: Callable[[str], None]
) -> tuple[torch.nn.Module, list[Sample], list[Sample]]:
    """Seeded: the encoded folders split into fitting and held-out images (the last ``holdout`` of each folder by
    name), and the float model ``build(channels)`` fitted by maximum likelihood on random quantized crops."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    recipe = {"model": config.model, "data": [str(d) for d in config.data], "scales": config.scales}
    folders = cached(config.cache, {**recipe, "limit": config.limit}, lambda: encode_folder(config), Sample)
    names = [sorted({s.name for s in folder}) for folder in folders]
    held = [set(n[-config.holdout :]) if len(n) > config.holdout else set() for n in names]
    fitting = [s for folder, h in zip(folders, held, strict=True) for s in folder if s.name not in h]
    held_out = [s for folder, h in zip(folders, held, strict=True) for s in folder if s.name in h]
    fitted = build(fitting[0].latents.shape[0])
    optimizer = torch.optim.Adam(fitted.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.iterations)
    start = time.time()
    for iteration in range(1, config.iterations + 1):
        loss = fitted(crops(fitting, config, generator)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if iteration % 50 == 0 or iteration == config.iterations:
            log(f"iteration {iteration}: {loss.item():.4f} bits/symbol ({time.time() - start:.0f} s)")
    return fitted, fitting, held_out


def train(config: EntropyConfig, log: Callable[[str], None] = print) -> cm.ContextModel:
    fitted, fitting, held_out = fit(config, lambda channels: FloatModel(channels, config.groups, config.hidden), log)
    model = quantized(fitted, config)
    for line in report(model, held_out, config.report_steps):
        log(f"logistic tables: {line}")
    model = refit_tables(model, fitting, config)
    save(model, config.output)
    for line in report(model, held_out, config.report_steps):
        log(f"fitted tables: {line}")
    return model


def run_command(
    argv: list[str] | None, prog: str, description: str | None, config: type[EntropyConfig], train: Callable
) -> None:
    """An entropy-model script's command line: ``OUTPUT --folders DATA... --log FILE`` and a flag per ``config``
    field, then ``train(config, log)``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("output", type=Path, help="where to write the .safetensors model")
    parser.add_argument("--folders", type=Path, nargs="+", default=[Path("../shared/data/photos")])
    add_config_arguments(parser, config((), Path()), skip=("output", "data"))
    parser.add_argument("--log", type=Path, help="append the log here too")
    args = vars(parser.parse_args(argv))
    log = printer(args.pop("log"))
    args["data"] = tuple(args.pop("folders"))
    train(config(**args), log)


def main(argv: list[str] | None = None) -> None:
    run_command(argv, "latentcodec-lab train-entropy", __doc__, EntropyConfig, train)
