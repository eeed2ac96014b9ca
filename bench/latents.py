"""``latentcodec-lab latents``: latent caches compared on the same TAEF2 latents. fp16 / bf16 safetensors, the uint8
affine recipe (one global map of the latents' range to 0..255, as Imagenet.int8), zstd-19 of fp16 and of uint8, and
latent streams (uniform at the uint8 recipe's RMSE and at coarser steps, passes and context coders; the lossless
mode on the uint8 recipe's bytes): bytes per latent, latent RMSE / max error, PSNR of the taef2-decoded image
against the float latents' decode, and latents/s decoded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zstandard
from PIL import Image
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import latentcodec
from latentcodec.engine.codec import Codec

DEFAULT_STEPS = (0.05, 0.1, 0.15, 0.2)
Decoder = Callable[[bytes], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """One way to store a latent: ``encode`` it to bytes, ``decode`` the bytes back to float32 latents."""

    name: str
    encode: Callable[[torch.Tensor], bytes]
    decode: Decoder


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """The images center-cropped to squares and resized to ``size`` x ``size``: uint8 ``[B, 3, size, size]``."""
    tensors = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
        tensors.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    return torch.stack(tensors)


def _safetensors(dtype: torch.dtype) -> Method:
    return Method(
        f"{str(dtype).removeprefix('torch.')} safetensors",
        lambda x: st_save({"latents": x.to(dtype)}),
        lambda data: st_load(data)["latents"].float(),
    )


def _zstd_fp16() -> Method:
    def decode(data: bytes) -> torch.Tensor:
        raw = zstandard.ZstdDecompressor().decompress(data)
        return torch.frombuffer(bytearray(raw), dtype=torch.float16).float()

    return Method(
        "zstd-19 fp16", lambda x: zstandard.ZstdCompressor(level=19).compress(x.half().numpy().tobytes()), decode
    )


class Affine8:
    """The uint8 recipe: one fixed affine map of ``[lo, hi]`` (the latents' range) onto 0..255."""

    def __init__(self, latents: Sequence[torch.Tensor]) -> None:
        self.lo = min(float(x.min()) for x in latents)
        self.step = (max(float(x.max()) for x in latents) - self.lo) / 255

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.lo) / self.step).round().clamp(0, 255).to(torch.uint8)

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.float() * self.step + self.lo

    def methods(self, shape: Sequence[int], entropies: Sequence[str]) -> list[Method]:
        def from_zstd(data: bytes) -> torch.Tensor:
            raw = zstandard.ZstdDecompressor().decompress(data)
            return self.values(torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(*shape))

        def lossless(entropy: str) -> Method:
            return Method(
                f"ours lossless uint8 {entropy}",
                lambda x: latentcodec.encode_latents_lossless(self.codes(x), entropy=entropy),
                lambda data: self.values(latentcodec.decode_latents_lossless(data)),
            )

        raw = lambda x: self.codes(x).numpy().tobytes()  # noqa: E731
        return [
            Method(
                "uint8 affine",
                lambda x: st_save({"latents": self.codes(x)}),
                lambda data: self.values(st_load(data)["latents"]),
            ),
            Method("zstd-19 uint8", lambda x: zstandard.ZstdCompressor(level=19).compress(raw(x)), from_zstd),
            *map(lossless, entropies),
        ]


def _ours(name: str, **options) -> Method:
    return Method(f"ours {name}", lambda x: latentcodec.encode_latents(x, **options), latentcodec.decode_latents)


def _near_lossless(step: float, entropy: str) -> Method:
    return Method(
        f"ours near-lossless {entropy} step {step:.4f}",
        lambda x: latentcodec.encode_latents_lossless(x, step=step, entropy=entropy),
        latentcodec.decode_latents_lossless,
    )


def methods(latents: Sequence[torch.Tensor], steps: Sequence[float], entropies: Sequence[str]) -> list[Method]:
    """Every method compared: the float and uint8 baselines, then our modes at the uint8 recipe's RMSE and ``steps``."""
    affine = Affine8(latents)
    errors = torch.cat([(affine.values(affine.codes(x)) - x).flatten() for x in latents])
    rmse = float(errors.square().mean().sqrt())
    ours = [_ours(f"{e} rmse<={rmse:.4f}", target_rmse=rmse, entropy=e) for e in entropies]
    ours += [_near_lossless(affine.step, e) for e in entropies]
    ours += [_ours(f"{e} step {s:g}", step=s, entropy=e) for s in steps for e in entropies]
    return [
        _safetensors(torch.float16),
        _safetensors(torch.bfloat16),
        _zstd_fp16(),
        *affine.methods(latents[0].shape, entropies),
        *ours,
    ]


def _psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    mse = (images - reference).square().flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


def measure(codec: Codec, latents: Sequence[torch.Tensor], method: Method, references: Sequence[torch.Tensor]) -> dict:
    """One row: ``method`` on every latent; ``references``: the float latents' decoded images and the sources."""
    streams = [method.encode(x) for x in latents]
    method.decode(streams[0])  # warm-up: first-call costs are not throughput
    started = time.perf_counter()
    back = [method.decode(data).reshape(x.shape) for data, x in zip(streams, latents, strict=True)]
    seconds = time.perf_counter() - started
    errors = torch.cat([(b - x).flatten() for b, x in zip(back, latents, strict=True)])
    images = codec.images_of(torch.stack(back)).clamp(0, 1)
    values = sum(x.numel() for x in latents)
    return {
        "method": method.name,
        "bytes": sum(map(len, streams)) / len(streams),
        "rmse": float(errors.square().mean().sqrt()),
        "max_error": float(errors.abs().max()),
        "psnr": _psnr(images, references[0]),
        "psnr_source": _psnr(images, references[1]),
        "latents_per_s": len(latents) / seconds,
        "msymbols_per_s": values / seconds / 1e6,
    }


def run(
    paths: Sequence[Path],
    size: int = 512,
    steps: Sequence[float] = DEFAULT_STEPS,
    entropies: Sequence[str] = ("passes", "context"),
) -> list[dict]:
    """The table: one row per method on the TAEF2 latents of ``paths`` (``size`` x ``size`` crops)."""
    with torch.no_grad():
        return _table(paths, size, steps, entropies)


def _table(paths: Sequence[Path], size: int, steps: Sequence[float], entropies: Sequence[str]) -> list[dict]:
    codec = Codec("taef2")
    images = load_images(paths, size)
    latents = list(codec.latents_of(images).cpu())
    references = (codec.images_of(torch.stack(latents)).clamp(0, 1), images.float() / 255)
    float_source = _psnr(references[0], references[1])
    rows = [measure(codec, latents, method, references) for method in methods(latents, steps, entropies)]
    fp16 = rows[0]["bytes"]
    uint8 = next(row["bytes"] for row in rows if row["method"] == "uint8 affine")
    for row in rows:
        row["x_fp16"], row["x_uint8"] = fp16 / row["bytes"], uint8 / row["bytes"]
        row["source_loss"] = float_source - row["psnr_source"]
    return rows


COLUMNS = [
    ("method", "method", "<40"),
    ("bytes", "bytes", "9.0f"),
    ("x fp16", "x_fp16", "7.2f"),
    ("x uint8", "x_uint8", "8.2f"),
    ("RMSE", "rmse", "8.4f"),
    ("max err", "max_error", "8.4f"),
    ("PSNR dB", "psnr", "8.2f"),
    ("src loss", "source_loss", "8.3f"),
    ("lat/s", "latents_per_s", "8.1f"),
    ("Msym/s", "msymbols_per_s", "7.2f"),
]
