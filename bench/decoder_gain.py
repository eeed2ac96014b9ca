"""What the trained decoder buys: the same symbols decoded by TAEF2's decoder and by taef2-q's.

Both models share TAEF2's encoder, so each image is encoded once per operating point and its symbols are decoded
by both decoders; the two streams differ only in their header (taef2-q's records the noise level its decoder is
told): equal bpp to within four bytes.
"""

from __future__ import annotations

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
    ("palette 8", {"mode": "palette", "palette_size": 8}),
    ("palette 32", {"mode": "palette", "palette_size": 32}),
    ("scalar8", {"mode": "scalar8"}),
)
MODELS = ("taef2", "taef2-q")


@dataclass(frozen=True)
class GainRecord:
    image: str
    point: str
    model: str
    bpp: float
    psnr: float
    ms_ssim: float
    ssimulacra2: float


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
) -> list[GainRecord]:
    """Encode each image once per point with taef2-q and decode the symbols with both decoders."""
    codecs = {model: Codec(model, device=device) for model in MODELS}
    records = []
    for path in paths:
        reference = np.asarray(Image.open(path).convert("RGB"))
        for label, options in points:
            encoded = codecs["taef2-q"].encode(reference, denoiser=None, **options)
            for model, codec in codecs.items():
                data = as_model(encoded, codec)
                decoded = np.asarray(codec.decode(data).convert("RGB"))
                records.append(
                    GainRecord(
                        path.name,
                        label,
                        model,
                        bits_per_pixel(len(data), reference.shape[1], reference.shape[0]),
                        psnr(reference, decoded),
                        ms_ssim(reference, decoded),
                        ssimulacra2(reference, decoded),
                    )
                )
            if progress:
                progress(1)
    return records


def summarize(records: Sequence[GainRecord]) -> list[dict]:
    """Means per operating point and model, in ``POINTS`` order."""
    rows = []
    for point in dict.fromkeys(r.point for r in records):
        row = {"point": point}
        for model in MODELS:
            group = [asdict(r) for r in records if r.point == point and r.model == model]
            for metric in ("bpp", "psnr", "ms_ssim", "ssimulacra2"):
                row[f"{model} {metric}"] = float(np.mean([g[metric] for g in group]))
            row["images"] = len(group)
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    lines = [
        "| point | bpp | PSNR taef2 | taef2-q | MS-SSIM taef2 | taef2-q | SSIMULACRA2 taef2 | taef2-q |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = "taef2", "taef2-q"
        lines.append(
            f"| {r['point']} | {r[f'{b} bpp']:.3f} | {r[f'{a} psnr']:.2f} | {r[f'{b} psnr']:.2f} "
            f"({r[f'{b} psnr'] - r[f'{a} psnr']:+.2f}) | {r[f'{a} ms_ssim']:.4f} | {r[f'{b} ms_ssim']:.4f} "
            f"| {r[f'{a} ssimulacra2']:.1f} | {r[f'{b} ssimulacra2']:.1f} "
            f"({r[f'{b} ssimulacra2'] - r[f'{a} ssimulacra2']:+.1f}) |"
        )
    return "\n".join(lines)
