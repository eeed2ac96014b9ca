"""Encode and decode image datasets on a Ray cluster (``pip install latentcodec[ray]``), losing nothing.

Ray Data streams the inputs through ``map_batches`` into an actor pool: each actor holds one :class:`Codec`
(one per GPU with ``gpus_per_worker=1``, warm CUDA graphs; CPU actors otherwise). Outputs are written by the
actors, atomically, under names fixed by the inputs (``a/b.png`` -> ``DEST/a/b.lcz``; Parquet: one part per
batch, named by its inputs), so a retried task or a restarted actor (Ray Data restarts both) rewrites the same
files and never leaves a partial or second copy; inputs that would share an output are refused before any work.
A bad image becomes an error row, never a failed job. A re-run skips the inputs whose outputs are already whole
(streams are checksummed) and were made from the same bytes (the manifest records each input's sha256).
``DEST/manifest.jsonl`` lists every input with its outcome, and the files of a source folder that are not inputs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from latentcodec.bindings.dataset_latents import LATENT_SUFFIXES, latent_options
from latentcodec.bindings.dataset_store import (
    MANIFEST,
    PARTS,
    STREAM_SUFFIX,
    CollidingInputsError,
    Location,
    check_one_to_one,
    list_inputs,
    manifest_records,
    output_name,
    parquet_keys,
    prune_parts,
    stream_is_whole,
    write_manifest,
)
from latentcodec.bindings.dataset_worker import RECORD_FIELDS, CodecWorker, Direction, Job, OutputFormat, record
from latentcodec.engine.images import IMAGE_SUFFIXES
from latentcodec.engine.models import DEFAULT_MODEL

__all__ = [
    "CollidingInputsError",
    "Progress",
    "Report",
    "connect",
    "decode_dataset",
    "encode_dataset",
    "parquet_rows",
    "read_manifest",
]

_ENV_PREFIX = "LATENTCODEC_"  # passed to the workers (weights folder, download permission)


class Progress(Protocol):
    """Where a job reports how far it is (a ``tqdm`` bar is one): ``reset`` with the number of inputs to run,
    then ``update`` with each finished batch's count."""

    def reset(self, total: int | None = None) -> object: ...

    def update(self, n: int = 1) -> object: ...


@dataclass
class Report:
    """A finished run: one manifest record per input; ``done`` counts outputs made now, ``skipped`` those
    found whole from an earlier run of the same input bytes, ``ignored`` the files of a source folder that are not
    images (for a decode: not ``.lcz`` streams)."""

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

    @property
    def ignored(self) -> int:
        return self.count("ignored")


def encode_dataset(source, dest, **kwargs) -> Report:
    """Encode images to ``dest``: one ``.lcz`` per input under its relative path (``format="files"``) or
    Parquet rows ``path, stream, width, height, bpp, error`` (``"parquet"``). ``source``: a folder, a glob, a
    list of paths or URIs, a Parquet file or folder (``image_column``, ``key_column``) or WebDataset shards
    (``*.tar``); any pyarrow filesystem. Keywords: ``format``, ``address``, ``workers``, ``gpus_per_worker``,
    ``model``, ``device``, ``batch_size``, ``tile``, ``progress`` (:class:`Progress`) and the encode options
    (:class:`EncodeOptions`). ``latents=True``: latent streams of the model's latent space instead (the options
    :class:`LatentOptions`'). Raises :class:`CollidingInputsError` before any work when two inputs would share an
    output (``a.png`` and ``a.jpg``: ``a.lcz``)."""
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
    latents: bool = False,
    **encode_options,
) -> Report:
    if format not in ("files", "parquet"):
        raise ValueError(f"format must be 'files' or 'parquet', not {format!r}")
    if direction == "encode" and latents:
        options = latent_options(encode_options)  # invalid options fail here, before any work
    elif direction == "encode":
        from latentcodec.engine.options import EncodeOptions

        options = EncodeOptions(**encode_options).as_dict()  # invalid options fail here, before any work
    elif encode_options:
        raise TypeError(f"unexpected options for decoding: {sorted(encode_options)}")
    job = Job(direction, os.fspath(dest), format, model, device, batch_size, tile, options or {}, latents)
    connect(address)
    target = Location.of(job.dest)
    suffixes = IMAGE_SUFFIXES | set(LATENT_SUFFIXES) if latents else IMAGE_SUFFIXES
    dataset, keys, source_fs, others = _dataset(direction, source, image_column, key_column, suffixes)
    check_one_to_one(keys, (lambda key: output_name(key, job.suffix)) if format == "files" else str)
    credits = _credits(target, job, keys)
    if progress is not None:
        progress.reset(total=len(keys))
    made = _execute(_with_credits(dataset, credits), job, source_fs, workers, gpus_per_worker, progress)
    records = [_ignored(key, direction) for key in others]
    records += [{**credits[r["path"]], "status": "skipped"} if r["status"] == "skipped" else r for r in made]
    if format == "parquet":
        fresh = [r for r in records if r["status"] in ("done", "failed")]
        prune_parts(target, {r["output"] for r in fresh}, {r["path"] for r in fresh})
    write_manifest(target, records)
    return Report(records)


