"""The measurement behind taef2-q2's noise-level threshold: TAEF2's decoder against taef2-q's on the held-out
photos (the last 4 of ``../shared/data/photos``, never trained on; shrunk to 768 px), at uniform steps over the
scales rate control uses and at two palettes, with each point's mean noise level. The tuned decoder starts to win
where the level passes about 0.3-0.4 (README, "Trained synthesis"). ``python -m latentcodec.training.switch_threshold
OUT.jsonl`` writes one JSON line per point (about 40 minutes on the 2-core CPU).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from PIL import Image

from latentcodec.bench import decoder_gain
from latentcodec.engine.codec import Codec
from latentcodec.engine.images import image_files
from latentcodec.engine.info import info
from latentcodec.training.decoder import SHARED

POINTS = (
    *((f"step {s} @ 1", {"step": s}) for s in (0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5)),
    *((f"step {s} @ 0.5", {"step": s, "scale": 0.5}) for s in (0.5, 1.0, 1.5, 2.0)),
    *((f"step {s} @ 0.35", {"step": s, "scale": 0.35}) for s in (0.5, 1.0, 1.5)),
    *((f"palette {n}", {"mode": "palette", "palette_size": n}) for n in (32, 128)),
)


def main(argv: list[str] | None = None) -> None:
    output = Path((argv if argv is not None else sys.argv[1:])[0])
    codec = Codec("taef2-q")
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for path in image_files(SHARED / "photos")[-4:]:
            image = Image.open(path).convert("RGB")
            image.thumbnail((768, 768), Image.Resampling.LANCZOS)
            image.save(Path(folder) / path.name)
            paths.append(Path(folder) / path.name)
        with output.open("w") as handle:
            for label, options in POINTS:
                streams = [codec.encode(Image.open(p), denoiser=None, **options) for p in paths]
                records = decoder_gain.run(paths, [(label, options)], models=("taef2", "taef2-q"))
                row = decoder_gain.summarize(records)[0]
                row["noise_level"] = sum(info(data).decoder_noise_level for data in streams) / len(streams)
                handle.write(json.dumps(row) + "\n")
                handle.flush()


if __name__ == "__main__":
    main()
