"""The default path beside the plain one, stage by stage: images/s and host CPU milliseconds per image.

The *default* path is what ``Codec().encode(image)`` and ``decode(stream)`` run: the default model, the
``context`` entropy coder (or the one asked for), ``denoiser="auto"`` (its strength chosen on sampled crops), the
switched decoder and, for streams coded at ``scale`` < 1, the learned upscaler. The *plain* path is the one the
engine was built around: uniform mode, ``denoiser=None``, zstd. Both run on one codec, on the same images, in one
process, through ``encode_batch`` (Pillow images in) and ``decode_batch`` (Pillow images out).

Each stage's time comes from :mod:`latentcodec.engine.stage_timer`: the CPU time of the thread that ran it
(``time.thread_time``; nested stages taken out), its wall time, and on CUDA its device time (CUDA events). CPU
time that no stage's own thread spent (torch's intra-op worker threads, the pipeline's glue) is the ``untimed``
row: the process's CPU time less the stages'. Benchmarks measure; they assert nothing about timings.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from latentcodec.engine import bitstream, stage_timer
from latentcodec.engine.codec import Codec
from latentcodec.engine.format import EntropyMethod
from latentcodec.engine.images import image_files
from latentcodec.engine.models.switched import SwitchedAutoencoder
from latentcodec.engine.options import EncodeOptions
from latentcodec.engine.stage_timer import StageTotal

STAGES = {
    "encode": ("intake", "encoder network", "quantize", "strength search", "entropy coding", "pack"),
    "decode": (
        "parse", "entropy decoding", "dequantize", "denoiser", "decoder network", "upscaler", "conversion",
    ),
}  # fmt: skip
UNTIMED = "untimed"  # process CPU outside every stage's own thread: torch's intra-op workers, batching glue
PLAIN = {"mode": "uniform", "denoiser": None, "entropy": "zstd"}


@dataclass
class PathRun:
    """One timed call: a path's encode or decode of ``images`` images."""

    path: str  # "default" or "plain"
    direction: str  # "encode" or "decode"
    images: int
    wall_s: float
    cpu_s: float  # the process's CPU time over the call
    stages: dict[str, StageTotal]

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s

    def stage_rows(self) -> dict[str, dict]:
        """Per stage (every stage of the direction, then any other, nested ones after their parent, then
        ``untimed``): calls and CPU, wall and device milliseconds per image."""
        per_image = 1000 / self.images
        rows = {name: _row(self.stages.get(name, StageTotal()), per_image) for name in _ordered(self)}
        untimed = self.cpu_s - sum(total.cpu_s for total in self.stages.values())
        rows[UNTIMED] = {"calls": None, "cpu_ms": untimed * per_image, "wall_ms": None, "device_ms": None}
        return rows

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "direction": self.direction,
            "images": self.images,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "images_per_s": self.images_per_s,
            "stages": self.stage_rows(),
        }


@dataclass
class PathReport:
    """Both paths' encode and decode at one model, size and batch, with what their streams hold."""

    device: str
    model: str
    size: tuple[int, int]
    batch: int
    options: dict[str, dict]  # path -> encode options
    runs: list[PathRun]
    streams: dict[str, dict] = field(default_factory=dict)  # path -> bytes, methods, denoised, decoder branches
    threads: dict[str, int] = field(default_factory=dict)

    def run(self, path: str, direction: str) -> PathRun:
        return next(r for r in self.runs if (r.path, r.direction) == (path, direction))

    def as_dict(self) -> dict:
        return {
            "device": self.device,
            "model": self.model,
            "size": f"{self.size[0]}x{self.size[1]}",
            "batch": self.batch,
            "threads": self.threads,
            "options": self.options,
            "streams": self.streams,
            "runs": [r.as_dict() for r in self.runs],
        }


def _row(total: StageTotal, per_image: float) -> dict:
    device = None if total.device_s is None else total.device_s * per_image
    return {"calls": total.calls, "cpu_ms": total.cpu_s * per_image, "wall_ms": total.wall_s * per_image,
            "device_ms": device}  # fmt: skip


def _ordered(run: PathRun) -> list[str]:
    known = STAGES[run.direction]
    found = list(dict.fromkeys([*known, *run.stages]))

    def key(name: str) -> tuple[int, int, int]:
        parts = name.split(stage_timer.SEPARATOR)
        top = known.index(parts[0]) if parts[0] in known else len(known)
        return top, len(parts) > 1, found.index(name)

    return sorted(found, key=key)


