"""A short HTTP soak per CI run (``latentcodec-lab soak`` runs longer): no good request is lost."""

from hostile_inputs import png_bytes

from latentcodec.bench import soak
from latentcodec.bindings.http_limits import ServiceLimits
from latentcodec.bindings.http_server import CodecServer


def test_no_good_request_is_lost_among_malformed_and_stalled_ones(codec, kodak_crop):
    server = CodecServer(("127.0.0.1", 0), codec, max_latency_ms=2, limits=ServiceLimits(timeout_s=0.5))
    server.serve_in_background()
    try:
        report = soak.run(server, png_bytes(kodak_crop), clients=4, requests=8, bad_share=0.3)
    finally:
        server.shutdown()
        server.server_close()
    assert report.good + report.bad == 32 and report.bad > 0
    assert not report.good_lost, report.good_lost
