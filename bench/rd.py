"""Rate-distortion evaluation: latentcodec's modes against JPEG, WebP, AVIF and JPEG XL on an image set.

Every codec is swept over its quality knob; the downscaled anchors (``webp-scaled``, ``avif-scaled``: what a user
does with Pillow at low rates) over target rates, choosing scale and quality as latentcodec's rate control does.
Each point records the true file size in bits per pixel, PSNR (RGB), SSIM, MS-SSIM and SSIMULACRA2 (what people
see), and encode and decode times. Curves are averaged over the images per setting (as CompressAI does) and
compared with Bjontegaard delta rates (``bjontegaard`` package, Akima interpolation) inside a bpp range.
"""

from __future__ import annotations

import io
import itertools
import json
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

from latentcodec.bench.metrics import bits_per_pixel, ms_ssim, psnr, ssim, ssimulacra2
from latentcodec.engine import quality as quality_scores
from latentcodec.engine import search
from latentcodec.engine.codec import Codec
from latentcodec.engine.options import EncodeOptions

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

# Downscaled anchors: Lanczos down by one of SCALES, encode, decode, Lanczos back up to full size. Per image and
# target rate, each scale's highest quality whose bytes fit the budget is decoded and scored by rate control's
# metric (EncodeOptions' default), and rate control's rule picks among them (engine.search.choose: the best score
# within 10% of the budget). The bytes are the downscaled file's plus SCALE_HEADER_BYTES for the scale.
SCALES = (1.0, 0.85, 0.7, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25)
SCALE_HEADER_BYTES = 2
SCALED_TARGETS = [0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4]
SCALED_SWEEPS: dict[str, list[float]] = {"webp-scaled": SCALED_TARGETS, "avif-scaled": SCALED_TARGETS}


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
    detail: str = ""  # what a search chose (downscaled anchors: "scale=0.5,q=20")


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
    codec: Codec | None,
    classic: dict[str, list[int]] = CLASSIC_SWEEPS,
    latent: dict[str, list[dict]] = LATENT_SWEEPS,
    progress: Callable[[int], None] | None = None,
) -> list[RDPoint]:
    """Every image through every point of the classic codecs' and latentcodec's sweeps (name -> settings); the
    codec may be None without latent sweeps."""
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


def downscaled(image: Image.Image, scale: float) -> Image.Image:
    """``image`` at ``scale`` of each side (at least one pixel), Lanczos; itself at scale 1."""
    if scale == 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


@dataclass(frozen=True)
class ScaledEncoding:
    scale: float
    quality: int
    file: bytes  # the downscaled image's WebP/AVIF file
    decoded: np.ndarray  # uint8 RGB, upscaled back to the full size
    score: float  # under the metric the anchor was chosen by

    @property
    def bytes(self) -> int:
        return len(self.file) + SCALE_HEADER_BYTES


class ScaledAnchor:
    """One image through one Pillow encoder (``quality -> file``) at every scale of ``scales`` (default
    :data:`SCALES`), scored by ``metric`` (default: rate control's); files memoised per (scale, quality), so the
    target rates of one image share their encodes."""

    def __init__(
        self,
        image: Image.Image,
        encode: Callable[[Image.Image, int], bytes],
        scales: Sequence[float] | None = None,
        metric: str | None = None,
    ):
        self.image = image.convert("RGB")
        self.reference = np.asarray(self.image)
        self.encode, self.scales = encode, tuple(scales or SCALES)
        self.metric = metric or EncodeOptions().metric
        self._small: dict[float, Image.Image] = {}
        self._files: dict[tuple[float, int], bytes] = {}

    def file(self, scale: float, quality: int) -> bytes:
        if (scale, quality) not in self._files:
            if scale not in self._small:
                self._small[scale] = downscaled(self.image, scale)
            self._files[scale, quality] = self.encode(self._small[scale], quality)
        return self._files[scale, quality]

    def quality_within(self, scale: float, budget: float) -> int:
        """The highest quality in 0..100 whose bytes (file and scale) are at most ``budget`` (bisection; 0 when
        none fits)."""
        lo, hi, best = 0, 100, 0
        while lo <= hi:
            quality = (lo + hi) // 2
            if len(self.file(scale, quality)) + SCALE_HEADER_BYTES <= budget:
                best, lo = quality, quality + 1
            else:
                hi = quality - 1
        return best

    def encoding(self, scale: float, quality: int) -> ScaledEncoding:
        file = self.file(scale, quality)
        small = Image.open(io.BytesIO(file)).convert("RGB")
        decoded = np.asarray(small.resize(self.image.size, Image.LANCZOS) if scale != 1 else small)
        return ScaledEncoding(scale, quality, file, decoded, quality_scores.score(self.metric, self.reference, decoded))

    def candidates(self, bpp: float) -> list[ScaledEncoding]:
        """Per scale, the encoding at the highest quality that fits ``bpp``."""
        budget = bpp * self.image.width * self.image.height / 8
        return [self.encoding(scale, self.quality_within(scale, budget)) for scale in self.scales]

    def at_rate(self, bpp: float) -> ScaledEncoding:
        """The candidate rate control's rule picks: the best score within its tolerance of the budget, else the
        one closest to it."""
        budget = bpp * self.image.width * self.image.height / 8
        candidates = {struct.pack("<H", round(c.scale * 10000)) + c.file: c for c in self.candidates(bpp)}
        pool = [search.Candidate(data, c.score) for data, c in candidates.items()]
        return candidates[search.choose(pool, budget)]