def path_options(entropy: str | EntropyMethod, scale: float = 1.0, step: float | None = None) -> dict[str, dict]:
    """The encode options of the default path (its defaults, with ``entropy``) and of the plain path."""
    shared = {"scale": scale, **({} if step is None else {"step": step})}
    options = {"default": {"entropy": EntropyMethod.parse(entropy).label, **shared}, "plain": {**PLAIN, **shared}}
    for each in options.values():
        EncodeOptions(**each)  # ValueError now, not in the middle of a run
    return options


def synthetic_images(count: int, size: tuple[int, int], seed: int = 0) -> list[Image.Image]:
    """Smooth gradients with a few discs and mild noise: photo-like statistics, no files needed."""
    rng = np.random.default_rng(seed)
    width, height = size
    rows, cols = np.mgrid[0:height, 0:width]
    y, x = rows / max(width, height), cols / max(width, height)
    images = []
    for _ in range(count):
        channels = [np.sin(rng.uniform(2, 8) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 8) * y) for _ in "rgb"]
        rgb = 0.5 + 0.35 * np.stack(channels, axis=-1)
        for _ in range(4):
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.2) * max(width, height)
            disc = (cols - cx) ** 2 + (rows - cy) ** 2 < r * r
            rgb[disc] = rng.uniform(0, 1, 3)
        rgb += rng.normal(0, 0.02, rgb.shape)
        images.append(Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)))
    return images


def folder_images(folder: str | Path, count: int, size: tuple[int, int]) -> list[Image.Image]:
    """``count`` images of a folder (cycled), centre-cropped to ``size``'s aspect and resized to it."""
    paths = image_files(folder)
    if not paths:
        raise ValueError(f"no images in {folder}")
    loaded = [ImageOps.fit(Image.open(p).convert("RGB"), size, Image.Resampling.LANCZOS) for p in paths[:count]]
    return [loaded[i % len(loaded)] for i in range(count)]


def _timed(call: Callable[[], list], device: torch.device) -> tuple[list, float, float, dict[str, StageTotal]]:
    """``call()``'s unwrapped results, wall and process CPU seconds, and its stages."""
    clock = stage_timer.CudaClock() if device.type == "cuda" else None
    with stage_timer.recording(clock) as recorder:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        results = [r.unwrap() for r in call()]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return results, wall, cpu, recorder.totals()


def _stream_facts(codec: Codec, streams: Sequence[bytes]) -> dict:
    headers = [bitstream.unpack(s).header for s in streams]
    model = codec.model
    names = ("clean", "tuned") if isinstance(model, SwitchedAutoencoder) else ("decoder",)
    branches: Counter[str] = Counter()
    for h in headers:  # the decoder each stream runs through (a denoised stream: the clean one)
        level = None if h.denoiser else torch.tensor([h.noise_level or 0.0])
        branches[names[model.branches(level)[0][0]]] += 1
    return {
        "bytes_per_image": sum(map(len, streams)) / len(streams),
        "entropy": dict(Counter(h.entropy.label for h in headers)),
        "denoised": sum(h.denoiser is not None for h in headers),
        "upscaled": sum((h.coded_width, h.coded_height) != (h.width, h.height) for h in headers),
        "decoder_branches": dict(branches),
    }


