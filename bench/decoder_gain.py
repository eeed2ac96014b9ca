"""What the trained synthesis buys: the same symbols decoded by TAEF2 and by the default taef2-q2 (or any two
models of TAEF2's encoder: ``--models taef2-q2,taef2-q3`` measures the synthesis stage alone).

Both models share TAEF2's encoder, so each image is encoded once per operating point and its symbols are decoded
by both: TAEF2's decoder with bicubic resizing, and taef2-q2 (taef2-q's trained decoder above its noise-level
threshold, its learned upscaler for downscaled points). The two streams differ only in their header (taef2-q2's
names a longer model and records the noise level): equal bpp to within five bytes. Each point's rate is reported
with both entropy stages (the context coder and zstd), which code the same symbols, and each decode is timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from latentcodec.bench.metrics import bits_per_pixel, ms_ssim, psnr, ssimulacra2
from latentcodec.engine import bitstream
from latentcodec.engine.codec import Codec

# (label, encode options): full resolution at the uniform steps, the downscaled points rate control picks at low
# rates, and dithered palettes
POINTS: tuple[tuple[str, dict], ...] = (
    ("step 1 @ 1", {"step": 1.0}),
    ("step 2 @ 1", {"step": 2.0}),
    ("step 3 @ 1", {"step": 3.0}),
    ("step 0.5 @ 0.5", {"step": 0.5, "scale": 0.5}),
    ("step 1 @ 0.5", {"step": 1.0, "scale": 0.5}),
    ("step 0.5 @ 0.35", {"step": 0.5, "scale": 0.35}),
    ("step 1 @ 0.35", {"step": 1.0, "scale": 0.35}),
    ("step 0.5 @ 0.25", {"step": 0.5, "scale": 0.25}),
    ("step 1 @ 0.25", {"step": 1.0, "scale": 0.25}),
    ("palette 8", {"mode": "palette", "palette_size": 8}),
    ("palette 32", {"mode": "palette", "palette_size": 32}),
    ("scalar8", {"mode": "scalar8"}),
)
ORIGINAL, TRAINED = "taef2", "taef2-q2"
MODELS = (ORIGINAL, TRAINED)
DOWNSCALED = tuple(point for point in POINTS if point[1].get("scale", 1.0) < 1)  # where the resizers differ


@dataclass(frozen=True)
class GainRecord:
    image: str
    point: str
    model: str
    bpp: float
    bpp_zstd: float  # the same symbols with the zstd entropy stage
    psnr: float
    ms_ssim: float
    ssimulacra2: float
    decode_s: float  # the decode's wall time (one stream, the model loaded and warm)


def as_model(data: bytes, codec: Codec) -> bytes:
    """The same stream under ``codec``'s model (same encoder, so the same symbols): a new header, no decoder noise
    level unless that model's decoder takes one."""
    stream = bitstream.unpack(data)
    noise = stream.header.noise_level if codec.spec.conditioned else None
    header = replace(stream.header, model_id=codec.model_id, fingerprint=codec.model.fingerprint, noise_level=noise)
    return bitstream.pack(replace(stream, header=header))


def run(
    paths: Sequence[Path],
    points: Sequence[tuple[str, dict]] = POINTS,
    progress: Callable[[int], None] | None = None,
    device: str | None = None,
    models: tuple[str, str] = MODELS,
) -> list[GainRecord]:
    """Encode each image once per point with the trained model (``models[1]``) and decode the symbols with both."""
    codecs = {model: Codec(model, device=device) for model in models}
    trained = models[1]
    records = []
    for path in paths:
        reference = np.asarray(Image.open(path).convert("RGB"))
        height, width = reference.shape[:2]
        for label, options in points:
            encoded = codecs[trained].encode(reference, denoiser=None, **options)
            zstd = codecs[trained].encode(reference, denoiser=None, entropy="zstd", **options)
            for model, codec in codecs.items():
                data = as_model(encoded, codec)
                started = time.perf_counter()
                decoded = np.asarray(codec.decode(data).convert("RGB"))
                seconds = time.perf_counter() - started
                records.append(
                    GainRecord(
                        path.name,
                        label,
                        model,
                        bits_per_pixel(len(data), width, height),
                        bits_per_pixel(len(as_model(zstd, codec)), width, height),
                        psnr(reference, decoded),
                        ms_ssim(reference, decoded),
                        ssimulacra2(reference, decoded),
                        seconds,
                    )
                )
            if progress:
                progress(1)
    return records


def summarize(records: Sequence[GainRecord]) -> list[dict]:
    """Means per operating point and model, in the records' order."""
    rows = []
    for point in dict.fromkeys(r.point for r in records):
        row = {"point": point}
        for model in dict.fromkeys(r.model for r in records):
            group = [asdict(r) for r in records if r.point == point and r.model == model]
            for metric in ("bpp", "bpp_zstd", "psnr", "ms_ssim", "ssimulacra2", "decode_s"):
                row[f"{model} {metric}"] = float(np.mean([g[metric] for g in group]))
            row["images"] = len(group)
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict], models: tuple[str, str] = MODELS) -> str:
    a, b = models
    lines = [
        f"| point | bpp context | bpp zstd | PSNR {a} | {b} | MS-SSIM {a} | {b} | SSIMULACRA2 {a} | {b} "
        f"| decode s {a} | {b} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['point']} | {r[f'{b} bpp']:.3f} | {r[f'{b} bpp_zstd']:.3f} | {r[f'{a} psnr']:.2f} "
            f"| {r[f'{b} psnr']:.2f} ({r[f'{b} psnr'] - r[f'{a} psnr']:+.2f}) | {r[f'{a} ms_ssim']:.4f} "
            f"| {r[f'{b} ms_ssim']:.4f} | {r[f'{a} ssimulacra2']:.1f} | {r[f'{b} ssimulacra2']:.1f} "
            f"({r[f'{b} ssimulacra2'] - r[f'{a} ssimulacra2']:+.1f}) | {r[f'{a} decode_s']:.3f} "
            f"| {r[f'{b} decode_s']:.3f} |"
        )
    return "\n".join(lines)
