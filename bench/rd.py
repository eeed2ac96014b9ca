"""Rate-distortion evaluation: latentcodec's modes against JPEG, WebP, AVIF and JPEG XL on an image set.

Every codec is swept over its quality knob. Each point records the true file size in bits per pixel, PSNR
(RGB), SSIM, MS-SSIM and SSIMULACRA2 (what people see), and encode and decode times. Curves are averaged over
the images per setting (as CompressAI does) and compared with Bjontegaard delta rates (``bjontegaard``
package, Akima interpolation) inside a bpp range.
"""

from __future__ import annotations

import io
import itertools
import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

from latentcodec.bench.metrics import bits_per_pixel, ms_ssim, psnr, ssim, ssimulacra2
from latentcodec.engine.codec import Codec

# name -> (knob values, low to high rate)
CLASSIC_SWEEPS: dict[str, list[int]] = {
    "jpeg": [2, 5, 10, 15, 20, 30, 50, 75],
    "webp": [0, 2, 5, 10, 20, 35, 50, 75],
    "avif": [0, 5, 10, 20, 30, 45, 60, 75],
    "jxl": [3, 8, 15, 25, 35, 50, 65, 80],
}
METRICS = ("psnr", "ms_ssim", "ssimulacra2")
LATENT_SWEEPS: dict[str, list[dict]] = {
    "latent-uniform": [{"mode": "uniform", "step": s} for s in (4.0, 2.83, 2.0, 1.41, 1.0, 0.71, 0.5)],
    "latent-uniform-half": [{"mode": "uniform", "step": s, "scale": 0.5} for s in (2.0, 1.41, 1.0, 0.71, 0.5, 0.35)],
    "latent-palette": [{"mode": "palette", "palette_size": k} for k in (4, 8, 16, 32, 64, 128, 256)],
}

RATE_CONTROL = "latent-rate-control"  # a sweep of target_bpp values (``latentcodec rd --targets``)


@dataclass(frozen=True)
class RDPoint:
    image: str
    codec: str
    setting: str
    bytes: int
    bpp: float
    psnr: float
    ssim: float
    ms_ssim: float
    ssimulacra2: float
    encode_s: float
    decode_s: float


def classic_codecs() -> dict[str, Callable[[Image.Image, int], bytes]]:
    """Pillow encoders available here: JPEG, WebP (method 6), AVIF when Pillow was built with it, JPEG XL
    (effort 7) with pillow-jxl-plugin."""

    def save(image: Image.Image, **params) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, **params)
        return buffer.getvalue()

    codecs = {"jpeg": lambda im, q: save(im, format="JPEG", quality=q)}
    if features.check("webp"):
        codecs["webp"] = lambda im, q: save(im, format="WEBP", quality=q, method=6)
    if features.check("avif"):
        codecs["avif"] = lambda im, q: save(im, format="AVIF", quality=q)
    try:
        import pillow_jxl  # noqa: F401 - registers JPEG XL with Pillow

        codecs["jxl"] = lambda im, q: save(im, format="JXL", quality=q, effort=7)
    except ImportError:
        pass
    return codecs


def _point(name: str, codec: str, setting: str, reference: np.ndarray, data: bytes, decoded, times) -> RDPoint:
    test = np.asarray(decoded.convert("RGB"))
    height, width = reference.shape[:2]
    return RDPoint(
        name, codec, setting, len(data), bits_per_pixel(len(data), width, height), psnr(reference, test),
        ssim(reference, test), ms_ssim(reference, test), ssimulacra2(reference, test), *times,
    )  # fmt: skip


def evaluate(
    images: dict[str, Image.Image],
    codec: Codec,
    classic: dict[str, list[int]] = CLASSIC_SWEEPS,
    latent: dict[str, list[dict]] = LATENT_SWEEPS,
    progress: Callable[[int], None] | None = None,
) -> list[RDPoint]:
    """Every image through every point of the classic codecs' and latentcodec's sweeps (name -> settings)."""
    available = classic_codecs()
    points = []
    for name, image in images.items():
        rgb = image.convert("RGB")
        reference = np.asarray(rgb)
        for codec_name in (c for c in classic if c in available):
            for quality in classic[codec_name]:
                t0 = time.perf_counter()
                data = available[codec_name](rgb, quality)
                t1 = time.perf_counter()
                decoded = Image.open(io.BytesIO(data))
                decoded.load()
                times = (t1 - t0, time.perf_counter() - t1)
                points.append(_point(name, codec_name, f"q{quality}", reference, data, decoded, times))
                if progress:
                    progress(1)
        for sweep, settings in latent.items():
            for options in settings:
                t0 = time.perf_counter()
                data = codec.encode(rgb, **options)
                t1 = time.perf_counter()
                decoded = codec.decode(data)
                times = (t1 - t0, time.perf_counter() - t1)
                setting = ",".join(f"{k}={v}" for k, v in options.items() if k != "mode")
                points.append(_point(name, sweep, setting, reference, data, decoded, times))
                if progress:
                    progress(1)
    return points


def rate_control_misses(points: Sequence[RDPoint]) -> dict[str, float] | None:
    """Per target, the worst relative miss |bpp - target| / target over the images (None without that sweep)."""
    misses: dict[str, float] = {}
    for p in points:
        if p.codec == RATE_CONTROL:
            target = float(p.setting.removeprefix("target_bpp="))
            misses[p.setting] = max(misses.get(p.setting, 0.0), abs(p.bpp - target) / target)
    return misses or None


