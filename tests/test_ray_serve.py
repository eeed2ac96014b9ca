"""The HTTP service on Ray Serve (a local cluster, 2 CPUs): two CPU replicas of the same app answer its routes; one
is killed under a load of round trips (encode, then decode) from clients that retry 5xx answers, and none is lost,
every error is a 5xx answer (no reset, no hang: every call has a timeout), and Serve brings the replica back."""

import http.client
import io
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from shared_inputs import kodak_path  # noqa: E402

from latentcodec.bindings.ray_serve import APP_NAME, ReplicaConfig, deployed  # noqa: E402

ENCODE = "/encode?mode=uniform&step=2&denoiser=none"
CALL_TIMEOUT_S = 30  # a hung call fails the test
ATTEMPTS = 5
CLIENTS = 3


@pytest.fixture(scope="module")
def port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if ray.is_initialized():  # another module's cluster (tests/test_ray.py): two replicas need 2 CPUs of their own
        ray.shutdown()
    config = ReplicaConfig(model="taef2", device="cpu", batch_size=4, max_latency_ms=2)
    with deployed(config, "127.0.0.1", port, min_replicas=2, max_replicas=2, num_cpus=2):
        yield port


def _call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CALL_TIMEOUT_S)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _retried(port: int, path: str, body: bytes, failures: list) -> bytes:
    """The 200 answer's body, retrying 5xx answers and connection errors (each recorded in ``failures``)."""
    for _ in range(ATTEMPTS):
        try:
            status, payload = _call(port, "POST", path, body)
        except OSError as exc:  # a reset, a refusal or a timeout
            failures.append(repr(exc))
            continue
        if status == 200:
            return payload
        assert status >= 500, (status, payload)
        failures.append(status)
        time.sleep(0.2)
    raise AssertionError(f"{path}: lost after {ATTEMPTS} attempts: {failures[-ATTEMPTS:]}")


def _replicas() -> set[str]:
    prefix = f"SERVE_REPLICA::{APP_NAME}#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_app_answers_on_serve(port, codec):
    image = Image.open(kodak_path(3)).convert("RGB").crop((0, 0, 64, 64))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    status, stream = _call(port, "POST", ENCODE, buffer.getvalue())
    assert status == 200 and stream == codec.encode(image, mode="uniform", step=2.0, denoiser=None)
    status, png = _call(port, "POST", "/decode", stream)
    assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(codec.decode(stream)))
    assert _call(port, "POST", "/encode", b"not an image")[0] == 400  # the app's own errors, as JSON
    assert _call(port, "GET", "/health")[0] == 200


def test_a_killed_replica_loses_no_retried_request_and_comes_back(port, codec):
    images = [Image.open(kodak_path(i + 1)).convert("RGB").crop((0, 0, 64, 64)) for i in range(CLIENTS)]
    expected = [codec.encode(image, mode="uniform", step=2.0, denoiser=None) for image in images]
    done, failures, errors = [0] * CLIENTS, [], []
    stop = threading.Event()

    def client(index: int) -> None:
        buffer = io.BytesIO()
        images[index].save(buffer, format="PNG")
        try:
            while not stop.is_set():
                stream = _retried(port, ENCODE, buffer.getvalue(), failures)
                assert stream == expected[index]
                assert Image.open(io.BytesIO(_retried(port, "/decode", stream, failures))).size == (64, 64)
                done[index] += 1
        except Exception as exc:  # reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    _wait(lambda: sum(done) >= 2 * CLIENTS or bool(errors), 60, "round trips")
    before = _replicas()
    assert len(before) == 2
    killed = sorted(before)[0]
    ray.kill(ray.get_actor(killed, namespace="serve"), no_restart=True)
    at_kill, killed_at = sum(done), time.monotonic()

    def back() -> bool:
        states = serve.status().applications[APP_NAME].deployments["codec"].replica_states
        names = _replicas()
        return len(names) == 2 and killed not in names and states == {"RUNNING": 2}

    _wait(back, 60, "Serve to replace the killed replica")
    recovered, recovery_s = sum(done), time.monotonic() - killed_at
    _wait(lambda: sum(done) >= recovered + 2 * CLIENTS or bool(errors), 60, "round trips after the recovery")
    stop.set()
    for thread in threads:
        thread.join(CALL_TIMEOUT_S * ATTEMPTS)
        assert not thread.is_alive()
    assert not errors, errors
    assert all(isinstance(failure, int) and failure >= 500 for failure in failures), failures
    print(
        f"round trips: {sum(done)} ({at_kill} before the kill, {recovered} by the replica's return after "
        f"{recovery_s:.1f} s); failed attempts, retried: {failures}"
    )
