"""Kodak streams pinned across refactors: each case's stream must stay byte for byte what it was.

The cases written before the context entropy method existed (``CASES``) are encoded with ``entropy="zstd"``:
their pins are the original ones, so zstd streams are still written exactly as they were.

``python tests/stream_fixtures.py`` rewrites ``fixtures/kodak_streams.json`` (only when the bitstream is meant to
change, and say so in the commit). The denoiser the streams name is a seeded random stand-in, written here, so the
pinned bytes do not depend on which trained denoiser a machine has installed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "kodak_streams.json"
DENOISER_ENV = "LATENTCODEC_LATENT_DENOISER"

# (case name, kodak index, crop box, colour conversion, encode options)
CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("scalar8", 23, (300, 200, 428, 296), "RGB", {"mode": "scalar8"}),
    ("uniform-default", 23, (300, 200, 428, 296), "RGB", {}),
    ("uniform-q20-plain", 23, (300, 200, 428, 296), "RGB", {"quality": 20, "denoiser": None}),
    ("uniform-step2-named", 5, (100, 100, 196, 164), "RGB", {"step": 2.0, "denoiser": "latent-denoiser"}),
    (
        "uniform-step3-strength",
        5,
        (100, 100, 196, 164),
        "RGB",
        {"step": 3.0, "denoiser": "latent-denoiser", "denoiser_strength": 0.8},
    ),
    ("uniform-scale-half", 8, (200, 100, 328, 228), "RGB", {"scale": 0.5, "level": 5}),
    ("uniform-odd-size", 5, (100, 100, 137, 121), "RGB", {"step": 1.0}),
    ("palette-default", 23, (300, 200, 428, 296), "RGB", {"mode": "palette"}),
    ("palette-8", 14, (0, 0, 96, 80), "RGB", {"mode": "palette", "palette_size": 8}),
    (
        "palette-nodither-plain",
        14,
        (0, 0, 96, 80),
        "RGB",
        {"mode": "palette", "quality": 40, "dither": False, "denoiser": None},
    ),
    ("greyscale", 8, (200, 100, 328, 228), "L", {"step": 1.5}),
    ("rgba-keep", 23, (300, 200, 372, 240), "RGBA", {}),
    ("rgba-drop", 23, (300, 200, 372, 240), "RGBA", {"alpha": "drop", "mode": "scalar8"}),
    ("target-bpp", 19, (300, 300, 396, 396), "RGB", {"target_bpp": 0.6}),
    ("target-bpp-plain", 19, (300, 300, 396, 396), "RGB", {"target_bpp": 0.3, "denoiser": None}),
    ("target-psnr", 19, (300, 300, 396, 396), "RGB", {"target_psnr": 24.0}),
    ("effort", 21, (200, 200, 264, 264), "RGB", {"step": 1.0, "effort": 3, "denoiser": None}),
    ("effort-named", 21, (200, 200, 264, 264), "RGB", {"step": 2.0, "effort": 2, "denoiser": "latent-denoiser"}),
)
# written with the default entropy method (context where it applies), pinned when it arrived
CONTEXT_CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("context-default", 23, (300, 200, 428, 296), "RGB", {}),
    ("context-step2-named", 5, (100, 100, 196, 164), "RGB", {"step": 2.0, "denoiser": "latent-denoiser"}),
    ("context-odd-greyscale", 8, (200, 100, 337, 221), "L", {"step": 1.5}),
    ("context-target-bpp", 19, (300, 300, 396, 396), "RGB", {"target_bpp": 0.3, "denoiser": None}),
)
# written by taef2-q2 (the default model since it arrived): both of its decoders, rate control and the denoiser
SWITCHED_CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("q2-default", 23, (300, 200, 428, 296), "RGB", {}),
    ("q2-step2-plain", 5, (100, 100, 196, 164), "RGB", {"step": 2.0, "denoiser": None}),
    ("q2-target-bpp", 19, (300, 300, 396, 396), "RGB", {"target_bpp": 0.2}),
)
# written by taef2-q2 since "auto" chooses the denoiser strength on sampled crops (the cases above name
# `strength_by="pixels"`, the default when they were pinned), with the `passes` entropy method where named
PASSES_CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("crops-default", 23, (300, 200, 428, 296), "RGB", {"entropy": "context"}),
    ("passes-default", 23, (300, 200, 428, 296), "RGB", {"entropy": "passes_v1"}),
    ("passes-step2-plain", 5, (100, 100, 196, 164), "RGB", {"entropy": "passes_v1", "step": 2.0, "denoiser": None}),
    ("passes-odd-greyscale", 8, (200, 100, 337, 221), "L", {"entropy": "passes_v1", "step": 1.5}),
    (
        "passes-target-bpp",
        19,
        (300, 300, 396, 396),
        "RGB",
        {"entropy": "passes_v1", "target_bpp": 0.2, "rate_search": "every"},
    ),
)
# the second passes model (side information; the default entropy method since it arrived), strengths decided in
# batched window decodes, rate control climbing the scales
PASSES2_CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("passes2-default", 23, (300, 200, 428, 296), "RGB", {"entropy": "passes"}),
    ("passes2-step2-plain", 5, (100, 100, 196, 164), "RGB", {"entropy": "passes", "step": 2.0, "denoiser": None}),
    ("passes2-coarse-greyscale", 8, (200, 100, 337, 221), "L", {"entropy": "passes", "step": 4.0}),
    ("passes2-target-bpp", 19, (300, 300, 396, 396), "RGB", {"entropy": "passes", "target_bpp": 0.2}),
)
# rounding weighed by the passes model's code lengths (`rdo`; every case above rounds to nearest)
RDO_CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("rdo-default", 23, (300, 200, 428, 296), "RGB", {"rdo": 0.1}),
    ("rdo-step2-plain", 5, (100, 100, 196, 164), "RGB", {"rdo": 0.1, "step": 2.0, "denoiser": None}),
    ("rdo-target-bpp", 19, (300, 300, 396, 396), "RGB", {"rdo": 0.1, "target_bpp": 0.2}),
)
# steps per channel (the default from then on)
CHANNEL_CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("channels-default", 23, (300, 200, 428, 296), "RGB", {}),
    ("channels-coarse-plain", 5, (100, 100, 196, 164), "RGB", {"step": 3.0, "denoiser": None}),
    ("channels-target-bpp", 19, (300, 300, 396, 396), "RGB", {"target_bpp": 0.2}),
    ("channels-rdo", 23, (300, 200, 428, 296), "RGB", {"rdo": 0.1, "step": 1.5}),
)

# taef2-q4: its upscaler told the noise level, rate control over the finer ladder from the peak step
LADDER_CASES: tuple[tuple[str, int, tuple[int, int, int, int], str, dict], ...] = (
    ("q4-scale-quarter", 23, (300, 200, 428, 296), "RGB", {"scale": 0.25, "step": 1.0}),
    ("q4-target-bpp", 19, (300, 300, 396, 396), "RGB", {"target_bpp": 0.2}),
    ("q4-target-bpp-low", 23, (200, 100, 456, 356), "RGB", {"target_bpp": 0.05}),
)


def case_image(kodak: Path, index: int, box: tuple[int, int, int, int], mode: str) -> Image.Image:
    """A Kodak crop in ``mode``; RGBA crops get a gradient alpha."""
    image = Image.open(kodak / f"kodim{index:02d}.png").convert("RGB").crop(box)
    if mode == "RGBA":
        alpha = np.tile(np.arange(image.width, dtype=np.uint8) * 3, (image.height, 1))
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(alpha))
        return image
    return image.convert(mode)


def write_seeded_denoiser(path: Path) -> Path:
    """A latent denoiser with seeded random weights (not the identity), written like a trained one."""
    from latentcodec.engine.denoise import latent_denoiser

    torch.manual_seed(0)
    model = latent_denoiser.LatentDenoiser.untrained(32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.unet.conv_out.weight.copy_(torch.randn(model.unet.conv_out.weight.shape, generator=generator) * 0.02)
    latent_denoiser.save(model, path, {"model": "taef2", "purpose": "stream fixtures"})
    return path


def stream_digests(kodak: Path) -> dict[str, dict]:
    """Each case's stream: its sha256, length and the denoiser it names, encoded by a fresh CPU codec."""
    import latentcodec

    codecs = {model: latentcodec.Codec(model, device="cpu") for model in ("taef2", "taef2-q2", "taef2-q4")}
    digests = {}
    # how "auto" chose the denoiser strength before the passes method arrived, and rate control before it climbed
    old = {"strength_by": "pixels", "rate_search": "every"}
    context = [(*case[:4], {**old, "entropy": "context", **case[4]}) for case in CONTEXT_CASES]
    cases = [(*case[:4], {**old, "entropy": "zstd", **case[4]}) for case in CASES] + context
    switched = [(*case[:4], {**old, "entropy": "context", **case[4]}) for case in SWITCHED_CASES]
    switched += [*PASSES_CASES, *PASSES2_CASES, *RDO_CASES]
    # every case before steps per channel: one step for all channels
    cases = [(*case[:4], {"channel_steps": False, **case[4]}) for case in (*cases, *switched)]
    tagged = [("taef2", *case) for case in cases[: len(cases) - len(switched)]]
    tagged += [("taef2-q2", *case) for case in cases[len(cases) - len(switched) :]]
    tagged += [("taef2-q2", *case) for case in CHANNEL_CASES]
    # every case before the peak search: rate control climbing from the smallest scale
    cases = [(model, *case[:4], {"rate_search": "climb", **case[4]}) for model, *case in tagged]
    cases += [("taef2-q4", *case) for case in LADDER_CASES]
    for model, name, index, box, mode, options in cases:
        data = codecs[model].encode(case_image(kodak, index, box, mode), **options)
        denoiser = latentcodec.info(data).denoiser
        digests[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "denoiser": denoiser}
    for codec in codecs.values():
        codec.close()
    return digests


def main() -> None:
    import os
    import tempfile

    from shared_inputs import KODAK

    with tempfile.TemporaryDirectory() as folder:
        os.environ[DENOISER_ENV] = str(write_seeded_denoiser(Path(folder) / "seeded.safetensors"))
        digests = stream_digests(KODAK)
    FIXTURE.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(digests)} stream digests to {FIXTURE}")


if __name__ == "__main__":
    main()
