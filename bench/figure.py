"""Side-by-side crops at a matched rate: the original, latentcodec's decoders, the classic codecs and downscaled
WebP (what a user does at low rates), each labelled with its true bits per pixel, so people can look instead of
only reading numbers."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from latentcodec.engine.codec import Codec

Encoder = Callable[[Image.Image, int], bytes]


def classic_encoders() -> dict[str, Encoder]:
    """WebP, AVIF and JPEG XL where this Pillow has them (JPEG XL through pillow-jxl-plugin)."""
    from latentcodec.bench.rd import classic_codecs

    return {name: fn for name, fn in classic_codecs().items() if name != "jpeg"}


def at_rate(encode: Encoder, image: Image.Image, bpp: float) -> bytes:
    """The encoding whose size is closest to ``bpp``, over qualities 0..100 (bisection)."""
    budget, lo, hi = bpp * image.width * image.height / 8, 0, 100
    best = encode(image, 0)
    while lo <= hi:
        quality = (lo + hi) // 2
        data = encode(image, quality)
        if abs(len(data) - budget) < abs(len(best) - budget):
            best = data
        lo, hi = (quality + 1, hi) if len(data) < budget else (lo, quality - 1)
    return best


def side_by_side(
    image: Image.Image, bpp: float, codecs: dict[str, Codec], box: tuple[int, int, int, int], path: Path
) -> dict[str, float]:
    """Write ``box`` of the original and of each decode at about ``bpp`` side by side; returns each true bpp.
    ``webp-scaled`` is chosen as ``latentcodec-lab rd`` chooses it (:class:`~latentcodec.bench.rd.ScaledAnchor`:
    rate control's rule over downscales, at most ``bpp``), its label naming the scale and quality."""
    from latentcodec.bench.rd import ScaledAnchor

    image = image.convert("RGB")
    pixels = image.width * image.height
    tiles, rates = [("original", image)], {}

    def add(name: str, size: int, decoded: Image.Image, note: str = "") -> None:
        rates[name] = 8 * size / pixels
        tiles.append((f"{name} {rates[name]:.3f} bpp{note}", decoded))

    for name, codec in codecs.items():
        data = codec.encode(image, target_bpp=bpp, denoiser=None)
        add(name, len(data), codec.decode(data).convert("RGB"))
    encoders = classic_encoders()
    for name, encode in encoders.items():
        data = at_rate(encode, image, bpp)
        add(name, len(data), Image.open(io.BytesIO(data)).convert("RGB"))
    if "webp" in encoders:
        scaled = ScaledAnchor(image, encoders["webp"]).at_rate(bpp)
        note = f" (x{scaled.scale:g}, q{scaled.quality})"
        add("webp-scaled", scaled.bytes, Image.fromarray(scaled.decoded), note)
    width, height = box[2] - box[0], box[3] - box[1]
    sheet = Image.new("RGB", (width * len(tiles), height + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (label, decoded) in enumerate(tiles):
        sheet.paste(decoded.crop(box), (n * width, 20))
        draw.text((n * width + 4, 4), label, fill="black")
    sheet.save(path)
    return rates