def run_paths(
    model: str,
    size: tuple[int, int],
    batch: int,
    device: torch.device,
    *,
    calls: int = 1,
    entropy: str | EntropyMethod = EntropyMethod.CONTEXT,
    scale: float = 1.0,
    step: float | None = None,
    images: Sequence[Image.Image] | None = None,
    compile: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PathReport:
    """Encode ``calls`` batches of ``batch`` images (``images``, else synthetic ones) and decode their streams,
    by the default and the plain path, after one warm-up batch each (weights load, CUDA graphs are captured)."""
    say = progress or (lambda _message: None)
    options = path_options(entropy, scale, step)
    pictures = list(images) if images is not None else synthetic_images(batch * calls, size)
    codec = Codec(model, device=device, batch_size=batch, compile=compile)
    try:
        for path, each in options.items():
            say(f"warm-up {path}")
            warm = [r.unwrap() for r in codec.encode_batch(pictures[:batch], **each)]  # a full batch's shapes
            [r.unwrap() for r in codec.decode_batch(warm)]
        report = PathReport(str(device), codec.model_id, size, batch, options, [])
        report.threads = {"torch": torch.get_num_threads(), "host": codec.pipeline.host._max_workers}
        for path, each in options.items():
            say(f"{path} encode")
            streams, wall, cpu, stages = _timed(lambda o=each: codec.encode_batch(pictures, **o), codec.device)
            report.runs.append(PathRun(path, "encode", len(pictures), wall, cpu, stages))
            say(f"{path} decode")
            _, wall, cpu, stages = _timed(lambda s=streams: codec.decode_batch(s), codec.device)
            report.runs.append(PathRun(path, "decode", len(streams), wall, cpu, stages))
            report.streams[path] = _stream_facts(codec, streams)
    finally:
        codec.close()
    return report


def format_report(report: PathReport) -> str:
    """Markdown: a header line, then per direction a table of images/s and milliseconds per image by stage."""
    width, height = report.size
    lines = [
        f"{report.model}, {width}x{height}, batch {report.batch}, {report.run('default', 'encode').images} images per "
        f"path, device {report.device} ({report.threads['torch']} torch threads, {report.threads['host']} host "
        f"threads); default: {_describe(report.options['default'])}; plain: {_describe(report.options['plain'])}",
        "streams: " + "; ".join(_streams(path, facts) for path, facts in report.streams.items()),
        "host CPU ms per image: the CPU time of the thread that ran the stage, nested stages taken out (wall ms in "
        f"brackets); {UNTIMED}: the process's CPU time outside them (torch's intra-op workers, glue)",
    ]
    for direction in STAGES:
        runs = report.run("default", direction), report.run("plain", direction)
        rows = [r.stage_rows() for r in runs]
        device = any(row.get("device_ms") is not None for table in rows for row in table.values())
        head = f"| {direction} | default | plain | default/plain |" + (" device ms default | plain |" if device else "")
        lines += ["", head, "|---" * (6 if device else 4) + "|"]
        lines.append(_line("images/s", runs[0].images_per_s, runs[1].images_per_s, device))
        lines.append(_line("wall ms/image", *(1000 * r.wall_s / r.images for r in runs), device))
        lines.append(_line("process CPU ms/image", *(1000 * r.cpu_s / r.images for r in runs), device))
        for name in [n for n in dict.fromkeys([*rows[0], *rows[1]]) if n != UNTIMED] + [UNTIMED]:
            a, b = (table.get(name, {"calls": 0}) for table in rows)  # a stage only one path runs: "-" on the other
            lines.append(_stage_line(name, a, b, device))
    return "\n".join(lines)


def _streams(path: str, facts: dict) -> str:
    return (
        f"{path} {facts['bytes_per_image']:.0f} B/image (entropy {_counts(facts['entropy'])}; {facts['denoised']} "
        f"denoised, {facts['upscaled']} upscaled; decoders {_counts(facts['decoder_branches'])})"
    )


def _describe(options: dict) -> str:
    described = {"denoiser": "auto", **options}
    return ", ".join(f"{k} {v}" for k, v in described.items())


def _counts(counter: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def _cell(row: dict, key: str = "cpu_ms") -> str:
    """``-`` for a stage that did not run (or a value not measured)."""
    return "-" if row["calls"] == 0 or row.get(key) is None else f"{row[key]:.1f}"


def _stage_line(name: str, a: dict, b: dict, device: bool) -> str:
    cells = [
        _cell(r) + ("" if r.get("wall_ms") is None or r["calls"] == 0 else f" ({_cell(r, 'wall_ms')})") for r in (a, b)
    ]
    ratio = _ratio(*(None if r["calls"] == 0 else r["cpu_ms"] for r in (a, b)))
    extra = f" {_cell(a, 'device_ms')} | {_cell(b, 'device_ms')} |" if device else ""
    return f"| {name} | {cells[0]} | {cells[1]} | {ratio} |{extra}"


def _line(name: str, a: float, b: float, device: bool) -> str:
    return f"| {name} | {_significant(a)} | {_significant(b)} | {_ratio(a, b)} |" + (" | |" if device else "")


def _significant(value: float) -> str:
    """Three significant digits, no exponent."""
    return f"{float(f'{value:.3g}'):g}"


def _ratio(a: float | None, b: float | None) -> str:
    """``a / b``; ``-`` where either is missing or ``b`` shows as 0.0."""
    return "-" if a is None or b is None or b < 0.05 else f"{a / b:.2f}x"
