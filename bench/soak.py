"""HTTP soak: concurrent clients against a live service with malformed and stalled requests mixed in.

Good requests (encode a small PNG, decode the stream) must all succeed; bad ones (garbage bodies, corrupt
streams, uploads that stall past the server's timeout) must be answered or closed without costing a good one.
"""

from __future__ import annotations

import http.client
import random
import resource
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field

from latentcodec.bindings.http_server import CodecServer


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


@dataclass
class SoakReport:
    good: int = 0
    good_lost: list[str] = field(default_factory=list)
    bad: int = 0
    latencies_s: list[float] = field(default_factory=list)
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    seconds: float = 0.0

    def __str__(self) -> str:
        p50, p99 = (statistics.quantiles(self.latencies_s, n=100)[i] * 1000 for i in (49, 98))
        return (
            f"{self.good} good and {self.bad} bad requests in {self.seconds:.1f} s: good lost {len(self.good_lost)}; "
            f"good round trip p50 {p50:.0f} ms, p99 {p99:.0f} ms; RSS {self.rss_before_mb:.0f} -> "
            f"{self.rss_after_mb:.0f} MB"
        )


def _post(address, path: str, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(*address, timeout=120)
    try:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _bad_request(address, rng: random.Random, stall_s: float) -> None:
    kind = rng.randrange(3)
    if kind == 0:
        _post(address, "/encode", rng.randbytes(rng.randint(1, 2000)))
    elif kind == 1:
        _post(address, "/decode", b"\x89LCZ\x01" + rng.randbytes(rng.randint(1, 300)))
    else:  # a stalled upload: promise a body, send part of it, go quiet
        with socket.create_connection(address, timeout=stall_s + 5) as sock:
            sock.sendall(b"POST /encode HTTP/1.1\r\nHost: soak\r\nContent-Length: 100000\r\n\r\n" + bytes(100))
            sock.recv(1024)  # the server closes it after its timeout


def run(
    server: CodecServer, image_png: bytes, *, clients: int = 8, requests: int = 25, bad_share: float = 0.1
) -> SoakReport:
    """``clients`` threads of ``requests`` requests each against ``server`` (already serving)."""
    address, report, lock = server.server_address[:2], SoakReport(), threading.Lock()
    stall_s = server.limits.timeout_s

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(requests):
            if rng.random() < bad_share:
                _bad_request(address, rng, stall_s)
                with lock:
                    report.bad += 1
                continue
            began = time.perf_counter()
            status, stream = _post(address, "/encode?denoiser=none", image_png)
            answer = _post(address, "/decode", stream) if status == 200 else (status, stream)
            with lock:
                report.good += 1
                report.latencies_s.append(time.perf_counter() - began)
                if answer[0] != 200:
                    report.good_lost.append(f"{answer[0]}: {answer[1][:200]!r}")

    report.rss_before_mb = _rss_mb()
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.perf_counter() - started
    report.rss_after_mb = _rss_mb()
    return report
