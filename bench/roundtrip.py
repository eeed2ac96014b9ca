"""Round-trip evaluation: encode + decode a folder of images per mode, report bpp and PSNR."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from latentcodec.bench.metrics import bits_per_pixel, psnr
from latentcodec.engine.codec import Codec


@dataclass(frozen=True)
class RoundTrip:
    image: str
    mode: str
    bytes: int
    bpp: float
    psnr: float
    encode_s: float
    decode_s: float


def float_psnr(codec: Codec, image: np.ndarray) -> float:
    """PSNR of the autoencoder alone (no quantization): the ceiling every mode approaches."""
    import torch

    from latentcodec.engine.images import to_uint8

    rgb = torch.from_numpy(image.transpose(2, 0, 1).copy()).float().div(255)[None]
    decoded = codec.images_of(codec.latents_of(rgb))[0, :, : image.shape[0], : image.shape[1]]
    return psnr(image, to_uint8(decoded).permute(1, 2, 0).numpy())


def run(
    codec: Codec,
    paths: Sequence[Path],
    settings: dict[str, dict],
    progress: Callable[[int], None] | None = None,
) -> list[RoundTrip]:
    """Round-trip every image under every named setting (``{"uniform": {"mode": "uniform", ...}}``)."""
    rows = []
    for path in paths:
        reference = np.asarray(Image.open(path).convert("RGB"))
        height, width = reference.shape[:2]
        for name, options in settings.items():
            start = time.perf_counter()
            data = codec.encode(reference, **options)
            middle = time.perf_counter()
            decoded = np.asarray(codec.decode(data).convert("RGB"))
            end = time.perf_counter()
            rows.append(
                RoundTrip(
                    path.name,
                    name,
                    len(data),
                    bits_per_pixel(len(data), width, height),
                    psnr(reference, decoded),
                    middle - start,
                    end - middle,
                )
            )
            if progress:
                progress(1)
    return rows


def summarize(rows: Sequence[RoundTrip]) -> dict[str, dict[str, float]]:
    """Mean bpp, PSNR and timings per setting."""
    summary: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.mode for r in rows):
        chosen = [r for r in rows if r.mode == name]
        summary[name] = {
            "images": len(chosen),
            "bpp": float(np.mean([r.bpp for r in chosen])),
            "psnr": float(np.mean([r.psnr for r in chosen])),
            "encode_s": float(np.mean([r.encode_s for r in chosen])),
            "decode_s": float(np.mean([r.decode_s for r in chosen])),
        }
    return summary


def write_json(path: Path, rows: Sequence[RoundTrip], extra: dict | None = None) -> None:
    payload = {"summary": summarize(rows), "rows": [asdict(r) for r in rows], **(extra or {})}
    Path(path).write_text(json.dumps(payload, indent=2))
