"""Stream fuzzing: every mutated stream must decode or raise a library error, within a time and memory budget.

Mutations: bit flips, truncations, insertions, header rewrites and slice duplications; half of them re-seal the
CRC, so the parser goes past the checksum into every field. An ``EngineError`` counts as a failure here: a
malformed stream must be refused by the parser, not trip the engine.
"""

from __future__ import annotations

import random
import resource
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from latentcodec.engine.codec import Codec
from latentcodec.engine.errors import EngineError
from latentcodec.engine.format import EntropyMethod
from latentcodec.engine.options import EncodeOptions


def seed_streams(codec: Codec) -> list[bytes]:
    """Small valid streams of every mode and entropy method, with and without alpha and a denoiser entry."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (24, 40), dtype=np.uint8)])
    settings = [{"mode": "scalar8"}, {"mode": "uniform", "step": 1.0}, {"mode": "palette", "palette_size": 8}]
    streams = [codec.encode(rgb, denoiser=None, **options) for options in settings]
    streams.append(codec.encode(rgba, mode="uniform", denoiser=None))
    streams.append(codec.encode(rgb[:, :, 0], mode="uniform", step=2.0, denoiser=None))
    others = [m.label for m in EntropyMethod if m != EncodeOptions().entropy]  # the default's streams are above
    streams += [codec.encode(rgb, mode="uniform", step=1.0, entropy=method, denoiser=None) for method in others]
    return streams


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation of ``data``, its CRC re-sealed half the time."""
    body = bytearray(data[:-4])
    kind = rng.randrange(5)
    if kind == 0:  # flip bits
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del body[rng.randrange(len(body)) :]
    elif kind == 2:  # insert bytes
        at = rng.randrange(len(body) + 1)
        body[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == 3:  # rewrite a header byte (sizes, mode, flags, lengths live in the first 64 bytes)
        body[rng.randrange(min(64, len(body)))] = rng.randrange(256)
    else:  # duplicate a slice
        start = rng.randrange(len(body))
        body[start:start] = body[start : start + rng.randint(1, 64)]
    return _reseal(bytes(body)) if rng.random() < 0.5 else bytes(body) + data[-4:]


@dataclass
class FuzzReport:
    streams: int = 0
    decoded: int = 0
    refused: Counter = field(default_factory=Counter)  # library error type -> count
    failures: list[str] = field(default_factory=list)  # anything but a decode or a library error
    seconds: float = 0.0
    slowest_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def streams_per_s(self) -> float:
        return self.streams / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        refused = ", ".join(f"{name} {count}" for name, count in self.refused.most_common())
        return (
            f"{self.streams} streams in {self.seconds:.1f} s ({self.streams_per_s:.0f}/s): {self.decoded} decoded, "
            f"refused: {refused}; non-library exceptions: {len(self.failures)}; slowest {1000 * self.slowest_s:.0f} ms;"
            f" peak RSS {self.peak_rss_mb:.0f} MB"
        )


def run(
    codec: Codec,
    count: int,
    *,
    seed: int = 0,
    max_pixels: int = 1 << 16,
    progress: Callable[[int], None] | None = None,
) -> FuzzReport:
    """Decode ``count`` mutations of :func:`seed_streams` one by one."""
    rng, seeds, report = random.Random(seed), seed_streams(codec), FuzzReport()
    started = time.perf_counter()
    for _ in range(count):
        data = mutate(rng.choice(seeds), rng)
        began = time.perf_counter()
        try:
            result = codec.decode_batch([data], max_pixels=max_pixels)[0]
        except Exception as exc:  # the batch API must never raise
            report.failures.append(f"raised {type(exc).__name__}: {exc}")
        else:
            if result.ok:
                report.decoded += 1
            elif isinstance(result.error, EngineError):
                report.failures.append(f"{type(result.error).__name__}: {result.error}")
            else:
                report.refused[type(result.error).__name__] += 1
        report.slowest_s = max(report.slowest_s, time.perf_counter() - began)
        report.streams += 1
        if progress:
            progress(1)
    report.seconds = time.perf_counter() - started
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report
