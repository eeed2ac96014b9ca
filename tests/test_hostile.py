"""Hostile input (issue 17): nothing a stranger sends may freeze, exhaust or steer the codec."""

import contextlib
import io
import socket
import threading
import time

import numpy as np
import pytest
from hostile_inputs import dds_file, declared_stream, png_bomb, png_bytes
from PIL import Image

import latentcodec
from latentcodec import Codec, RequestQueue
from latentcodec.bindings.cli import main
from latentcodec.bindings.http_limits import ServiceLimits
from latentcodec.bindings.http_server import CodecServer
from latentcodec.engine.bitstream import DenoiserRef
from latentcodec.engine.errors import (
    BusyError,
    EngineError,
    InvalidImageError,
    LimitError,
    ModelError,
)
from latentcodec.engine.intake import prepare
from latentcodec.engine.options import EncodeOptions

SMALL = np.zeros((16, 16, 3), np.uint8)


# 1. one bad request never freezes the queue ------------------------------------------------------------------


def test_a_denoiser_of_another_latent_space_fails_in_the_callers_thread_and_the_queue_goes_on(codec):
    with RequestQueue(codec, max_latency_ms=1) as queue:
        with pytest.raises(ValueError, match="latent space"):
            queue.encode(SMALL, denoiser="sd-unet")
        assert queue.encode(SMALL, denoiser=None).result(timeout=30)[:4] == b"\x89LCZ"


def test_a_batch_that_raises_ends_as_its_futures_error_and_the_worker_survives(codec, monkeypatch):
    queue = RequestQueue(codec, max_latency_ms=1)
    calls = []

    def broken_once(images, **options):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return Codec.encode_batch(codec, images, **options)

    monkeypatch.setattr(codec, "encode_batch", broken_once)
    error = queue.encode(SMALL, denoiser=None).exception(timeout=30)
    assert isinstance(error, EngineError) and "device lost" in str(error)
    assert queue.alive and queue.encode(SMALL, denoiser=None).result(timeout=30)[:4] == b"\x89LCZ"
    queue.close()
    assert not queue.alive


def test_whatever_pillow_raises_on_intake_is_an_invalid_image(codec):
    with pytest.raises(InvalidImageError, match="NotImplementedError"):
        prepare(dds_file())
    with RequestQueue(codec, max_latency_ms=1) as queue:
        assert isinstance(queue.encode(dds_file()).exception(timeout=30), InvalidImageError)
        assert queue.encode(SMALL, denoiser=None).result(timeout=30)[:4] == b"\x89LCZ"


def test_a_full_queue_answers_busy(codec, monkeypatch):
    release = threading.Event()

    def slow(images, **options):
        release.wait(30)
        return Codec.encode_batch(codec, images, **options)

    monkeypatch.setattr(codec, "encode_batch", slow)
    with RequestQueue(codec, max_latency_ms=1, max_pending=1) as queue:
        first = queue.encode(SMALL, denoiser=None)
        with pytest.raises(BusyError):
            queue.encode(SMALL, denoiser=None)
        release.set()
        assert first.result(timeout=30)[:4] == b"\x89LCZ"
        assert queue.encode(SMALL, denoiser=None).result(timeout=30)[:4] == b"\x89LCZ"  # the slot came back


# 2. a stream never makes the codec download or load what the caller did not allow --------------------------------


@pytest.mark.parametrize("model_id", ["taesd", "sd-vae"])
def test_a_stream_naming_a_hub_model_fails_at_once_and_the_answer_is_cached(model_id):
    data = declared_stream(64, 64, model_id=model_id)
    latentcodec.codec_for("taef2")  # the engine's modules loaded, as in a running service
    started = time.perf_counter()
    with pytest.raises(ModelError):
        latentcodec.decode(data)
    first = time.perf_counter() - started
    started = time.perf_counter()
    with pytest.raises(ModelError):
        latentcodec.decode(data)
    assert first < 0.1 and time.perf_counter() - started < 0.1  # never waits on a network
    with pytest.raises(ModelError, match="allows"):
        latentcodec.decode(declared_stream(64, 64), models={"sd-vae"})


def test_a_stream_naming_the_sd_unet_denoiser_fails_at_once(codec):
    ref = DenoiserRef("sd-unet", bytes(8), 0.5)
    data = declared_stream(64, 64, fingerprint=codec.model.fingerprint, denoiser=ref)
    for _ in range(2):
        started = time.perf_counter()
        with pytest.raises(ModelError):
            codec.decode(data)
        assert time.perf_counter() - started < 0.1
    assert codec.decode(data, denoise=False).size == (64, 64)


# 3. tiny streams that declare huge images are refused from the header ----------------------------------------------


def test_max_pixels_refuses_a_tiny_stream_declaring_a_huge_image(codec):
    data = declared_stream(4096, 4096, fingerprint=codec.model.fingerprint)
    assert len(data) < 4096
    started = time.perf_counter()
    with pytest.raises(LimitError, match="16777216 pixels"):
        codec.decode(data, max_pixels=1 << 20)
    with pytest.raises(LimitError):
        latentcodec.decode(data, max_pixels=1 << 20)
    assert time.perf_counter() - started < 1


