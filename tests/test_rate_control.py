"""Rate control: the step search and the choice between scales, then target_bpp end to end."""

import math

import pytest
from shared_inputs import as_array, kodak_path

import latentcodec
from latentcodec.engine import search
from latentcodec.engine.models.upscaler import RATE_LADDER
from latentcodec.engine.search import Candidate


def test_search_finds_the_finest_step_that_fits():
    calls = []

    def size_of(step):  # sizes fall as the step grows: 1000 bytes at step 1
        calls.append(step)
        return math.floor(1000 / step)

    step = search.finest_step_within(size_of, budget=100)
    assert size_of(step) <= 100 and step == pytest.approx(1000 / 101, rel=1e-3)  # floor(1000 / s) <= 100 from there
    assert len(calls) <= search.ITERATIONS + 3
    assert search.finest_step_within(size_of, budget=10**9) == pytest.approx(search.MIN_SEARCH_STEP)
    assert search.finest_step_within(size_of, budget=1) == pytest.approx(64)  # nothing fits: coarsest


@pytest.mark.parametrize("exponent", [0.7, 1.5, 3.0])
def test_regula_falsi_fits_the_budget_in_few_tries(exponent):
    calls = []

    def size_of(step):  # a stream's size falls like a power of the step, with the bytes of a header on top
        calls.append(step)
        return 40 + math.floor(500_000 * step**-exponent)

    for budget in (size_of(0.1) + 0.5, size_of(1.0) + 0.5, size_of(8.0) + 0.5):
        calls.clear()
        step = search.finest_step_by_regula_falsi(size_of, budget)
        assert (1 - search.SIZE_TOLERANCE) * budget < size_of(step) <= budget
        assert len(calls) <= 12  # bisection takes search.ITERATIONS + 2
    assert search.finest_step_by_regula_falsi(size_of, 10**12) == pytest.approx(search.MIN_SEARCH_STEP)
    assert search.finest_step_by_regula_falsi(size_of, 1) == pytest.approx(64)


def _scales_tried(
    monkeypatch, scores: dict[float, float], rate_search: str, scales=search.SCALES, growth: float = 0.0
) -> tuple[list[float], bytes]:
    """to_rate over fake codings whose streams, all at the budget, decode to ``scores`` by scale: the scales decoded
    and the stream kept. The step that fits grows with the scale like ``(scale / 0.5) ** growth`` (1 at 0.5)."""
    decoded = []

    def candidate(_decoder, data, *_):
        decoded.append(float(data[:4]))
        return Candidate(data, scores[decoded[-1]])

    monkeypatch.setattr(search, "_candidate", candidate)

    def coding_at(scale):
        stream = lambda step: f"{scale:.2f}".encode() + b"x" * 96  # noqa: E731
        bytes_at = lambda step: 200 / (1 + step / (scale / 0.5) ** growth)  # noqa: E731  # 100 bytes at that step
        return search.Coding(stream=stream, size=bytes_at, final=stream)

    class Plan:
        options = latentcodec.EncodeOptions(target_bpp=8.0, rate_search=rate_search)
        choose_strength = False

    Plan.scales = scales
    prepared = type("Prepared", (), {"rgb": __import__("torch").zeros(3, 10, 10)})()
    return decoded, search.to_rate(coding_at, None, prepared, Plan())


@pytest.mark.parametrize(("best", "tried"), [(0.35, 2), (0.5, 3), (0.71, 4), (1.0, 4)])
def test_the_climb_stops_at_the_first_scale_that_scores_worse(monkeypatch, best, tried):
    scores = {s: -abs(math.log(s / best)) for s in search.SCALES}  # rises, then falls
    climbed, chosen = _scales_tried(monkeypatch, scores, "climb")
    assert climbed == sorted(search.SCALES)[:tried] and chosen.startswith(f"{best:.2f}".encode())
    every, chosen_every = _scales_tried(monkeypatch, scores, "every")
    assert every == list(search.SCALES) and chosen_every == chosen


