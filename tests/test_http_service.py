"""The HTTP service on loopback: encode and decode round trips, errors as JSON, limits."""

import http.client
import io
import json

import numpy as np
import pytest
from PIL import Image

from latentcodec.bindings.http_service import CodecServer, parse_options
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
