"""The actor of a dataset job: one codec; a batch of inputs in, outputs written atomically, records out.

(No Ray here: Ray Data instantiates :class:`CodecWorker` on each worker; :mod:`latentcodec.bindings.ray` runs it.)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from latentcodec.bindings.dataset_store import STREAM_SUFFIX, Location, output_name, parquet_bytes, part_name
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
        readable = [i for i, data in enumerate(payloads) if not isinstance(data, str)]
        results = dict(zip(readable, self._run([payloads[i] for i in readable]), strict=True))
        records, rows = [], {name: [] for name in _row_fields(self.job.direction)}
        for index, key in enumerate(keys):
            result = results.get(index)
            error = payloads[index] if result is None else (None if result.ok else str(result.error))
            value = result.value if result is not None and result.ok else None
            if value is not None and self.job.format == "files":
                error = self._write(output_name(key, self.job.suffix), value)
            records.append(record(key, self.job, value, error))
            _append_row(rows, key, self.job.direction, value, error)
        if self.job.format == "parquet" and keys:
            self.dest.write_atomic(part_name(keys), parquet_bytes(rows))
        return {name: [r[name] for r in records] for name in RECORD_FIELDS}

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

    def _run(self, payloads: list[bytes]) -> list:
        """One result per payload; a library error that stops the whole batch (missing weights) is each one's."""
        try:
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


RECORD_FIELDS = ("path", "output", "status", "error", "bytes", "width", "height", "bpp")


def _row_fields(direction: Direction) -> tuple[str, ...]:
    return ("path", "stream", "width", "height", "bpp", "error") if direction == "encode" else (
        "path", "image", "width", "height", "error")  # fmt: skip


def _stats(direction: Direction, value: bytes | None) -> tuple[int, int, float]:
    """(width, height, bpp) of an output (zeros for none)."""
    if value is None:
        return 0, 0, 0.0
    if direction == "decode":
        from PIL import Image

        width, height = Image.open(io.BytesIO(value)).size
        return width, height, 0.0
    header = unpack(value).header
    return header.width, header.height, len(value) * 8 / (header.width * header.height)


def record(key: str, job: Job, value: bytes | None, error: str | None, status: str | None = None) -> dict:
    width, height, bpp = _stats(job.direction, value)
    output = output_name(key, job.suffix) if job.format == "files" else ""
    return {
        "path": key,
        "output": output if error is None else "",
        "status": status or ("failed" if error is not None else "done"),
        "error": error or "",
        "bytes": len(value) if value is not None and error is None else 0,
        "width": width,
        "height": height,
        "bpp": bpp,
    }


def _append_row(rows: dict[str, list], key: str, direction: Direction, value: bytes | None, error: str | None):
    width, height, bpp = _stats(direction, value)
    payload = value if error is None else None
    rows["path"].append(key)
    rows["stream" if direction == "encode" else "image"].append(payload)
    rows["width"].append(width)
    rows["height"].append(height)
    if direction == "encode":
        rows["bpp"].append(bpp)
    rows["error"].append(error)
