"""The actor of a dataset job: one codec; a batch of inputs in, outputs written atomically, records out. An input
whose bytes match the digest an earlier run's output is credited to (the ``credit`` column) is skipped.

(No Ray here: Ray Data instantiates :class:`CodecWorker` on each worker; :mod:`latentcodec.bindings.ray` runs it.)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from latentcodec.bindings.dataset_latents import latent_streams
from latentcodec.bindings.dataset_store import (
    STREAM_SUFFIX,
    Location,
    digest,
    output_name,
    parquet_bytes,
    part_name,
)
from latentcodec.engine.bitstream import unpack
from latentcodec.engine.errors import LatentCodecError
from latentcodec.engine.models import DEFAULT_MODEL
from latentcodec.engine.results import Result

OutputFormat = Literal["files", "parquet"]
Direction = Literal["encode", "decode"]


@dataclass(frozen=True)
class Job:
    """What every worker of one dataset run needs (pickled to the actors)."""

    direction: Direction
    dest: str
    format: OutputFormat = "files"
    model: str = DEFAULT_MODEL
    device: str | None = None
    batch_size: int = 8
    tile: int | None = None
    options: dict = field(default_factory=dict)  # encode options, or {"denoise": bool} for decoding
    latents: bool = False  # encode to latent streams (options: LatentOptions'), not image streams

    @property
    def suffix(self) -> str:
        return STREAM_SUFFIX if self.direction == "encode" else ".png"


class CodecWorker:
    """A Ray Data actor: one codec; a batch of inputs in, outputs written, manifest rows out."""

    def __init__(self, job: Job, source_fs=None) -> None:
        from latentcodec.engine.codec import Codec

        self.job, self.source_fs = job, source_fs
        self.codec = Codec(job.model, device=job.device, batch_size=job.batch_size, tile=job.tile)
        self.dest = Location.of(job.dest)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        keys = [str(k) for k in batch["key"]]
        payloads = self._payloads(batch, keys)
        digests = [digest(data) if isinstance(data, bytes) else "" for data in payloads]
        credits = [str(c) for c in batch["credit"]] if "credit" in batch else [""] * len(keys)
        fresh = [i for i in range(len(keys)) if not digests[i] or digests[i] != credits[i]]
        readable = [i for i in fresh if digests[i]]
        results = dict(
            zip(readable, self._run([payloads[i] for i in readable], [keys[i] for i in readable]), strict=True)
        )
        part = part_name([keys[i] for i in fresh]) if self.job.format == "parquet" else None
        records, rows = [], {name: [] for name in _row_fields(self.job.direction)}
        for index, key in enumerate(keys):
            if index in fresh:
                records.append(self._made(key, payloads[index], results.get(index), digests[index], part, rows))
            else:
                records.append(record(key, "skipped", sha256=digests[index]))  # the driver fills in the rest
        if part is not None and fresh:
            self.dest.write_atomic(part, parquet_bytes(rows))
        return {name: [r[name] for r in records] for name in RECORD_FIELDS}

    def _made(
        self, key: str, payload: bytes | str, result: Result | None, sha256: str, part: str | None, rows: dict
    ) -> dict:
        """The record of an input run now (its output written, or its Parquet row added to ``rows``)."""
        value, error = self._outcome(key, payload, result)
        stats = stream_stats(None if value is None else value if self.job.direction == "encode" else payload)
        _append_row(rows, key, self.job.direction, value, error, stats)
        output = part or (output_name(key, self.job.suffix) if value is not None else "")
        size = len(value) if value is not None else 0
        status = "done" if error is None else "failed"
        return record(key, status, output=output, error=error or "", bytes=size, sha256=sha256, **stats)

    def _outcome(self, key: str, payload: bytes | str, result: Result | None) -> tuple[bytes | None, str | None]:
        """(the output, written when the outputs are files; or the error): ``payload`` is the error text of an
        unreadable input."""
        if result is None:
            return None, str(payload)
        if not result.ok:
            return None, str(result.error)
        if self.job.format == "files":
            error = self._write(output_name(key, self.job.suffix), result.value)
            return (None, error) if error else (result.value, None)
        return result.value, None

    def _payloads(self, batch: dict[str, np.ndarray], keys: list[str]) -> list[bytes | str]:
        """Each input's bytes, or the error text of reading it."""
        if "bytes" in batch:
            return [bytes(data) if data is not None else "empty input" for data in batch["bytes"]]
        payloads: list[bytes | str] = []
        for path in batch["path"]:
            try:
                with self.source_fs.open_input_stream(str(path)) as stream:
                    payloads.append(stream.read())
            except OSError as exc:
                payloads.append(f"cannot read {path}: {exc}")
        return payloads

    def _run(self, payloads: list[bytes], keys: list[str]) -> list:
        """One result per payload; a library error that stops the whole batch (missing weights) is each one's."""
        try:
            if self.job.direction == "encode" and self.job.latents:
                return latent_streams(self.codec, payloads, keys, self.job.options)
            if self.job.direction == "encode":
                return self.codec.encode_batch(payloads, **self.job.options)
            decoded = self.codec.decode_batch(payloads, denoise=self.job.options.get("denoise", True))
        except LatentCodecError as exc:
            return [Result(error=exc)] * len(payloads)
        return [_png_result(result) for result in decoded]

    def _write(self, relative: str, data: bytes) -> str | None:
        try:
            self.dest.write_atomic(relative, data)
        except OSError as exc:
            return f"cannot write {relative}: {exc}"
        return None


def _png_result(result: Result) -> Result:
    if not result.ok:
        return result
    out = io.BytesIO()
    result.value.save(out, format="PNG")
    return Result(out.getvalue())


RECORD_FIELDS = ("path", "output", "status", "error", "bytes", "width", "height", "bpp", "sha256")
EMPTY_RECORD = {"output": "", "error": "", "bytes": 0, "width": 0, "height": 0, "bpp": 0.0, "sha256": ""}


def record(key: str, status: str, **fields) -> dict:
    """A manifest record: ``status`` is done, skipped (whole from an earlier run), failed or ignored (not an
    input of this direction); ``sha256`` is the input's digest, which the output is credited to."""
    return {**EMPTY_RECORD, "path": key, "status": status, **fields}


def _row_fields(direction: Direction) -> tuple[str, ...]:
    return ("path", "stream", "width", "height", "bpp", "error") if direction == "encode" else (
        "path", "image", "width", "height", "error")  # fmt: skip


def stream_stats(stream: bytes | None) -> dict[str, int | float]:
    """Width, height and bpp of a stream (the output of an encode, the input of a decode); zeros for none."""
    if stream is None:
        return {"width": 0, "height": 0, "bpp": 0.0}
    header = unpack(stream).header
    return {"width": header.width, "height": header.height, "bpp": len(stream) * 8 / (header.width * header.height)}


def _append_row(
    rows: dict[str, list], key: str, direction: Direction, value: bytes | None, error: str | None, stats: dict
) -> None:
    """Add an input's Parquet row (the rows of the other layout are never written)."""
    rows["path"].append(key)
    rows["stream" if direction == "encode" else "image"].append(value)
    rows["width"].append(stats["width"])
    rows["height"].append(stats["height"])
    if direction == "encode":
        rows["bpp"].append(stats["bpp"])
    rows["error"].append(error)
