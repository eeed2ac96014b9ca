"""The HTTP service on loopback (a real uvicorn server): round trips, uploads, errors as JSON, limits, metrics,
the OpenAPI schema, shutdown."""

import http.client
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from latentcodec import Codec
from latentcodec.bindings.http_server import CodecServer
from latentcodec.bindings.http_service import create_app, parse_options
from latentcodec.engine.options import EncodeOptions


@pytest.fixture(scope="module")
def server(codec):
    server = CodecServer(("127.0.0.1", 0), codec, max_latency_ms=2, max_body=1 << 20)
    server.serve_in_background()
    yield server
    server.shutdown()
    server.server_close()


def _request(server, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type"), payload


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_encode_then_decode_over_http(server, codec, kodak_crop):
    status, kind, stream = _request(
        server, "POST", "/encode?mode=palette&palette_size=16&dither=false", _png(kodak_crop)
    )
    assert status == 200 and kind == "image/x-latentcodec", stream[:500]
    assert stream == codec.encode(kodak_crop, mode="palette", palette_size=16, dither=False)
    status, kind, png = _request(server, "POST", "/decode", stream)
    assert status == 200 and kind == "image/png"
    decoded = Image.open(io.BytesIO(png))
    assert decoded.size == kodak_crop.size
    assert np.array_equal(np.asarray(decoded), np.asarray(codec.decode(stream)))
    _, _, plain = _request(server, "POST", "/decode?denoise=0", stream)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(plain))), np.asarray(codec.decode(stream, denoise=False)))


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("POST", "/encode", b"not an image", 400, "InvalidImageError"),
        ("POST", "/encode?quality=500", b"x", 400, "ValueError"),
        ("POST", "/encode?colour=blue", b"x", 400, "ValueError"),
        ("POST", "/decode", b"\x89LCZ\x01broken", 400, "TruncatedStreamError"),
        ("POST", "/decode?denoise=maybe", b"x", 400, "ValueError"),
        ("POST", "/encode?denoiser=nope", b"x", 400, "ValueError"),
        ("POST", "/transcode", b"x", 404, "LookupError"),
        ("GET", "/nothing", None, 404, "LookupError"),
        ("POST", "/encode", b"x" * (2 << 20), 413, "ValueError"),
    ],
)
def test_errors_are_json_with_a_status(server, method, path, body, status, error):
    code, kind, payload = _request(server, method, path, body)
    assert code == status and kind == "application/json"
    assert json.loads(payload)["type"] == error


def test_health(server):
    status, _, payload = _request(server, "GET", "/health")
    assert status == 200 and json.loads(payload)["model"] == "taef2"


def test_options_are_typed_from_the_query():
    assert parse_options("mode=uniform&step=0.5&dither=no&level=3") == EncodeOptions(
        mode="uniform", step=0.5, dither=False, level=3
    )
    with pytest.raises(ValueError, match="bad value"):
        parse_options("level=high")