@pytest.mark.parametrize(
    ("best", "tried"),
    [
        (0.5, [0.5, 0.6, 0.42]),
        (0.35, [0.5, 0.6, 0.42, 0.35, 0.3]),
        (0.25, [0.5, 0.6, 0.42, 0.35, 0.3, 0.25]),
        (0.85, [0.5, 0.6, 0.71, 0.85, 1.0]),
        (1.0, [0.5, 0.6, 0.71, 0.85, 1.0]),
    ],
)
def test_the_peak_search_starts_where_the_step_nears_one_and_moves_to_the_better_side(monkeypatch, best, tried):
    scores = {s: -abs(math.log(s / best)) for s in RATE_LADDER}
    peaked, chosen = _scales_tried(monkeypatch, scores, "peak", RATE_LADDER, growth=2.0)  # step 1 at scale 0.5
    assert peaked == tried and chosen.startswith(f"{best:.2f}".encode())
    every, chosen_every = _scales_tried(monkeypatch, scores, "every", RATE_LADDER, growth=2.0)
    assert every == list(RATE_LADDER) and chosen_every == chosen


def test_the_peak_start_is_the_scale_whose_step_is_nearest_in_log():
    steps = dict(zip(RATE_LADDER[::-1], (0.3, 0.5, 0.8, 1.4, 2.0, 3.0, 4.0, 5.0, 6.0), strict=True))
    assert search._nearest_peak(sorted(RATE_LADDER), steps.__getitem__) == 2  # 0.8 beats 1.4
    steps[0.35] = 0.6
    assert search._nearest_peak(sorted(RATE_LADDER), steps.__getitem__) == 3  # 1.4 beats 0.6
    assert search._nearest_peak([0.25, 0.5], {0.25: 0.1, 0.5: 0.2}.__getitem__) == 1  # none reaches: the largest
    assert search._nearest_peak([0.25, 0.5], {0.25: 3.0, 0.5: 9.0}.__getitem__) == 0


def test_choice_prefers_quality_within_the_tolerance():
    near_good, near_bad, far_best = Candidate(b"x" * 95, 30.0), Candidate(b"x" * 100, 25.0), Candidate(b"x" * 50, 40.0)
    assert search.choose([near_bad, far_best, near_good], budget=100) == near_good.data
    assert search.choose([far_best, Candidate(b"x" * 20, 50.0)], budget=100) == far_best.data  # closest


@pytest.fixture(scope="module")
def photo():
    from PIL import Image

    return Image.open(kodak_path(5)).convert("RGB").crop((200, 100, 392, 276))  # 192x176


@pytest.mark.parametrize("target", [0.3, 0.8, 2.0])
def test_target_bpp_is_hit_within_ten_percent(codec, photo, target):
    data = codec.encode(photo, target_bpp=target)
    info = latentcodec.info(data)
    assert abs(info.bpp - target) <= 0.1 * target
    decoded = codec.decode(data)
    assert decoded.size == photo.size
    if target >= 0.8:  # at this size, higher rates go full-size
        assert (info.coded_width, info.coded_height) != (0, 0) and info.coded_width >= 0.7 * photo.width
    assert as_array(decoded).shape == as_array(photo).shape


def test_more_bits_give_a_better_picture(codec, photo):
    from latentcodec.bench.metrics import psnr

    scores = [psnr(as_array(photo), as_array(codec.decode(codec.encode(photo, target_bpp=t)))) for t in (0.3, 2.0)]
    assert scores[1] > scores[0] + 1


@pytest.mark.parametrize("rate_search", ["peak", "every"])
def test_the_quality_search_climbs_the_scales_until_the_stream_grows(monkeypatch, rate_search):
    sizes = dict(zip(RATE_LADDER, (99, 95, 90, 75, 70, 60, 80, 90, 10), strict=True))  # at the step reaching 30 dB
    opened = []
    monkeypatch.setattr(search, "_candidate", lambda _d, data, *_: Candidate(data, float(data.split(b"/")[1])))

    def coding_at(scale):  # 40 dB at step 1, 10 dB less per doubling; scale 0.25 reaches nothing
        opened.append(scale)
        psnr = lambda step: 0.0 if scale == 0.25 else 40 - 10 * math.log2(step)  # noqa: E731
        stream = lambda step: f"{scale:.2f}/{psnr(step)}/".encode() + b"x" * round(sizes[scale] * 2 / step)  # noqa: E731
        return search.Coding(stream=stream, size=len, final=stream)

    class Plan:
        options = latentcodec.EncodeOptions(target_psnr=30.0, rate_search=rate_search)
        choose_strength = False
        scales = RATE_LADDER

    prepared = type("Prepared", (), {"rgb": __import__("torch").zeros(3, 10, 10)})()
    chosen = search.to_quality(coding_at, None, prepared, Plan())
    assert chosen.startswith(b"0.42/")
    assert opened == ([0.25, 0.3, 0.35, 0.42, 0.5] if rate_search == "peak" else list(RATE_LADDER))


