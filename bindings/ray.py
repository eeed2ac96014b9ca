"""Encode and decode image datasets on a Ray cluster (``pip install latentcodec[ray]``), losing nothing.

Ray Data streams the inputs through ``map_batches`` into an actor pool: each actor holds one :class:`Codec`
(one per GPU with ``gpus_per_worker=1``, warm CUDA graphs; CPU actors otherwise). Outputs are written by the
actors, atomically, under names fixed by the inputs (``a/b.png`` -> ``DEST/a/b.lcz``; Parquet: one part per
batch, named by its inputs), so a retried task or a restarted actor (Ray Data restarts both) rewrites the same
files and never leaves a partial or second copy. A bad image becomes an error row, never a failed job. A re-run
skips the inputs whose outputs are already whole (streams are checksummed). ``DEST/manifest.jsonl`` lists every
input with its outcome.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from latentcodec.bindings.dataset_store import (
    MANIFEST,
    PARTS,
    STREAM_SUFFIX,
    Location,
    list_inputs,
    output_name,
    parquet_keys,
    stream_is_whole,
    write_manifest,
)
from latentcodec.bindings.dataset_worker import RECORD_FIELDS, CodecWorker, Direction, Job, OutputFormat, record
from latentcodec.engine.images import IMAGE_SUFFIXES
from latentcodec.engine.models import DEFAULT_MODEL

Progress = Callable[[int], None]
_ENV_PREFIX = "LATENTCODEC_"  # passed to the workers (weights folder, download permission)


@dataclass
class Report:
    """A finished run: one manifest record per input; ``done`` counts outputs made now, ``skipped`` those
    found whole from an earlier run."""

    records: list[dict]

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def failed(self) -> int:
        return self.count("failed")


def encode_dataset(source, dest, **kwargs) -> Report:
    """Encode images to ``dest``: one ``.lcz`` per input under its relative path (``format="files"``) or
    Parquet rows ``path, stream, width, height, bpp, error`` (``"parquet"``). ``source``: a folder, a glob, a
    list of paths or URIs, a Parquet file or folder (``image_column``, ``key_column``) or WebDataset shards
    (``*.tar``); any pyarrow filesystem. Keywords: ``format``, ``address``, ``workers``, ``gpus_per_worker``,
    ``model``, ``device``, ``batch_size``, ``tile``, ``progress`` and the encode options (:class:`EncodeOptions`)."""
    return _run("encode", source, dest, **kwargs)


def decode_dataset(source, dest, *, denoise: bool = True, **kwargs) -> Report:
    """Decode streams (a folder of ``.lcz``, a list, or Parquet rows with a ``stream`` column) to PNG files under
    the same relative paths, or Parquet rows ``path, image, width, height, error``."""
    kwargs.setdefault("image_column", "stream")
    return _run("decode", source, dest, options={"denoise": denoise}, **kwargs)


def _run(
    direction: Direction,
    source,
    dest,
    *,
    format: OutputFormat = "files",
    address: str | None = None,
    workers: int = 1,
    gpus_per_worker: float = 0,
    model: str = DEFAULT_MODEL,
    device: str | None = None,
    batch_size: int = 8,
    tile: int | None = None,
    image_column: str = "image",
    key_column: str = "path",
    progress: Progress | None = None,
    options: dict | None = None,
    **encode_options,
) -> Report:
    if format not in ("files", "parquet"):
        raise ValueError(f"format must be 'files' or 'parquet', not {format!r}")
    if direction == "encode":
        from latentcodec.engine.options import EncodeOptions

        options = EncodeOptions(**encode_options).as_dict()  # invalid options fail here, before any work
    elif encode_options:
        raise TypeError(f"unexpected options for decoding: {sorted(encode_options)}")
    job = Job(direction, os.fspath(dest), format, model, device, batch_size, tile, options or {})
    if not ray.is_initialized() and address:
        ray.init(address=address)  # join a running cluster ("auto": the one on this machine)
    elif not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)  # start a local one
    target = Location.of(job.dest)
    dataset, keys, source_fs = _dataset(direction, source, image_column, key_column)
    finished = _finished(target, job, keys)
    skipped = [record(key, job, value, None, "skipped") for key, value in finished.items()]
    if finished:
        dataset = dataset.filter(lambda row, done=frozenset(finished): row["key"] not in done)
    env = {name: value for name, value in os.environ.items() if name.startswith(_ENV_PREFIX)}
    results = dataset.map_batches(
        CodecWorker,
        fn_constructor_kwargs={"job": job, "source_fs": source_fs},
        batch_size=batch_size,
        concurrency=workers,
        num_gpus=gpus_per_worker or None,
        num_cpus=1,
        batch_format="numpy",
        runtime_env={"env_vars": env},
    )
    records = list(skipped)
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        count = len(batch["path"])
        records.extend({name: _plain(batch[name][i]) for name in RECORD_FIELDS} for i in range(count))
        if progress:
            progress(count)
    records = _latest(records)
    write_manifest(target, records)
    return Report(records)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _latest(records: list[dict]) -> list[dict]:
    """One record per input: a retried batch reports again; its last word stands."""
    return list({record["path"]: record for record in records}.values())


def _dataset(direction: Direction, source, image_column: str, key_column: str):
    """(Ray dataset of ``key`` and ``path`` or ``bytes`` rows, every key, the filesystem workers read from)."""
    text = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ""
    if text.endswith(".parquet") or (text and os.path.isdir(text) and _only_parquet(text)):
        columns = [key_column, image_column]
        table = pq.read_table(text, columns=[key_column])
        keys = [str(k) for k in table.column(key_column).to_pylist()]
        data = ray.data.read_parquet(text, columns=columns).rename_columns({key_column: "key", image_column: "bytes"})
        return data, keys, None
    if text.endswith(".tar") or (isinstance(source, (list, tuple)) and str(source[0]).endswith(".tar")):
        return _webdataset(source)
    suffixes = IMAGE_SUFFIXES if direction == "encode" else {STREAM_SUFFIX}
    inputs = list_inputs(source, suffixes)
    items = [{"key": k, "path": p} for k, p in zip(inputs.keys, inputs.paths, strict=True)]
    return ray.data.from_items(items), inputs.keys, inputs.filesystem


def _only_parquet(folder: str) -> bool:
    names = [n for n in os.listdir(folder) if not n.startswith((".", "_"))]
    return bool(names) and all(n.endswith(".parquet") for n in names)


def _webdataset(source):
    """Samples of WebDataset shards: the first image member of each sample (``key.ext`` names it)."""
    data = ray.data.read_webdataset(source, decoder=None)  # the raw bytes of each member

    def pick(row: dict) -> dict:
        for name, value in row.items():
            if "." + name.lower() in IMAGE_SUFFIXES:
                return {"key": f"{row['__key__']}.{name}", "bytes": value}
        return {"key": str(row["__key__"]), "bytes": None}

    rows = data.map(pick).materialize()  # the shards are read once; the keys come from the materialized rows
    keys = [row["key"] for row in rows.select_columns(["key"]).take_all()]
    return rows, keys, None


def _finished(target: Location, job: Job, keys: Sequence[str]) -> dict[str, bytes | None]:
    """Inputs an earlier run finished: a whole output file (checked), or a row in a Parquet part."""
    if job.format == "parquet":
        written = set(parquet_keys(Location(target.filesystem, target.join(PARTS))))
        return {key: None for key in keys if key in written}
    finished = {}
    for key in keys:
        data = target.read(output_name(key, job.suffix))
        if data is not None and (stream_is_whole(data) if job.direction == "encode" else _png_is_whole(data)):
            finished[key] = data
    return finished


def _png_is_whole(data: bytes) -> bool:
    from PIL import Image

    try:
        Image.open(io.BytesIO(data)).load()
    except Exception:
        return False
    return True


def read_manifest(dest) -> list[dict]:
    """The records of ``DEST/manifest.jsonl`` (empty when there is none)."""
    data = Location.of(dest).read(MANIFEST)
    return [json.loads(line) for line in data.decode().splitlines() if line] if data else []


def parquet_rows(dest) -> pa.Table:
    """Every row a Parquet run wrote (its parts together)."""
    location = Location.of(dest)
    parts = Location(location.filesystem, location.join(PARTS))
    tables = [pq.read_table(pa.BufferReader(parts.read(name))) for name in parts.files([".parquet"])]
    return pa.concat_tables(tables) if tables else pa.table({})