def test_the_pillow_plugin_honours_max_image_pixels(codec, monkeypatch):
    data = declared_stream(2048, 2048, fingerprint=codec.model.fingerprint)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1 << 20)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))


# 4. image bombs are refused before their pixels are decoded ---------------------------------------------------------


def test_an_image_bomb_is_refused_from_its_header(monkeypatch):
    bomb = png_bomb(12000, 6000)  # 72 Mpixel, over the 67.1 Mpixel limit
    assert len(bomb) < 150_000

    def never(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", never)
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    with pytest.raises(InvalidImageError, match="outside the supported range"):
        prepare(bomb)


# 5. the HTTP service bounds what strangers can hold -----------------------------------------------------------------


@pytest.fixture()
def guarded(codec):
    limits = ServiceLimits(max_body=1 << 20, timeout_s=1.0, max_connections=3, token="s3cret", max_pixels=1 << 16)
    server = CodecServer(("127.0.0.1", 0), codec, max_latency_ms=1, limits=limits)
    server.serve_in_background()
    yield server
    server.shutdown()
    server.server_close()


def _raw(server, payload: bytes, wait: float = 10) -> bytes:
    with socket.create_connection(server.server_address[:2], timeout=wait) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"connection: close" not in b"".join(chunks).lower():
                break
        return b"".join(chunks)


AUTH = b"Authorization: Bearer s3cret\r\n"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"400"),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", b"400"),  # h11 merges equal ones (RFC 9112 6.3)
        ("Content-Length: \u00b2\r\n".encode(), b"400"),  # an invalid length: 400 and close (RFC 9112 6.3)
        (b"Transfer-Encoding: gzip\r\n", b"400"),
        (b"", b"411"),
    ],
)
def test_ambiguous_or_missing_framing_is_answered_and_closed(guarded, headers, status):
    answer = _raw(guarded, b"POST /decode HTTP/1.1\r\nHost: x\r\n" + AUTH + headers + b"\r\nhello")
    assert answer.startswith(b"HTTP/1.1 " + status) and b"connection: close" in answer.lower()


def test_a_smuggled_second_request_is_never_processed(guarded):
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    head = f"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n"
    answer = _raw(guarded, head.encode() + AUTH + b"\r\n" + body)
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 400")