def connect(address: str | None = None, **init_args) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the running one) or start a local one, unless Ray is up
    already (``init_args`` go to ``ray.init``); whether this call started Ray."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, **init_args)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, **init_args)
    return True


def _execute(
    dataset: ray.data.Dataset,
    job: Job,
    source_fs,
    workers: int,
    gpus_per_worker: float,
    progress: Progress | None,
) -> list[dict]:
    """Run the rows through an actor pool of :class:`CodecWorker`; one record per row (its last, when retried)."""
    env = {name: value for name, value in os.environ.items() if name.startswith(_ENV_PREFIX)}
    results = dataset.map_batches(
        CodecWorker,
        fn_constructor_kwargs={"job": job, "source_fs": source_fs},
        batch_size=job.batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=gpus_per_worker or None,
        num_cpus=1,
        batch_format="numpy",
        runtime_env={"env_vars": env},
    )
    records = []
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        count = len(batch["path"])
        records.extend({name: _plain(batch[name][i]) for name in RECORD_FIELDS} for i in range(count))
        if progress is not None:
            progress.update(count)
    return _latest(records)


def _with_credits(dataset: ray.data.Dataset, credits: dict[str, dict]) -> ray.data.Dataset:
    """The rows with a ``credit`` column: the input digest an earlier output is credited to ("" for none)."""
    if not credits:
        return dataset
    digests = {key: r["sha256"] for key, r in credits.items()}

    def add(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**batch, "credit": np.array([digests.get(str(key), "") for key in batch["key"]])}

    return dataset.map_batches(add, batch_format="numpy")


def _ignored(key: str, direction: Direction) -> dict:
    what = "an image" if direction == "encode" else f"a {STREAM_SUFFIX} stream"
    return record(key, "ignored", error=f"not {what} ({os.path.splitext(key)[1] or 'no suffix'})")


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _latest(records: list[dict]) -> list[dict]:
    """One record per input: a retried batch reports again; its last word stands."""
    return list({record["path"]: record for record in records}.values())


def _dataset(direction: Direction, source, image_column: str, key_column: str, inputs=IMAGE_SUFFIXES):
    """(Ray dataset of ``key`` and ``path`` or ``bytes`` rows, every key, the filesystem workers read from, the
    keys of the files a source folder holds that are not inputs, but for an earlier job's manifest)."""
    text = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ""
    if text.endswith(".parquet") or (text and os.path.isdir(text) and _only_parquet(text)):
        columns = [key_column, image_column]
        table = pq.read_table(text, columns=[key_column])
        keys = [str(k) for k in table.column(key_column).to_pylist()]
        data = ray.data.read_parquet(text, columns=columns).rename_columns({key_column: "key", image_column: "bytes"})
        return data, keys, None, []
    if text.endswith(".tar") or (isinstance(source, (list, tuple)) and str(source[0]).endswith(".tar")):
        return (*_webdataset(source), [])
    suffixes = inputs if direction == "encode" else {STREAM_SUFFIX}
    inputs = list_inputs(source, suffixes)
    items = [{"key": k, "path": p} for k, p in zip(inputs.keys, inputs.paths, strict=True)]
    others = [key for key in inputs.others if key != MANIFEST]
    return ray.data.from_items(items), inputs.keys, inputs.filesystem, others


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


def _credits(target: Location, job: Job, keys: Sequence[str]) -> dict[str, dict]:
    """The earlier manifest's records of the outputs still whole (a file that checks, or a row in a Parquet part),
    by input: an input whose bytes still have the record's sha256 is skipped."""
    earlier = {r["path"]: r for r in manifest_records(target) if r["status"] in ("done", "skipped") and r.get("sha256")}
    if job.format == "parquet":
        written = set(parquet_keys(target.sub(PARTS)))
        return {key: earlier[key] for key in keys if key in earlier and key in written}
    return {key: earlier[key] for key in keys if key in earlier and _output_is_whole(target, job, key)}


def _output_is_whole(target: Location, job: Job, key: str) -> bool:
    data = target.read(output_name(key, job.suffix))
    return data is not None and (stream_is_whole(data) if job.direction == "encode" else _png_is_whole(data))


def _png_is_whole(data: bytes) -> bool:
    from PIL import Image

    try:
        Image.open(io.BytesIO(data)).load()
    except Exception:
        return False
    return True


def read_manifest(dest) -> list[dict]:
    """The records of ``DEST/manifest.jsonl`` (empty when there is none)."""
    return manifest_records(Location.of(dest))


def parquet_rows(dest) -> pa.Table:
    """Every row a Parquet run wrote (its parts together)."""
    parts = Location.of(dest).sub(PARTS)
    tables = [pq.read_table(pa.BufferReader(parts.read(name))) for name in parts.files([".parquet"])]
    return pa.concat_tables(tables) if tables else pa.table({})
