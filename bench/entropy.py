"""Bytes and time of the latent entropy stage: one zstd frame (streams of versions 1-3) against the context
coders (``context``: wavefronts; ``passes``: 16 steps), at the operating points rate control picks.

For each image and target bpp, rate control chooses a scale and a step (``target_bpp``, default entropy method);
the symbols of that point (the image downscaled as the encoder does, latents rounded at the step) are then coded
by zstd and by both context coders (checked to decode back) and bounded by their per-channel order-0 entropy
(what any coder that ignores context can reach at best; tables not counted). Timing: each context coder's encode
and decode against the whole CPU encode and decode of the same image at a fixed step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from latentcodec.engine import bitstream
from latentcodec.engine.codec import Codec
from latentcodec.engine.entropy import context_coder, latent_stage, passes_coder, zstd
from latentcodec.engine.format import EntropyMethod

TARGETS = (0.1, 0.2, 0.3)


def order0_bytes(values: np.ndarray) -> float:
    """Per-channel order-0 entropy of symbols ``[C, ...]``, in bytes."""
    total = 0.0
    for plane in values.reshape(values.shape[0], -1):
        _, counts = np.unique(plane, return_counts=True)
        total += -(counts * np.log2(counts / counts.sum())).sum() / 8
    return total


def symbols_at(codec: Codec, rgb: torch.Tensor, scale: float, step: float) -> np.ndarray:
    """Uniform symbols ``[C, h, w]`` (int8) of ``rgb`` ``[3, H, W]`` in [0, 1] at ``scale`` and ``step``."""
    if scale < 1:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[2] * scale)))
        rgb = F.interpolate(rgb[None], size=size, mode="bicubic", antialias=True)[0].clamp(0, 1)
    latents = codec.latents_of(rgb[None])[0].cpu()
    return torch.round(latents / step).clamp(-127, 127).to(torch.int8).numpy()


CODERS = {"context": (EntropyMethod.CONTEXT, context_coder), "passes": (EntropyMethod.PASSES, passes_coder)}


def compare(symbols: np.ndarray) -> dict[str, float]:
    """Bytes of one image's symbols: zstd, each context coder, order-0 bound."""
    sizes = {"zstd": len(zstd.compress(symbols.tobytes())), "order0": order0_bytes(symbols)}
    for name, (method, coder) in CODERS.items():
        model = latent_stage.model_for(method, "flux2")
        payload = coder.encode(symbols, model)
        if not np.array_equal(coder.decode(payload, symbols.shape, model), symbols):
            raise AssertionError(f"the {name} coder did not decode its own payload")
        sizes[name] = len(payload)
    return sizes


def rate_control_points(
    codec: Codec, paths: Sequence[Path], targets: Sequence[float] = TARGETS, progress: Callable[[], None] = lambda: None
) -> list[dict]:
    """One row per image and target: the point rate control chose and the bytes of its symbols per method."""
    rows = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        rgb = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        for target in targets:
            header_stream = bitstream.unpack(codec.encode(image, target_bpp=target, denoiser=None))
            scale = header_stream.header.coded_width / header_stream.header.width
            step = float(np.frombuffer(header_stream.params[:4], dtype="<f4")[0])
            sizes = compare(symbols_at(codec, rgb, scale, step))
            rows.append({"image": path.name, "target": target, "scale": scale, "step": step, **sizes})
            progress()
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per target: mean scale and step, total bytes per method, the context coder's saving."""
    table = []
    for target in sorted({r["target"] for r in rows}):
        group = [r for r in rows if r["target"] == target]
        total = {key: sum(r[key] for r in group) for key in ("zstd", *CODERS, "order0")}
        table.append(
            {
                "target": target,
                "scale": float(np.mean([r["scale"] for r in group])),
                "step": float(np.mean([r["step"] for r in group])),
                "zstd": total["zstd"] / len(group),
                "context": total["context"] / len(group),
                "passes": total["passes"] / len(group),
                "order0": total["order0"] / len(group),
                "saving": 1 - total["context"] / total["zstd"],
                "saving_passes": 1 - total["passes"] / total["zstd"],
                "saving_order0": 1 - total["order0"] / total["zstd"],
            }
        )
    return table


def timing(codec: Codec, path: Path, step: float = 1.0, repeats: int = 3) -> dict[str, float]:
    """Seconds (best of ``repeats``): the codec's whole encode and decode of ``path`` at ``step`` (default entropy
    method, no denoiser), and each context coder's own encode and decode of the same symbols."""
    image = Image.open(path).convert("RGB")
    rgb = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    symbols = symbols_at(codec, rgb, 1.0, step)

    def best(run: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    data = codec.encode(image, step=step, denoiser=None)
    times = {
        "codec_encode": best(lambda: codec.encode(image, step=step, denoiser=None)),
        "codec_decode": best(lambda: codec.decode(data)),
        "zstd_encode": best(lambda: zstd.compress(symbols.tobytes())),
    }
    for name, (method, coder) in CODERS.items():
        model = latent_stage.model_for(method, "flux2")
        payload = coder.encode(symbols, model)
        times[f"{name}_encode"] = best(lambda coder=coder, model=model: coder.encode(symbols, model))
        times[f"{name}_decode"] = best(
            lambda coder=coder, model=model, payload=payload: coder.decode(payload, symbols.shape, model)
        )
    return times