def mean_curves(points: Sequence[RDPoint]) -> dict[str, list[dict]]:
    """Per codec, one point per setting: metrics averaged over the images, sorted by rate."""
    curves: dict[str, list[dict]] = {}
    for codec in dict.fromkeys(p.codec for p in points):
        rows = []
        for setting in dict.fromkeys(p.setting for p in points if p.codec == codec):
            chosen = [p for p in points if p.codec == codec and p.setting == setting]
            fields = ("bpp", "psnr", "ssim", "ms_ssim", "ssimulacra2", "encode_s", "decode_s")
            rows.append({"setting": setting, **{f: float(np.mean([getattr(p, f) for p in chosen])) for f in fields}})
        curves[codec] = sorted(rows, key=lambda r: r["bpp"])
    return curves


def bd_rate(anchor: list[dict], test: list[dict], metric: str, bpp_range: tuple[float, float]) -> float | None:
    """Bjontegaard delta rate (%) of ``test`` against ``anchor`` on ``metric``; negative means fewer bits.

    Only points inside ``bpp_range`` count; None when either curve has fewer than two there or the curves'
    quality ranges do not overlap (a partial overlap is integrated over the common quality range).
    """
    import bjontegaard

    def inside(curve: list[dict]) -> list[dict]:
        return [p for p in curve if bpp_range[0] <= p["bpp"] <= bpp_range[1]]

    a, t = inside(anchor), inside(test)
    if len(a) < 2 or len(t) < 2:
        return None
    a_q, t_q = [p[metric] for p in a], [p[metric] for p in t]
    if max(a_q) <= min(t_q) or max(t_q) <= min(a_q) or not (_increasing(a_q) and _increasing(t_q)):
        return None
    rates_a, rates_t = [p["bpp"] for p in a], [p["bpp"] for p in t]
    bd = bjontegaard.bd_rate(rates_a, a_q, rates_t, t_q, method="akima", require_matching_points=False, min_overlap=0)
    return float(bd)


def _increasing(values: list[float]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


def bd_table(
    curves: dict[str, list[dict]], anchors: Sequence[str] = ("webp", "jpeg", "avif", "jxl"), bpp_range=(0.1, 0.5)
) -> list[dict]:
    """BD-rate of every curve against each anchor, on each of ``METRICS``."""
    rows = []
    for codec, curve in curves.items():
        for anchor in anchors:
            if anchor == codec or anchor not in curves:
                continue
            rows.append(
                {
                    "codec": codec,
                    "anchor": anchor,
                    **{f"bd_rate_{m}": bd_rate(curves[anchor], curve, m, bpp_range) for m in METRICS},
                }
            )
    return rows


def format_bd_table(rows: Sequence[dict], bpp_range=(0.1, 0.5)) -> str:
    lines = [
        f"BD-rate in {bpp_range[0]}..{bpp_range[1]} bpp (negative: fewer bits than the anchor for equal quality)",
        "",
        "| codec | anchor | BD-rate PSNR | BD-rate MS-SSIM | BD-rate SSIMULACRA2 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = ["-" if r[f"bd_rate_{m}"] is None else f"{r[f'bd_rate_{m}']:+.1f}%" for m in METRICS]
        lines.append(f"| {r['codec']} | {r['anchor']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """PSNR, MS-SSIM and SSIMULACRA2 against bpp, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for codec, curve in curves.items():
        style = "o-" if codec.startswith("latent") else "s--"
        for ax, metric in zip(axes, METRICS, strict=True):
            ax.plot([p["bpp"] for p in curve], [p[metric] for p in curve], style, label=codec, ms=3)
    for ax, label in zip(axes, ("PSNR (dB)", "MS-SSIM", "SSIMULACRA2"), strict=True):
        ax.set(xlabel="bits per pixel", ylabel=label, xlim=(0, 1.2))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learned_metrics_note() -> str:
    """Why LPIPS and DISTS are not in the table: their network weights must be on this machine (piq looks in
    torch hub's cache) and nothing here downloads them."""
    import importlib.util

    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if importlib.util.find_spec("piq") is None or not any(cache.glob("*lpips*")):
        return f"LPIPS/DISTS: skipped, their weights are not on this machine (piq and {cache})"
    return "LPIPS/DISTS: weights found but not wired into the sweep yet"


def reused_points(path: Path, images: Collection[str], measured: Collection[str], label: str) -> list[RDPoint]:
    """The points of an earlier run (:func:`write_json`) on ``images``: codecs not ``measured`` in this run keep
    their names, re-measured ones become ``NAME-label`` (an earlier curve to compare with)."""
    stored = json.loads(Path(path).read_text())["points"]
    return [
        RDPoint(**{**p, "codec": p["codec"] if p["codec"] not in measured else f"{p['codec']}-{label}"})
        for p in stored
        if p["image"] in images
    ]


def write_json(path: Path, points: Sequence[RDPoint], curves: dict, table: list[dict]) -> None:
    payload = {"curves": curves, "bd_rates": table, "points": [asdict(p) for p in points]}
    Path(path).write_text(json.dumps(payload, indent=2))
