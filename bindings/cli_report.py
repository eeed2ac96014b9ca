"""What ``latentcodec encode|decode`` say about their work.

One line per input on stdout as it is done: ``IN -> OUT: WxH, BYTES bytes, BPP bpp, SECONDS s`` (the stream's
size and bits per pixel: the output of encode, the input of decode; seconds: the item's share of its batch's wall
time); with several inputs a progress bar on stderr (on a terminal) and a summary line at the end. ``--json``
prints one JSON object per input instead (``input``, ``output``, ``width``, ``height``, ``bytes``, ``bpp``,
``seconds``; a failed input: ``input`` and ``error``) and no summary; ``--quiet`` prints nothing. Failures are
always one line each on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from latentcodec.engine.info import StreamInfo


@dataclass(frozen=True)
class Done:
    """An input done: where it went, the stream's size, and the time it took."""

    input: str
    output: str
    width: int
    height: int
    bytes: int
    bpp: float
    seconds: float

    @classmethod
    def of(cls, path: Path, output: Path, stream: StreamInfo, seconds: float) -> Done:
        return cls(str(path), str(output), stream.width, stream.height, stream.total_bytes, stream.bpp, seconds)

    def line(self) -> str:
        size = f"{self.width}x{self.height}, {self.bytes} bytes, {self.bpp:.3f} bpp"
        return f"{self.input} -> {self.output}: {size}, {self.seconds:.2f} s"


class Report:
    """Tells the user about each input of a command (``style``: ``"text"`` or None, ``"json"`` or ``"quiet"``)."""

    def __init__(self, style: str | None, total: int, what: str) -> None:
        self.style, self.total = style or "text", total
        self.done_count = self.failed_count = self.bytes = 0
        self.started = time.perf_counter()
        show_bar = total > 1 and self.style != "quiet"
        self.bar = tqdm(
            total=total, desc=what, unit="img", file=sys.stderr, leave=False, disable=None if show_bar else True
        )

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()

    def advance(self, count: int) -> None:
        """``count`` more inputs settled (the progress bar)."""
        self.bar.update(count)

    def done(self, item: Done) -> None:
        self.done_count += 1
        self.bytes += item.bytes
        if self.style != "quiet":
            tqdm.write(json.dumps(asdict(item)) if self.style == "json" else item.line(), file=sys.stdout)

    def failed(self, path: Path, error: object) -> None:
        self.failed_count += 1
        tqdm.write(f"latentcodec: {path}: {error}", file=sys.stderr)
        if self.style == "json":
            tqdm.write(json.dumps({"input": str(path), "error": str(error)}), file=sys.stdout)

    def rejected(self, path: Path, error: object) -> None:
        """An input that failed before any work (missing, unreadable, its model unavailable)."""
        self.failed(path, error)
        self.advance(1)

    def finish(self) -> bool:
        """Whether every input was done, after the summary line (several inputs, text style)."""
        self.bar.close()
        if self.style == "text" and self.total > 1:
            seconds = time.perf_counter() - self.started
            counts = f"{self.done_count} done, {self.failed_count} failed"
            print(f"{self.total} files: {counts}, {self.bytes} bytes of streams, {seconds:.1f} s")
        return not self.failed_count
