"""Where dataset jobs read and write: inputs listed on any pyarrow filesystem, deterministic output names (one
per input, checked), atomic writes, checks of earlier outputs (for resuming) and the manifest. No Ray here."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import posixpath
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from latentcodec.engine.bitstream import unpack
from latentcodec.engine.errors import LatentCodecError

STREAM_SUFFIX = ".lcz"
MANIFEST = "manifest.jsonl"
PARTS = "parts"  # Parquet output: one part per batch, named by its inputs
ROW_FIELDS = ("path", "stream", "width", "height", "bpp", "error")  # the Parquet rows of an encode


@dataclass(frozen=True)
class Location:
    """A folder on a pyarrow filesystem (local paths, ``s3://``, ``gs://``, ...)."""

    filesystem: pafs.FileSystem
    root: str

    @classmethod
    def of(cls, uri: str | os.PathLike) -> Location:
        text = os.fspath(uri)
        if "://" not in text:
            return cls(pafs.LocalFileSystem(), os.path.abspath(text))
        filesystem, root = pafs.FileSystem.from_uri(text)
        return cls(filesystem, root.rstrip("/"))

    def join(self, relative: str) -> str:
        return posixpath.join(self.root, relative) if not self._local else os.path.join(self.root, relative)

    def sub(self, relative: str) -> Location:
        """The folder ``relative`` under this one."""
        return Location(self.filesystem, self.join(relative))

    @property
    def _local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def write_atomic(self, relative: str, data: bytes) -> None:
        """Write ``data`` under a temporary name beside the target, then rename it into place: a reader (or a
        resumed job) sees the whole file or none."""
        target = self.join(relative)
        self.filesystem.create_dir(posixpath.dirname(target) if not self._local else os.path.dirname(target))
        temporary = f"{target}.{uuid.uuid4().hex}.tmp"
        try:
            with self.filesystem.open_output_stream(temporary) as out:
                out.write(data)
            self.filesystem.move(temporary, target)
        finally:
            if self.filesystem.get_file_info(temporary).type != pafs.FileType.NotFound:
                self.filesystem.delete_file(temporary)

    def read(self, relative: str) -> bytes | None:
        """A file's bytes, or None when it is missing or unreadable."""
        try:
            with self.filesystem.open_input_stream(self.join(relative)) as stream:
                return stream.read()
        except (OSError, FileNotFoundError):
            return None

    def all_files(self) -> list[str]:
        """Relative paths of every file under the root, sorted."""
        found = self.filesystem.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        return sorted(_relative(i.path, self.root) for i in found if i.type == pafs.FileType.File)

    def files(self, suffixes: Iterable[str]) -> list[str]:
        """Relative paths of the files under the root with one of ``suffixes``, sorted."""
        return [path for path in self.all_files() if has_suffix(path, suffixes)]

    def delete(self, relative: str) -> None:
        self.filesystem.delete_file(self.join(relative))


def has_suffix(path: str, suffixes: Iterable[str]) -> bool:
    """Whether ``path`` ends in one of ``suffixes`` (any case)."""
    return _suffix(path) in {s.lower() for s in suffixes}


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _relative(path: str, root: str) -> str:
    return posixpath.relpath(path.replace(os.sep, "/"), root.replace(os.sep, "/"))


@dataclass(frozen=True)
class Inputs:
    """Input files: their filesystem, full paths, the relative keys that name their outputs, and the keys of the
    other files a folder holds (not of the suffixes asked for: reported, never silently dropped)."""

    filesystem: pafs.FileSystem
    paths: list[str]
    keys: list[str]
    others: list[str] = field(default_factory=list)


def list_inputs(source: str | os.PathLike | Sequence[str | os.PathLike], suffixes: Iterable[str]) -> Inputs:
    """Inputs from a folder (recursive), a local glob, or a list of paths or URIs (keys relative to their common
    folder)."""
    suffixes = tuple(suffixes)
    if isinstance(source, (str, os.PathLike)) and not glob.has_magic(os.fspath(source)):
        location = Location.of(source)
        info = location.filesystem.get_file_info(location.root)
        if info.type == pafs.FileType.Directory:
            found = location.all_files()
            keys = [key for key in found if has_suffix(key, suffixes)]
            others = [key for key in found if not has_suffix(key, suffixes)]
            return Inputs(location.filesystem, [location.join(k) for k in keys], keys, others)
        source = [source]
    elif isinstance(source, (str, os.PathLike)):
        source = sorted(glob.glob(os.fspath(source), recursive=True))
    locations = [Location.of(path) for path in source]
    if not locations:
        return Inputs(pafs.LocalFileSystem(), [], [])
    roots = [posixpath.dirname(location.root.replace(os.sep, "/")) for location in locations]
    common = posixpath.commonpath(roots) if len(set(roots)) > 1 else roots[0]
    paths = [location.root for location in locations]
    return Inputs(locations[0].filesystem, paths, [_relative(path, common) for path in paths])


def output_name(key: str, suffix: str) -> str:
    """The output of input ``key``: the same relative path with ``suffix``."""
    return os.path.splitext(key)[0] + suffix


class CollidingInputsError(ValueError):
    """Several inputs would be written to one output (``a.png`` and ``a.jpg`` to ``a.lcz``, or a key listed
    twice): refused before any work."""


def check_one_to_one(keys: Sequence[str], output: Callable[[str], str]) -> None:
    """Raise :class:`CollidingInputsError`, naming the inputs, unless every key has an output of its own."""
    claimed: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        claimed[output(key)].append(key)
    clashes = [f"{' and '.join(sorted(inputs))} -> {name}" for name, inputs in claimed.items() if len(inputs) > 1]
    if clashes:
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise CollidingInputsError(
            f"inputs would overwrite each other's output: {'; '.join(clashes[:5])}{more}; "
            "rename or move them (nothing was written)"
        )


def digest(data: bytes) -> str:
    """The sha256 of an input's bytes, as the manifest records it: an output is credited to these bytes."""
    return hashlib.sha256(data).hexdigest()


def stream_is_whole(data: bytes | None) -> bool:
    """Whether earlier output bytes are a complete, checksummed stream."""
    if not data:
        return False
    try:
        unpack(data)
    except LatentCodecError:
        return False
    return True


def part_name(keys: Sequence[str]) -> str:
    """The Parquet part of a batch, named by its inputs: a retried batch overwrites its own part."""
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
    return posixpath.join(PARTS, f"part-{digest}.parquet")


def parquet_bytes(rows: dict[str, list]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(rows), sink)
    return sink.getvalue()


def parquet_keys(location: Location) -> list[str]:
    """Every ``path`` in the Parquet parts under ``location`` (duplicates kept, so they can be counted)."""
    keys: list[str] = []
    for relative in location.files([".parquet"]):
        data = location.read(relative)
        if data is not None:
            keys.extend(pq.read_table(pa.BufferReader(data), columns=["path"]).column("path").to_pylist())
    return keys


def prune_parts(dest: Location, written: set[str], redone: set[str]) -> None:
    """Drop the rows of the inputs written again (``redone``) from the earlier Parquet parts (all but ``written``,
    this run's), so each input keeps one row; a part left empty is deleted."""
    for relative in (posixpath.join(PARTS, name) for name in dest.sub(PARTS).files([".parquet"])):
        data = dest.read(relative) if relative not in written else None
        if data is None:
            continue
        table = pq.read_table(pa.BufferReader(data))
        keep = [path not in redone for path in table.column("path").to_pylist()]
        if not any(keep):
            dest.delete(relative)
        elif not all(keep):
            dest.write_atomic(relative, parquet_bytes(table.filter(pa.array(keep))))


def manifest_records(location: Location) -> list[dict]:
    """The records of ``manifest.jsonl`` under ``location`` (empty when there is none)."""
    data = location.read(MANIFEST)
    return [json.loads(line) for line in data.decode().splitlines() if line] if data else []


def write_manifest(location: Location, records: list[dict]) -> None:
    """One JSON line per input, sorted by path, written atomically."""
    lines = [json.dumps(record, sort_keys=True) for record in sorted(records, key=lambda r: r["path"])]
    location.write_atomic(MANIFEST, ("\n".join(lines) + "\n").encode())
