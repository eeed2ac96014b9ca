"""What the latent denoiser buys: each stream decoded with and without it (same bytes, so equal bpp).

The "denoised" columns are what a stream naming the denoiser gives (its default strength); the "auto" columns
what ``encode(..., denoiser="auto")`` gives: the encoder decodes the stream without the denoiser and at each
strength (:mod:`~latentcodec.engine.strength_search`) and keeps the best; the same choice is made here from the same
decodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentcodec.bench.metrics import bits_per_pixel, ms_ssim, psnr
from latentcodec.engine import stream_edits, strength_search
from latentcodec.engine.codec import Codec

# where the denoiser is measured (this bench, the training's validation): (label, encode options), three per
# mode, lowest rate first
OPERATING_POINTS: tuple[tuple[str, dict], ...] = (
    ("uniform step 4", {"mode": "uniform", "step": 4.0}),
    ("uniform step 2", {"mode": "uniform", "step": 2.0}),
    ("uniform step 1", {"mode": "uniform", "step": 1.0}),
    ("palette 8", {"mode": "palette", "palette_size": 8}),
    ("palette 32", {"mode": "palette", "palette_size": 32}),
    ("palette 256", {"mode": "palette", "palette_size": 256}),
)


@dataclass(frozen=True)
class DenoiseRecord:
    image: str
    point: str
    bpp: float
    noise_level: float  # measured at encode time
    psnr: float
    psnr_denoised: float  # at the denoiser's default strength, as a stream naming it records
    psnr_auto: float
    ms_ssim: float
    ms_ssim_denoised: float
    ms_ssim_auto: float
    strength: float  # of the auto choice, a fraction of the measured noise level; 0: no denoiser
    decode_s: float
    decode_denoised_s: float

    @property
    def kept(self) -> bool:
        """Whether ``denoiser="auto"`` keeps the denoiser for this stream."""
        return self.strength > 0


def _decode(codec: Codec, data: bytes) -> tuple[torch.Tensor, np.ndarray, float]:
    started = time.perf_counter()
    decoded = codec.decode_batch_tensors([data])[0].unwrap()
    pixels = np.asarray(decoded.to_pil().convert("RGB"))
    return decoded.rgb, pixels, time.perf_counter() - started


def run(
    codec: Codec,
    paths: Sequence[Path],
    points: Sequence[tuple[str, dict]] = OPERATING_POINTS,
    progress: Callable[[int], None] | None = None,
) -> list[DenoiseRecord]:
    """Encode every image at every point (the stream names the model's denoiser) and decode it without the
    denoiser, at the denoiser's default strength and at each of auto's strengths."""
    from latentcodec.engine.denoise.registry import DEFAULT_DENOISERS, denoiser_spec
    from latentcodec.engine.info import info

    denoiser = DEFAULT_DENOISERS.get(codec.model_id)
    if denoiser is None:
        raise ValueError(f"model {codec.model_id!r} has no default denoiser")
    default_strength = denoiser_spec(denoiser).strength
    records = []
    for path in paths:
        reference = np.asarray(Image.open(path).convert("RGB"))
        reference_rgb = torch.tensor(reference).permute(2, 0, 1).float() / 255
        for label, options in points:
            data = codec.encode(reference, denoiser=denoiser, denoiser_strength=1.0, **options)  # measured level
            level = float(info(data).noise_level or 0)
            variants = strength_search.strength_variants(data)
            named = stream_edits.with_noise_level(data, default_strength * level)  # as a stream naming it records
            if not records:  # first use loads the networks: not part of the timings
                _decode(codec, variants[0]), _decode(codec, data)
            decodes = [_decode(codec, variant) for variant in variants]
            best = strength_search.best_variant(reference_rgb, [rgb for rgb, _, _ in decodes])
            (_, plain, plain_s), (_, chosen, _) = decodes[0], decodes[best]
            _, cleaned, cleaned_s = _decode(codec, named)
            records.append(
                DenoiseRecord(
                    image=path.name,
                    point=label,
                    bpp=bits_per_pixel(len(data), *reference.shape[1::-1]),
                    noise_level=level,
                    psnr=psnr(reference, plain),
                    psnr_denoised=psnr(reference, cleaned),
                    psnr_auto=psnr(reference, chosen),
                    ms_ssim=ms_ssim(reference, plain),
                    ms_ssim_denoised=ms_ssim(reference, cleaned),
                    ms_ssim_auto=ms_ssim(reference, chosen),
                    strength=(0.0, *strength_search.STRENGTHS)[best],
                    decode_s=plain_s,
                    decode_denoised_s=cleaned_s,
                )
            )
            if progress:
                progress(1)
    return records


def summarize(records: Sequence[DenoiseRecord]) -> list[dict[str, float | str]]:
    """Means per operating point, in ``OPERATING_POINTS`` order."""
    rows = []
    for point in dict.fromkeys(r.point for r in records):
        group = [r for r in records if r.point == point]

        def mean(field: str, group: list[DenoiseRecord] = group) -> float:
            return float(np.mean([getattr(r, field) for r in group]))

        rows.append(
            {
                "point": point,
                "images": len(group),
                "bpp": mean("bpp"),
                "psnr": mean("psnr"),
                "psnr_denoised": mean("psnr_denoised"),
                "psnr_gain": mean("psnr_denoised") - mean("psnr"),
                "ms_ssim": mean("ms_ssim"),
                "ms_ssim_denoised": mean("ms_ssim_denoised"),
                "psnr_auto": mean("psnr_auto"),
                "ms_ssim_auto": mean("ms_ssim_auto"),
                "kept": sum(r.kept for r in group),
                "strengths": "/".join(str(sum(r.strength == s for r in group)) for s in strength_search.STRENGTHS),
                "decode_ms": 1000 * mean("decode_s"),
                "denoiser_ms": 1000 * (mean("decode_denoised_s") - mean("decode_s")),
            }
        )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    lines = [
        "| point | bpp | PSNR | PSNR denoised | gain dB | MS-SSIM | MS-SSIM denoised | auto: PSNR | MS-SSIM "
        "| kept (per strength) | decode ms | + denoiser ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['point']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['psnr_denoised']:.2f} | {r['psnr_gain']:+.2f} "
            f"| {r['ms_ssim']:.4f} | {r['ms_ssim_denoised']:.4f} | {r['psnr_auto']:.2f} | {r['ms_ssim_auto']:.4f} "
            f"| {r['kept']}/{r['images']} ({r['strengths']}) | {r['decode_ms']:.0f} | {r['denoiser_ms']:+.0f} |"
        )
    return "\n".join(lines)
