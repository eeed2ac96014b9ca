"""One script of the checks that need a CUDA device (issue 33), for a machine with a GPU and little time on it.

``python -m latentcodec.bench.device_checks PHOTOS OUT.json`` (weights in ``$LATENTCODEC_WEIGHTS``):

1. 100 default streams of 512x512 crops encoded on CUDA; their entropy stage coded again with contexts on the CPU
   and on CUDA (same payloads?), decoded with contexts on CUDA (same symbols?), and the host CPU time of each;
2. downscaled streams decoded through the graphed passes and an eager codec (the upscaler's CUDA graph);
3. the default path beside the plain one (:func:`~latentcodec.bench.stages.run_paths`, 512x512, batch 32), with
   the ``passes`` contexts on the device and on the host threads.

Benchmarks measure; nothing here asserts timings.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from latentcodec.bench import stages
from latentcodec.engine import bitstream
from latentcodec.engine.codec import Codec
from latentcodec.engine.entropy import latent_stage
from latentcodec.engine.format import EntropyMethod
from latentcodec.engine.images import image_files

CUDA = torch.device("cuda")
SIZE, BATCH = 512, 32


def crops(folder: str, count: int) -> list[Image.Image]:
    """``count`` square crops (of up to 1024 pixels, at varied offsets) of a folder's photos, resized to ``SIZE``."""
    photos = [Image.open(p).convert("RGB") for p in image_files(folder)]
    picked = []
    for k in range(count):
        photo = photos[k % len(photos)]
        width, height = photo.size
        side = min(width, height, 1024)
        left, top = (k * 97) % (width - side + 1), (k * 61) % (height - side + 1)
        box = (left, top, left + side, top + side)
        picked.append(photo.crop(box).resize((SIZE, SIZE), Image.Resampling.LANCZOS))
    return picked


def entropy_on_devices(codec: Codec, streams: list[bytes]) -> dict:
    """Each stream's payload coded again with contexts on the CPU and on CUDA, and decoded with them on CUDA."""
    spec, counts, seconds, symbols = codec.session.spec, dict.fromkeys(("cpu", "cuda", "decoded"), 0), {}, 0
    for data in streams:
        stream = bitstream.unpack(data)
        header = stream.header
        shape = (spec.latent_channels, *header.latent_size(spec.downsample))
        size = codec.session.coder(header.mode).planes_size(stream.params, shape)
        where = (header.entropy, shape, spec.latent_space)
        planes = latent_stage.decompress(stream.latents, header.entropy, header.mode, size, shape, spec.latent_space)
        symbols += size
        for name, device in (("cpu", None), ("cuda", CUDA)):
            start = time.process_time()
            counts[name] += latent_stage.compress(planes, *where, 19, device) == stream.latents
            seconds[f"encode_{name}"] = seconds.get(f"encode_{name}", 0) + time.process_time() - start
            start = time.process_time()
            back = latent_stage.decompress(stream.latents, header.entropy, header.mode, size, *where[1:], device)
            seconds[f"decode_{name}"] = seconds.get(f"decode_{name}", 0) + time.process_time() - start
            counts["decoded"] += name == "cuda" and back == planes
    per_cpu_s = {f"{k}_M_symbols_per_cpu_s": symbols / v / 1e6 for k, v in seconds.items()}
    return {"streams": len(streams), "same_payload": counts, **per_cpu_s}


def upscaler_graphs(codec: Codec, pictures: list[Image.Image]) -> dict:
    """Downscaled streams decoded through the graphed passes against an eager codec."""
    small = [r.unwrap() for r in codec.encode_batch(pictures, scale=0.5)]
    eager = Codec(device=CUDA, batch_size=BATCH, graphs=False)
    try:
        pairs = zip(codec.decode_tensors(small), eager.decode_tensors(small), strict=True)
        difference = max(float((a.float() - b.float()).abs().max()) for a, b in pairs)
    finally:
        eager.close()
    passes = {str(key): runner.captures for key, runner in codec.session._passes.items()}
    return {"max_abs_difference": difference, "captures": passes}


def main(argv: list[str] | None = None) -> int:
    folder, out = (argv or sys.argv[1:])[:2]
    pictures, report = crops(folder, 100), {}
    codec = Codec(device=CUDA, batch_size=BATCH)
    try:
        streams = [r.unwrap() for r in codec.encode_batch(pictures)]
        report["entropy"] = entropy_on_devices(codec, streams)
        report["upscaler"] = upscaler_graphs(codec, pictures[:8])
    finally:
        codec.close()
    for where in ("device", "host"):
        if where == "host":  # the passes contexts per stream on the host threads, as a CPU session runs them
            method = latent_stage.METHODS[EntropyMethod.PASSES]
            unplaced = dataclasses.replace(method, batch_contexts=None, encode_contexts=None)
            latent_stage.METHODS[EntropyMethod.PASSES] = unplaced
        pics = (pictures * 2)[: 4 * BATCH]
        paths = stages.run_paths("taef2-q2", (SIZE, SIZE), BATCH, CUDA, calls=4, entropy="passes", images=pics)
        print(stages.format_report(paths), flush=True)
        report[f"paths_contexts_on_{where}"] = paths.as_dict()
    print(json.dumps({k: report[k] for k in ("entropy", "upscaler")}, indent=1))
    Path(out).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