def test_an_unexpected_engine_failure_is_a_500_not_a_dropped_connection(server, kodak_crop, monkeypatch):
    from concurrent.futures import Future

    def broken(*_args, **_kwargs):
        future = Future()
        future.set_exception(RuntimeError("device lost"))
        return future

    monkeypatch.setattr(server.queue, "encode", broken)
    status, kind, payload = _request(server, "POST", "/encode", _png(kodak_crop))
    assert status == 500 and kind == "application/json"
    assert json.loads(payload) == {"error": "device lost", "type": "RuntimeError"}


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of (name, filename or None, content) parts, and its Content-Type header."""
    boundary = "latentcodec-test-boundary"
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_multipart_uploads_carry_the_file_and_the_options(server, codec, kodak_crop):
    body, headers = _multipart([("image", "crop.png", _png(kodak_crop)), ("mode", None, b"palette")])
    status, kind, stream = _request(server, "POST", "/encode?palette_size=16&dither=false", body, headers)
    assert status == 200 and kind == "image/x-latentcodec", stream[:500]
    assert stream == codec.encode(kodak_crop, mode="palette", palette_size=16, dither=False)
    body, headers = _multipart([("stream", "x.lcz", stream), ("denoise", None, b"0")])
    status, kind, png = _request(server, "POST", "/decode", body, headers)
    assert status == 200 and np.array_equal(
        np.asarray(Image.open(io.BytesIO(png))), np.asarray(codec.decode(stream, denoise=False))
    )
    for parts in ([("mode", None, b"palette")], [("a", "a.png", b"x"), ("b", "b.png", b"y")]):
        code, _, payload = _request(server, "POST", "/encode", *_multipart(parts))
        assert code == 400 and json.loads(payload)["type"] == "ValueError"


def test_a_chunked_body_is_read_and_one_past_the_limit_is_refused_while_it_streams(server, kodak_crop):
    connection = http.client.HTTPConnection(*server.server_address, timeout=60)
    connection.request("POST", "/encode?denoiser=none", body=iter([_png(kodak_crop)]), encode_chunked=True)
    assert connection.getresponse().status == 200
    connection.close()
    with socket.create_connection(server.server_address, timeout=30) as sock:
        sock.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(17):  # 17 x 64 KiB: just past the 1 MiB limit, and the body never ends
            sock.sendall(b"10000\r\n" + bytes(1 << 16) + b"\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_client_expecting_100_continue_gets_the_413_before_sending(server):
    with socket.create_connection(server.server_address, timeout=30) as sock:
        sock.sendall(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # then the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()


def test_an_image_over_max_pixels_is_refused_from_its_header(server, monkeypatch):
    from hostile_inputs import png_bomb

    big = png_bomb(4096, 4096)  # 16.8 Mpixel in a few KB: under the body limit, over the 4.2 Mpixel one
    assert len(big) < server.limits.max_body
    monkeypatch.setattr(server.queue, "encode", lambda *a, **k: pytest.fail("the image reached the encoder"))
    status, _, payload = _request(server, "POST", "/encode?denoiser=none", big)
    assert status == 413 and json.loads(payload) == {
        "error": "image 4096x4096 is over this service's limit of 4194304 pixels",
        "type": "LimitError",
    }


def test_metrics_count_requests_errors_batches_and_latency(server, kodak_crop):
    _request(server, "POST", "/encode?denoiser=none", _png(kodak_crop))
    _request(server, "POST", "/encode?quality=500", b"x")
    status, kind, text = _request(server, "GET", "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    lines = text.decode().splitlines()
    for expected in (
        'latentcodec_http_requests_total{route="/encode",status="200"}',
        'latentcodec_http_errors_total{route="/encode",type="ValueError"}',
        'latentcodec_http_request_seconds_count{route="/encode"}',
        'latentcodec_batch_size_count{kind="encode"}',
        "latentcodec_queue_depth 0.0",
    ):
        assert any(line.startswith(expected) for line in lines), expected


def test_each_app_has_its_own_metrics_registry(codec):
    apps = [create_app(codec) for _ in range(2)]
    for app in apps:
        app.state.service.queue.close()
    assert apps[0].state.service.metrics.registry is not apps[1].state.service.metrics.registry


def test_the_openapi_schema_is_the_encode_options_schema(server):
    status, _, payload = _request(server, "GET", "/openapi.json")
    spec = json.loads(payload)
    encode = spec["paths"]["/encode"]["post"]
    names = [parameter["name"] for parameter in encode["parameters"]]
    assert status == 200 and names == [n for n in EncodeOptions.names() if n != "target_psnr"]  # not allowed here
    schema = {p["name"]: p["schema"] for p in encode["parameters"]}
    assert schema["mode"] == {
        "type": "string",
        "description": "coding mode",
        "enum": ["scalar8", "uniform", "palette"],
        "default": "uniform",
    }
    assert schema["effort"]["maximum"] == 0 and schema["dither"]["type"] == "boolean"
    assert "multipart/form-data" in encode["requestBody"]["content"]


def test_connections_wait_without_a_thread_each(server):
    before = threading.active_count()
    sockets = [socket.create_connection(server.server_address, timeout=10) for _ in range(32)]
    for sock in sockets:
        sock.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\n")  # a head still arriving
    time.sleep(0.3)
    assert threading.active_count() <= before + 1
    for sock in sockets:
        sock.close()


def test_shutdown_answers_every_accepted_request(codec, kodak_crop, monkeypatch):
    server = CodecServer(("127.0.0.1", 0), codec, max_latency_ms=1)
    server.serve_in_background()
    release, answers = threading.Event(), []

    def slow(images, **options):
        release.wait(30)
        return Codec.encode_batch(codec, images, **options)

    monkeypatch.setattr(codec, "encode_batch", slow)
    client = threading.Thread(target=lambda: answers.append(_request(server, "POST", "/encode", _png(kodak_crop))))
    client.start()
    while server.queue.pending == 0:
        time.sleep(0.01)
    stopping = threading.Thread(target=server.shutdown)
    stopping.start()
    time.sleep(0.3)
    with pytest.raises(OSError):  # no longer accepting
        _request(server, "GET", "/health")
    release.set()
    client.join(60)
    stopping.join(60)
    server.server_close()
    assert answers[0][0] == 200 and answers[0][2][:4] == b"\x89LCZ"
    assert not stopping.is_alive() and not server.queue.alive
