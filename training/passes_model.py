"""Fitting the ``passes`` entropy method's model on TAEF2 latents of training folders (never Kodak).

The data, crops, random steps and table re-estimation are those of :mod:`.entropy_model` (the ``context``
method's script); the model is :mod:`latentcodec.engine.entropy.passes_model`'s, in floating point over the same
features (computed by the engine's own ``neighbourhoods``): one network per step, its weights masked to what the
step may see. After the fit, the weights are rounded to the engine's integers (int8 hidden weights scaled per unit,
14-bit output weights), the tables re-estimated from the residuals the integer model sees, and the held-out images
coded for real against zstd and the ``context`` method. Seeded.

``latentcodec-lab train-passes OUTPUT --folders DATA...`` runs it; the shipped ``passes`` model is the default run on
``../shared/data/photos`` (log: ``training/runs/passes_model_v2_flux2.log``), ``passes_v1``'s the run with
``--hidden 32 --side 0`` (log: ``training/runs/passes_model_flux2.log``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from latentcodec.engine.entropy import context_coder, passes_coder, zstd
from latentcodec.engine.entropy import passes_model as pm
from latentcodec.engine.entropy.context_model import RADIUS
from latentcodec.engine.entropy.latent_stage import context_model
from latentcodec.training.entropy_model import EntropyConfig, Sample, _frequencies, fit, run_command, symbols


@dataclass(frozen=True)
class PassesConfig(EntropyConfig):
    hidden: int = 128  # ReLU units per step (shared by the group's channels; the first model, passes_v1: 32)
    side: int = 8  # side features (payload bytes): mean log-magnitudes of the first channels (passes_v1: none)


class FloatPassesModel(torch.nn.Module):
    """The engine's model in floating point (same features and masks), for fitting."""

    def __init__(self, channels: int, groups: int, hidden: int, side: int = 0) -> None:
        super().__init__()
        self.channels, self.groups, self.side = channels, groups, side
        steps, outputs = len(pm.PASSES) * groups, 2 * (channels // groups)
        inputs = 2 * len(pm.OFFSETS) * channels + side
        self.hidden_weights = torch.nn.Parameter(torch.randn(steps, inputs, hidden) * 0.01)
        self.hidden_bias = torch.nn.Parameter(torch.zeros(steps, hidden))
        self.out_z = torch.nn.Parameter(torch.zeros(steps, inputs, outputs))
        self.out_hidden = torch.nn.Parameter(torch.zeros(steps, hidden, outputs))
        self.out_bias = torch.nn.Parameter(torch.zeros(steps, outputs))
        self.register_buffer("mask", pm.visible(channels, groups, side)[..., None].float())
        self.register_buffer("log_table", pm.LOG_TABLE.float())
        # features as the network sees them while fitting: log-magnitudes back in natural-log units (the integer
        # model's weights absorb the factor), so both kinds of feature are of a size
        per_offset = torch.cat([torch.ones(channels), torch.full((channels,), 1 / pm.LOG_SCALE)])
        scale = torch.cat([per_offset.repeat(len(pm.OFFSETS)), torch.full((side,), 1 / pm.LOG_SCALE)])
        self.register_buffer("feature_scale", scale)

    def features(self, q: torch.Tensor, p: int) -> torch.Tensor:
        z = pm.neighbourhoods(pm.with_logs(q, self.log_table), p)
        if self.side:  # the engine's integer side features of each crop, as its payload would carry them
            side = pm.side_info(q.to(torch.int8), self.side).float()
            z = torch.cat([z, side[:, None].expand(-1, z.shape[1], -1)], 2)
        return z * self.feature_scale  # [B, n, F]

    def outputs(self, z: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and natural log-scale ``[..., Cg]`` of one step."""
        mask = self.mask[step]
        hidden = torch.relu(z @ (self.hidden_weights[step] * mask) + self.hidden_bias[step])
        out = z @ (self.out_z[step] * mask) + hidden @ self.out_hidden[step] + self.out_bias[step]
        return out.chunk(2, -1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Bits of every symbol of ``q`` ``[B, C, H, W]`` (integers as floats)."""
        bits, size = [], self.channels // self.groups
        for p, (pi, pj) in enumerate(pm.PASSES):
            z = self.features(q, p)
            for g in range(self.groups):
                mean, log_scale = self.outputs(z, p * self.groups + g)
                x = q[:, g * size : (g + 1) * size, pi::2, pj::2].flatten(2).transpose(1, 2)  # [B, n, Cg]
                scale = log_scale.clamp(-4, 5).exp()
                upper, lower = torch.sigmoid((x + 0.5 - mean) / scale), torch.sigmoid((x - 0.5 - mean) / scale)
                bits.append(-torch.log2((upper - lower).clamp(min=1e-9)).flatten())
        return torch.cat(bits)


def _split14(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integers ``|w| <= 16320`` as int8 planes with ``w = 128 * high + low``."""
    low = (weights + 64) % 128 - 64
    return ((weights - low) // 128).astype(np.int8), low.astype(np.int8)


def quantized(fitted: FloatPassesModel, config: PassesConfig) -> pm.PassesModel:
    """The engine's integer model of ``fitted``, with logistic tables."""
    with torch.no_grad():
        scale = fitted.feature_scale[:, None]  # on the integer features
        hidden = (fitted.hidden_weights * fitted.mask * scale).double().numpy()  # [S, F, K]
        peak = np.abs(hidden).max(1)  # [S, K]
        unit_scale = np.where(peak > 0, 127 / np.maximum(peak, 1e-12), 1.0)
        out_scale = 1 << pm.OUT_BITS
        out_z = np.clip(np.round((fitted.out_z * fitted.mask * scale).double().numpy() * out_scale), -16320, 16320)
        high, low = _split14(out_z.astype(np.int64))
        out_hidden = fitted.out_hidden.double().numpy() / unit_scale[..., None] * (1 << (pm.OUT_BITS + pm.H_BITS))
        step = (config.scale_max - config.scale_min) / config.bins
        return pm.PassesModel(
            hidden_weights=torch.from_numpy(np.round(hidden * unit_scale[:, None]).astype(np.int8)),
            hidden_bias=torch.from_numpy(np.round(fitted.hidden_bias.double().numpy() * unit_scale).astype(np.int32)),
            out_high=torch.from_numpy(high),
            out_low=torch.from_numpy(low),
            out_hidden=torch.from_numpy(np.round(out_hidden).astype(np.int64)),
            out_bias=torch.from_numpy(np.round(fitted.out_bias.double().numpy() * out_scale).astype(np.int64)),
            scale_min=round(config.scale_min * out_scale),
            scale_step=round(step * out_scale),
            frequencies=logistic_tables(config),
            groups=config.groups,
        )


def logistic_tables(config: EntropyConfig) -> np.ndarray:
    """The discretized logistic of each (scale bin, sub-symbol offset) as 24-bit frequencies."""
    step = (config.scale_max - config.scale_min) / config.bins
    r = np.arange(-RADIUS, RADIUS + 1)
    rows = []
    for s in np.exp(config.scale_min + (np.arange(config.bins) + 0.5) * step):
        for m in (np.arange(pm.PHASES) + 0.5) / pm.PHASES:
            cdf = 0.5 + 0.5 * np.tanh((np.concatenate([r - 0.5, [r[-1] + 0.5]]) - m) / (2 * s))
            cdf[0], cdf[-1] = 0.0, 1.0
            rows.append(_frequencies(np.diff(cdf)))
    return np.stack(rows)


def refit_tables(model: pm.PassesModel, samples: list[Sample], config: EntropyConfig) -> pm.PassesModel:
    """Tables re-estimated from the integer model's residuals on ``samples``, smoothed towards the logistic."""
    counts = np.zeros(model.frequencies.shape, dtype=np.float64)
    for sample in samples:
        for step in config.table_steps:
            grid = symbols(sample.latents, step).to(torch.int8)[None]
            for _, keys, residuals in passes_coder._residuals(grid, model, pm.side_info(grid, model.side)):
                cells = (keys * pm.ALPHABET + residuals).reshape(-1).numpy()
                counts += np.bincount(cells, minlength=counts.size).reshape(counts.shape)
    smoothed = counts + config.prior_count * model.frequencies / float(1 << pm.PRECISION)
    return replace(model, frequencies=np.stack([_frequencies(row / row.sum()) for row in smoothed]))


def save(model: pm.PassesModel, path: Path) -> None:
    from safetensors.torch import save_file

    names = ("hidden_weights", "hidden_bias", "out_high", "out_low", "out_hidden", "out_bias")
    tensors = {name: getattr(model, name).contiguous() for name in names}
    tensors["frequencies"] = torch.from_numpy(model.frequencies.astype(np.int32))
    tensors["scalars"] = torch.tensor([model.scale_min, model.scale_step, model.groups], dtype=torch.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def report(model: pm.PassesModel, held_out: list[Sample], steps: tuple[float, ...]) -> list[str]:
    """Bytes of the held-out images per scale and step: zstd, the ``context`` method, this model."""
    wavefront, lines = context_model("flux2"), []
    for scale in sorted({s.scale for s in held_out}, reverse=True):
        for step in steps:
            sizes = np.zeros(3)
            for sample in (s for s in held_out if s.scale == scale):
                q = symbols(sample.latents, step).numpy().astype(np.int8)
                coded = (zstd.compress(q.tobytes()), context_coder.encode(q, wavefront), passes_coder.encode(q, model))
                sizes += [len(data) for data in coded]
            zs, ctx, ours = sizes
            lines.append(
                f"scale {scale} step {step}: zstd {zs:.0f} context {ctx:.0f} ({ctx / zs - 1:+.1%})"
                f" passes {ours:.0f} ({ours / zs - 1:+.1%}, {ours / ctx - 1:+.1%} vs context)"
            )
    return lines


def train(config: PassesConfig, log: Callable[[str], None] = print) -> pm.PassesModel:
    fitted, fitting, held_out = fit(
        config, lambda c: FloatPassesModel(c, config.groups, config.hidden, config.side), log
    )
    model = refit_tables(quantized(fitted, config), fitting, config)
    save(model, config.output)
    model = pm.load(config.output)  # what the engine reads (masked, checked)
    for line in report(model, held_out, config.report_steps):
        log(f"fitted tables: {line}")
    return model


def main(argv: list[str] | None = None) -> None:
    run_command(argv, "latentcodec-lab train-passes", __doc__, PassesConfig, train)


if __name__ == "__main__":
    main()