def test_quality_search_finds_the_coarsest_step_that_reaches():
    quality_of = lambda step: 40 - 10 * math.log2(step)  # noqa: E731  # 40 dB at step 1, 30 at step 2
    step = search.coarsest_step_reaching(quality_of, 30.0)
    assert quality_of(step) >= 30 and step == pytest.approx(2.0, rel=0.05)
    assert search.coarsest_step_reaching(quality_of, 100.0) is None
    assert search.coarsest_step_reaching(quality_of, -30.0) == pytest.approx(64)  # every step reaches


def test_target_psnr_is_reached_with_the_smallest_stream(codec, photo):
    from latentcodec.bench.metrics import psnr

    sizes = []
    for target in (21.0, 24.0):  # this crop's best is 26.8 dB (the autoencoder's own loss)
        data = codec.encode(photo, target_psnr=target)
        assert psnr(as_array(photo), as_array(codec.decode(data))) >= target - 0.05  # 8-bit rounding of the PSNR
        sizes.append(len(data))
    assert sizes[0] < sizes[1]
    unreachable = codec.encode(photo, target_psnr=59)  # beyond the autoencoder: the best stream tried
    assert psnr(as_array(photo), as_array(codec.decode(unreachable))) > 26.5


def test_rate_control_under_auto_scores_candidates_without_the_denoiser(photo, monkeypatch):
    from latentcodec.engine.denoise import registry

    monkeypatch.setattr(registry.LoadedDenoiser, "pass_fn", lambda self, key: lambda latents, sigma: latents + 3)
    codec = latentcodec.Codec("taef2", device="cpu")  # a fresh codec: its denoiser passes are built anew
    auto = codec.encode(photo, target_psnr=24.0)  # were candidates scored with it, no step would reach 24 dB
    assert auto == codec.encode(photo, target_psnr=24.0, denoiser=None)  # auto then drops the harmful denoiser


def test_bad_targets_are_refused(codec, photo):
    for options in (
        {"target_bpp": 0},
        {"target_bpp": 30},
        {"target_bpp": 0.5, "mode": "palette"},
        {"target_psnr": 5},
        {"target_psnr": 30, "target_bpp": 0.5},
        {"target_psnr": 30, "mode": "palette"},
    ):
        with pytest.raises(ValueError):
            codec.encode(photo, **options)


def test_the_metric_decides_between_the_same_candidates(photo):
    """``metric`` only changes which candidate wins: without a denoiser both searches try the same streams, so
    each choice is at least as good as the other's under its own metric."""
    from latentcodec.engine.images import psnr
    from latentcodec.engine.quality import ms_ssim

    reference = as_array(photo)
    chosen = {m: latentcodec.encode(photo, target_bpp=0.3, metric=m, denoiser=None) for m in ("psnr", "ms-ssim")}
    decoded = {m: as_array(latentcodec.decode(data)) for m, data in chosen.items()}
    assert ms_ssim(reference, decoded["ms-ssim"]) >= ms_ssim(reference, decoded["psnr"])
    assert psnr(reference, decoded["psnr"]) >= psnr(reference, decoded["ms-ssim"])
    for data in chosen.values():
        assert abs(8 * len(data) / (photo.width * photo.height) - 0.3) <= 0.3 * search.TOLERANCE


def test_metric_scores():
    import numpy as np

    from latentcodec.engine import quality

    rng = np.random.default_rng(0)
    for size in (64, 200):  # SSIM below MS-SSIM's minimum side, MS-SSIM above it
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        noisy = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
        assert quality.score("ms-ssim", image, image) == pytest.approx(1.0)
        assert 0 < quality.score("ms-ssim", image, noisy) < 0.99
    assert quality.score("psnr", image, noisy) < 30
    with pytest.raises(ValueError, match="metric must be one of"):
        latentcodec.EncodeOptions(metric="lpips")