def evaluate_scaled(
    images: dict[str, Image.Image],
    sweeps: dict[str, Sequence[float]] = SCALED_SWEEPS,
    progress: Callable[[int], None] | None = None,
    scales: Sequence[float] | None = None,
) -> list[RDPoint]:
    """The downscaled anchors (``NAME-scaled``: NAME's Pillow encoder) at each of their target rates. A point's
    times are its chosen encoding's (downscale and encode; decode and upscale), not the search's."""
    available = classic_codecs()
    points = []
    for name, image in images.items():
        rgb = image.convert("RGB")
        reference = np.asarray(rgb)
        height, width = reference.shape[:2]
        for sweep, targets in sweeps.items():
            encode = available[sweep.removesuffix("-scaled")]
            anchor = ScaledAnchor(rgb, encode, scales)
            for target in targets:
                chosen = anchor.at_rate(target)
                t0 = time.perf_counter()
                encode(downscaled(rgb, chosen.scale), chosen.quality)
                t1 = time.perf_counter()
                small = Image.open(io.BytesIO(chosen.file)).convert("RGB")
                if chosen.scale != 1:
                    small = small.resize(rgb.size, Image.LANCZOS)
                times = (t1 - t0, time.perf_counter() - t1)
                test = chosen.decoded
                points.append(
                    RDPoint(
                        name,
                        sweep,
                        f"target_bpp={target}",
                        chosen.bytes,
                        bits_per_pixel(chosen.bytes, width, height),
                        psnr(reference, test),
                        ssim(reference, test),
                        ms_ssim(reference, test),
                        ssimulacra2(reference, test),
                        *times,
                        detail=f"scale={chosen.scale},q={chosen.quality}",
                    )
                )
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


ANCHORS = ("webp", "jpeg", "avif", "jxl", "webp-scaled", "avif-scaled")


def bd_table(curves: dict[str, list[dict]], anchors: Sequence[str] = ANCHORS, bpp_range=(0.1, 0.5)) -> list[dict]:
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


def plot(curves: dict[str, list[dict]], path: Path, title: str = "", low_rates: float = 0.45) -> None:
    """PSNR, MS-SSIM and SSIMULACRA2 against bpp, one line per codec: up to 1.2 bpp above, up to ``low_rates``
    below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.4))
    for row, limit in zip(axes, (1.2, low_rates), strict=True):
        for codec, curve in curves.items():
            style = "o-" if codec.startswith("latent") else "^-." if codec.endswith("-scaled") else "s--"
            for ax, metric in zip(row, METRICS, strict=True):
                ax.plot([p["bpp"] for p in curve], [p[metric] for p in curve], style, label=codec, ms=3)
        for ax, metric, label in zip(row, METRICS, ("PSNR (dB)", "MS-SSIM", "SSIMULACRA2"), strict=True):
            ax.set(xlabel="bits per pixel", ylabel=label, xlim=(0, limit))
            shown = [p[metric] for curve in curves.values() for p in curve if p["bpp"] <= limit]
            if shown:
                margin = 0.05 * (max(shown) - min(shown)) or 1e-3
                ax.set_ylim(min(shown) - margin, max(shown) + margin)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
