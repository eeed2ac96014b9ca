"""Tiling at scale: peak memory and time of CLI round trips per image size, and seams on a folder of images.

Each size runs ``latentcodec encode`` and ``latentcodec decode`` as child processes (a fresh interpreter, the
model load and PNG reading and writing included), so peak RSS is what a user of the CLI sees.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from latentcodec.engine.images import psnr
from latentcodec.engine.tiling import OVERLAP_CELLS, Tiling

SIZES_MPIXEL = (1, 4, 16, 24, 64)


def _measure(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a child process; raises if it fails."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    errors = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {errors[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def memory_table(
    photo: Path,
    sizes: Sequence[float] = SIZES_MPIXEL,
    cli_options: Sequence[str] = (),
    progress: Callable | None = None,
) -> list[dict]:
    """Per size (3:2 images resized from ``photo``): CLI encode and decode seconds, s/Mpixel and peak RSS."""
    rows = []
    cli = [sys.executable, "-m", "latentcodec.bindings.cli", *cli_options]
    with tempfile.TemporaryDirectory() as folder:
        for mpixel in sizes:
            width = round(math.sqrt(mpixel * 1e6 * 1.5))
            height = round(width / 1.5)
            source, stream, output = (Path(folder) / name for name in ("in.png", "in.lcz", "out.png"))
            Image.open(photo).convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(source)
            encode_s, encode_mb = _measure([*cli, "encode", str(source), "-o", str(stream)])
            decode_s, decode_mb = _measure([*cli, "decode", str(stream), "-o", str(output)])
            pixels = width * height / 1e6
            rows.append(
                {
                    "size": f"{width}x{height}",
                    "mpixel": round(pixels, 2),
                    "bpp": stream.stat().st_size * 8 / (width * height),
                    "encode_s": encode_s,
                    "decode_s": decode_s,
                    "encode_s_per_mpixel": encode_s / pixels,
                    "decode_s_per_mpixel": decode_s / pixels,
                    "encode_peak_mb": encode_mb,
                    "decode_peak_mb": decode_mb,
                }
            )
            if progress:
                progress(1)
    return rows


def seam_band(shape: tuple[int, int], tiling: Tiling, cell: int = 8, width: int = 8) -> np.ndarray:
    """A mask of the pixels within ``width`` of the middle of an overlap, where neighbouring tiles cross-fade."""
    band = np.zeros(shape, dtype=bool)
    for axis, length in enumerate(shape):
        for (_, end), (start, _) in itertools.pairwise(tiling.spans(length // cell)):
            centre = (start + end) * cell // 2
            index = [slice(None), slice(None)]
            index[axis] = slice(centre - width, centre + width)
            band[tuple(index)] = True
    return band


def border_ratio(original: np.ndarray, decoded: np.ndarray, band: np.ndarray) -> float:
    """Mean absolute error inside ``band`` over the mean outside it."""
    error = np.abs(decoded.astype(np.float64) - original).mean(axis=2)
    return float(error[band].mean() / error[~band].mean())


def seams(
    paths: Sequence[Path], tile: int = 256, options: dict | None = None, progress: Callable | None = None
) -> list[dict]:
    """Per image: the same stream decoded whole and in ``tile``-pixel tiles; PSNR of both against the original,
    PSNR between them, and the error along tile borders relative to elsewhere for each."""
    from latentcodec import Codec

    whole, tiled = Codec(device="cpu", tile=0), Codec(device="cpu", tile=tile)
    rows = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        stream = whole.encode(image, **(options or {"mode": "uniform", "step": 1}))
        original = np.asarray(image)
        plain, tiles = np.asarray(whole.decode(stream)), np.asarray(tiled.decode(stream))
        band = seam_band(original.shape[:2], Tiling(tile // 8, OVERLAP_CELLS))
        rows.append(
            {
                "image": path.name,
                "psnr_whole": psnr(original, plain),
                "psnr_tiled": psnr(original, tiles),
                "psnr_between": psnr(plain, tiles),
                "border_ratio_whole": border_ratio(original, plain, band),
                "border_ratio_tiled": border_ratio(original, tiles, band),
            }
        )
        if progress:
            progress(1)
    return rows
