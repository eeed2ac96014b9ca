"""Scale-out bench: images/s of a dataset encode on the local Ray cluster with 1 and 2 workers (one run, so the
ratio is fair), and what each run lost or wrote twice (both must be 0)."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from latentcodec.engine.images import image_files


def _count(dest: Path, keys: list[str], format: str) -> tuple[int, int]:
    """(inputs with neither an output nor a failure record, outputs beyond one per input or left half-written)."""
    from latentcodec.bindings import ray as dataset_jobs
    from latentcodec.bindings.dataset_store import Location, output_name, parquet_keys

    failed = {r["path"] for r in dataset_jobs.read_manifest(dest) if r["status"] == "failed"}
    if format == "parquet":
        written = Counter(parquet_keys(Location.of(dest / "parts")))
    else:
        files = Counter(p.relative_to(dest).as_posix() for p in dest.rglob("*.lcz"))
        written = Counter({key: files.pop(output_name(key, ".lcz"), 0) for key in keys}) + files  # + strays
    lost = sum(1 for key in keys if not written[key] and key not in failed)
    extra = sum(n - 1 for n in written.values() if n > 1) + sum(1 for key in written if key not in keys)
    return lost, extra + len(list(dest.rglob("*.tmp")))


def run(folder: Path, workers: Sequence[int] = (1, 2), limit: int | None = None, **options) -> list[dict]:
    """One encode of the folder's images per worker count (files, then Parquet at the largest count)."""
    from latentcodec.bindings import ray as dataset_jobs

    paths = image_files(folder)[:limit]
    keys = [p.name for p in paths]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "in"
        source.mkdir()
        for path in paths:
            (source / path.name).write_bytes(path.read_bytes())
        runs = [(n, "files") for n in workers] + [(max(workers), "parquet")]
        for count, format in runs:
            dest = Path(scratch) / f"out-{count}-{format}"
            stamps: list[float] = []
            start = time.perf_counter()
            report = dataset_jobs.encode_dataset(
                source,
                dest,
                workers=count,
                format=format,
                progress=lambda n, stamps=stamps: stamps.extend([time.perf_counter()] * n),
                **options,
            )
            wall = time.perf_counter() - start
            lost, duplicates = _count(dest, keys, format)
            steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0
            rows.append(
                {
                    "workers": count,
                    "format": format,
                    "images": len(paths),
                    "done": report.done,
                    "failed": report.failed,
                    "wall_s": wall,
                    "images_per_s": len(paths) / wall,
                    "steady_images_per_s": steady,
                    "lost": lost,
                    "duplicates": duplicates,
                }
            )
    return rows