def test_idle_connections_time_out_and_are_capped(guarded):
    idle = [socket.create_connection(guarded.server_address[:2], timeout=10) for _ in range(3)]
    time.sleep(0.2)
    assert _raw(guarded, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503")  # over the cap
    assert idle[0].recv(10) == b""  # closed by the server after its 1 s timeout
    for sock in idle:
        sock.close()
    time.sleep(0.2)
    assert _raw(guarded, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")


def _post(server, path: str, body: bytes, token: str | None = "s3cret") -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    status, payload = response.status, response.read()
    connection.close()
    return status, payload


def test_tokens_costly_options_and_pixels_are_the_operators_call(guarded, codec, kodak_crop):
    image = png_bytes(kodak_crop)
    assert _post(guarded, "/encode", image, token=None)[0] == 401
    assert _post(guarded, "/encode", image, token="guess")[0] == 401
    assert _post(guarded, "/encode?effort=40", image)[0] == 400
    assert _post(guarded, "/encode?target_psnr=30", image)[0] == 400
    status, stream = _post(guarded, "/encode?denoiser=none", image)
    assert status == 200 and _post(guarded, "/decode", stream)[0] == 200
    big = declared_stream(512, 512, fingerprint=codec.model.fingerprint)
    assert _post(guarded, "/decode", big)[0] == 413  # over the service's 65536 pixels


def test_health_reports_a_stopped_worker(guarded):
    guarded.queue.close()
    assert _raw(guarded, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 503")


def _closed_within(sock: socket.socket, seconds: float, drip: bytes = b"") -> bytes:
    """What the server sent before closing ``sock`` (sending ``drip`` every 0.2 s meanwhile); fails if it stays open."""
    sock.settimeout(0.2)
    answer, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            with contextlib.suppress(OSError):
                sock.sendall(drip)
            continue
        except ConnectionResetError:
            return answer
        if not chunk:
            return answer
        answer += chunk
    raise AssertionError(f"still open after {seconds} s: {answer[:200]!r}")


def test_a_stalled_upload_is_answered_408_and_closed(guarded):
    with socket.create_connection(guarded.server_address, timeout=10) as sock:
        sock.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 100000\r\n\r\n" + bytes(100))
        started = time.monotonic()
        answer = _closed_within(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408") and b"TimeoutError" in answer and time.monotonic() - started < 3


def test_a_request_head_dripping_in_is_closed_at_its_deadline(guarded):
    with socket.create_connection(guarded.server_address, timeout=10) as sock:
        sock.sendall(b"POST /encode HTTP/1.1\r\n")
        started = time.monotonic()
        assert _closed_within(sock, 5, drip=b"X-Slow: 1\r\n") == b""  # a byte every 0.2 s does not keep it open
    assert time.monotonic() - started < 2.5


def test_a_body_left_unread_by_an_early_answer_is_dropped_for_a_while_only(guarded):
    with socket.create_connection(guarded.server_address, timeout=10) as sock:
        sock.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + bytes(1000))
        answer = _closed_within(sock, 5, drip=bytes(1000))  # no token: 401, then the body is dropped until the deadline
    assert answer.startswith(b"HTTP/1.1 401")


def test_a_body_left_unread_is_dropped_up_to_four_times_the_limit_only(codec):
    server = CodecServer(("127.0.0.1", 0), codec, limits=ServiceLimits(max_body=1 << 16, timeout_s=10, token="s3cret"))
    server.serve_in_background()
    try:
        with socket.create_connection(server.server_address, timeout=10) as sock:
            sock.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            started = time.monotonic()
            with contextlib.suppress(OSError):  # the server closes the connection while this sends
                for _ in range(64):
                    sock.sendall(bytes(1 << 14))  # 1 MiB in all: past the 256 KiB it drops after its 401
            _closed_within(sock, 5)
        assert time.monotonic() - started < 5  # closed for the bytes, long before the 10 s deadline
    finally:
        server.shutdown()
        server.server_close()


# 6. option types are checked up front --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"palette_size": 2.5},
        {"level": 3.5},
        {"effort": 1.5},
        {"step": "2"},
        {"quality": "high"},
        {"dither": "no"},
        {"denoiser": 3},
        {"alpha": True},
        {"scale": None},
    ],
)
def test_bad_option_types_are_value_errors(options):
    with pytest.raises(ValueError):
        EncodeOptions(**options)


def test_numbers_of_any_kind_are_taken_as_python_numbers():
    options = EncodeOptions(palette_size=np.int64(8), step=np.float32(0.5), level=np.int64(3))
    assert type(options.palette_size) is int and type(options.step) is float and options.step == 0.5


# 7. no silent wrong results ------------------------------------------------------------------------------------------


def test_floats_outside_unit_range_are_refused_not_clipped(codec):
    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        prepare(np.full((8, 8, 3), 100.0, np.float32))
    import torch

    with pytest.raises(InvalidImageError, match=r"\[0, 1\]"):
        codec.encode_tensors(torch.full((1, 3, 8, 8), 2.0))


def test_float_images_read_as_unit_values_like_float_arrays():
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    from_pil = prepare(Image.fromarray(values, mode="F")).rgb
    from_array = prepare(values).rgb
    assert from_pil.equal(from_array) and int(from_pil.max()) == 255
    with pytest.raises(InvalidImageError, match="NaN"):
        prepare(Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F"))


def test_animated_images_are_refused_not_cut_to_their_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImageError, match="2 frames"):
        prepare(buffer.getvalue())


def test_colour_models_without_rgb_are_refused_not_stored_as_rgba():
    lab = Image.new("LAB", (8, 8))
    with pytest.raises(InvalidImageError, match="LAB"):
        prepare(lab)


def test_exif_orientation_is_one_rule_for_files_and_image_objects():
    image = Image.new("RGB", (40, 16), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    from_bytes = prepare(buffer.getvalue())
    from_object = prepare(Image.open(io.BytesIO(buffer.getvalue())))
    assert from_bytes.size == from_object.size == (16, 40)


# 8. the CLI never leaves partial files or overwrites what it reads ---------------------------------------------------


def test_cli_refuses_to_overwrite_inputs_or_collapse_outputs(tmp_path, kodak_crop, capsys):
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    for path in (first, second):
        path.parent.mkdir()
        kodak_crop.save(path)
    assert main(["encode", str(first), "-o", str(first)]) == 2
    assert Image.open(first).size == kodak_crop.size  # untouched
    assert main(["encode", str(first), str(second), "-o", str(tmp_path / "out")]) == 2
    existing = tmp_path / "file.lcz"
    existing.write_bytes(b"keep")
    assert main(["encode", str(first), str(second), "-o", str(existing)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "refusing to overwrite" in err and "would both be written" in err


def test_cli_writes_are_atomic(tmp_path, monkeypatch):
    from latentcodec.bindings import cli

    target = tmp_path / "x.lcz"
    target.write_bytes(b"previous")

    def failing_write(self, data):
        self.open("wb").write(data[:3])
        raise OSError("disk full")

    monkeypatch.setattr(type(target), "write_bytes", failing_write)
    with pytest.raises(OSError):
        cli.write_atomically(target, b"new stream")
    monkeypatch.undo()
    assert target.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [target]


# 9. messages say what was expected, not where an object lives --------------------------------------------------------


def test_non_image_bytes_get_a_message_without_object_addresses():
    with pytest.raises(InvalidImageError) as error:
        prepare(b"this is not an image at all")
    assert "0x" not in str(error.value) and "BytesIO" not in str(error.value) and "PNG" in str(error.value)
