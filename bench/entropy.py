"""How far one zstd call is from better entropy coders, on uniform-quantized latent symbols.

For each image and step, the symbol planes are coded by: zstd (what the bitstream stores), zstd per channel,
zstd with a dictionary trained on other images, an ANS coder (``constriction``) with a per-channel
quantized-Laplace model (mean and scale stored as float16 per channel), and the per-channel order-0 entropy
(a bound for any coder that models channels independently and ignores context).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import zstandard
from PIL import Image

from latentcodec.engine.codec import Codec

LEVEL = 19


def symbols(codec: Codec, path: Path, step: float) -> np.ndarray:
    """Quantized latents ``[C, h, w]`` (int32) of the image at ``path``."""
    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    latents = codec.encode_latents(rgb[None])[0].cpu()
    return torch.round(latents / step).to(torch.int32).numpy()


def _planes(values: np.ndarray) -> bytes:
    return values.astype(np.int8).tobytes()


def train_dictionary(samples: Sequence[np.ndarray], size: int = 16384) -> zstandard.ZstdCompressionDict:
    chunks = [_planes(plane) for values in samples for plane in values]  # one sample per channel plane
    return zstandard.train_dictionary(size, chunks, level=LEVEL)


def laplace_ans_bytes(values: np.ndarray) -> int:
    """Bytes of an ANS stream under per-channel quantized Laplace models, plus 4 bytes of parameters each."""
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    lo, hi = int(values.min()) - 1, int(values.max()) + 1
    model = constriction.stream.model.QuantizedLaplace(lo, hi)
    flat = values.reshape(values.shape[0], -1)
    means = np.repeat(flat.mean(1), flat.shape[1]).astype(np.float64)
    scales = np.repeat(np.maximum(np.abs(flat - flat.mean(1, keepdims=True)).mean(1), 0.05), flat.shape[1])
    coder.encode_reverse(flat.reshape(-1).astype(np.int32), model, means, scales.astype(np.float64))
    return 4 * len(coder.get_compressed()) + 4 * values.shape[0]


def order0_bytes(values: np.ndarray) -> float:
    total = 0.0
    for plane in values.reshape(values.shape[0], -1):
        _, counts = np.unique(plane, return_counts=True)
        p = counts / counts.sum()
        total += -(counts * np.log2(p)).sum() / 8
    return total


def compare(values: np.ndarray, dictionary: zstandard.ZstdCompressionDict | None) -> dict[str, float]:
    """Bytes per method for one image's symbols ``[C, h, w]`` (int8 range)."""
    result = {
        "zstd": len(zstandard.ZstdCompressor(level=LEVEL).compress(_planes(values))),
        "zstd per channel": sum(len(zstandard.ZstdCompressor(level=LEVEL).compress(_planes(p))) for p in values),
        "ans laplace per channel": laplace_ans_bytes(values),
        "order-0 entropy per channel": order0_bytes(values),
    }
    if dictionary is not None:
        compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary)
        result["zstd + dictionary"] = len(compressor.compress(_planes(values)))
    return result


def study(
    codec: Codec, paths: Sequence[Path], dictionary_paths: Sequence[Path], steps: Sequence[float] = (1.0, 2.0, 4.0)
) -> dict[float, dict[str, float]]:
    """Mean bytes per method over ``paths`` for each step (dictionary trained on ``dictionary_paths``)."""
    table = {}
    for step in steps:
        dictionary = train_dictionary([symbols(codec, p, step) for p in dictionary_paths]) if dictionary_paths else None
        rows = [compare(symbols(codec, p, step), dictionary) for p in paths]
        table[step] = {method: float(np.mean([r[method] for r in rows])) for method in rows[0]}
    return table
