"""Rate-distortion harness: BD-rates against known answers, the whole sweep on two small Kodak crops, and the
downscaled WebP/AVIF anchors on small crops."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from shared_inputs import KODAK, kodak_path

from latentcodec.bench import cli, figure, rd
from latentcodec.bench.metrics import psnr

ANCHOR = [
    {"bpp": b, "psnr": p, "ms_ssim": m}
    for b, p, m in ((0.1, 24, 0.85), (0.2, 26, 0.9), (0.3, 27.5, 0.93), (0.45, 29, 0.95))
]


def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert rd.bd_rate(ANCHOR, ANCHOR, "psnr", (0.1, 0.5)) == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25])
def test_bd_rate_of_a_curve_at_a_fraction_of_the_rate(factor):
    """The same qualities at ``factor`` times the bits: BD-rate is exactly (factor - 1)."""
    scaled = [{**p, "bpp": p["bpp"] * factor} for p in ANCHOR]
    window = (0.0, 1.0)
    assert rd.bd_rate(ANCHOR, scaled, "psnr", window) == pytest.approx(100 * (factor - 1), abs=1e-6)
    assert rd.bd_rate(ANCHOR, scaled, "ms_ssim", window) == pytest.approx(100 * (factor - 1), abs=1e-6)


def test_bd_rate_is_undefined_without_overlap_or_points():
    better = [{**p, "psnr": p["psnr"] + 10} for p in ANCHOR]  # no quality overlap
    assert rd.bd_rate(ANCHOR, better, "psnr", (0.1, 0.5)) is None
    assert rd.bd_rate(ANCHOR, ANCHOR[:1], "psnr", (0.1, 0.5)) is None
    assert rd.bd_rate(ANCHOR, ANCHOR, "psnr", (0.6, 0.9)) is None  # nothing inside the range


@pytest.fixture(scope="module")
def crops():
    """Two 192x176 crops (MS-SSIM needs sides over 160 pixels)."""
    return {f"kodim{i:02d}": Image.open(kodak_path(i)).convert("RGB").crop((200, 100, 392, 276)) for i in (5, 23)}


def test_sweep_on_two_crops_gives_consistent_curves(codec, crops, tmp_path):
    classic = {"jpeg": [5, 30, 75], "webp": [5, 30, 75], "jxl": [10, 40, 80]}
    latent = {"latent-uniform": [{"mode": "uniform", "step": s} for s in (2.0, 1.0, 0.5)]}
    points = rd.evaluate(crops, codec, classic, latent)
    assert len(points) == 2 * (3 + 3 + 3 + 3)
    for p in points:
        assert p.bpp == pytest.approx(8 * p.bytes / (192 * 176)) and p.bytes > 0
        assert 10 < p.psnr < 60 and 0 < p.ssim <= 1 and 0 < p.ms_ssim <= 1 and -100 < p.ssimulacra2 < 100
    curves = rd.mean_curves(points)
    assert set(curves) == {"jpeg", "webp", "jxl", "latent-uniform"}
    for curve in curves.values():  # more bits, better pictures
        assert [p["bpp"] for p in curve] == sorted(p["bpp"] for p in curve)
        assert [p["psnr"] for p in curve] == sorted(p["psnr"] for p in curve)
        assert [p["ssimulacra2"] for p in curve] == sorted(p["ssimulacra2"] for p in curve)
    table = rd.bd_table(curves, bpp_range=(0, 10))
    webp_vs_jpeg = next(r for r in table if r["codec"] == "webp" and r["anchor"] == "jpeg")
    assert webp_vs_jpeg["bd_rate_psnr"] is not None
    rd.write_json(tmp_path / "rd.json", points, curves, table)
    assert len(json.loads((tmp_path / "rd.json").read_text())["points"]) == len(points)
    rd.plot(curves, tmp_path / "rd.png")
    assert (tmp_path / "rd.png").read_bytes()[:4] == b"\x89PNG"
    assert "| webp | jpeg |" in rd.format_bd_table(table)


def test_cli_rd_refuses_a_missing_folder(tmp_path, capsys):
    assert cli.main(["rd", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert KODAK.is_dir()


def test_rate_control_misses_are_reported_per_target():
    def point(image, target, bpp):
        return rd.RDPoint(image, rd.RATE_CONTROL, f"target_bpp={target}", 1, bpp, 30, 0.9, 0.9, 40, 0, 0)

    points = [point("a", 0.2, 0.19), point("b", 0.2, 0.21), point("b", 0.2, 0.23), point("a", 0.5, 0.5)]
    misses = rd.rate_control_misses(points)
    assert misses == pytest.approx({"target_bpp=0.2": 0.15, "target_bpp=0.5": 0.0})
    assert rd.rate_control_misses([]) is None


def test_cli_rd_plain_adds_each_latent_curve_without_the_denoiser(tmp_path, monkeypatch):
    Image.open(kodak_path(1)).crop((0, 0, 200, 200)).save(tmp_path / "a.png")
    seen = {}

    def record(images, codec, classic, latent, progress=None):
        seen.update(latent)
        raise KeyboardInterrupt  # stop before any coding

    monkeypatch.setattr(rd, "evaluate", record)
    assert cli.main(["rd", str(tmp_path), "--plain", "--codecs", "latent-uniform"]) == 130
    assert set(seen) == {"latent-uniform", "latent-uniform-plain"}
    assert all(o["denoiser"] is None for o in seen["latent-uniform-plain"])
    assert all("denoiser" not in o for o in seen["latent-uniform"])


def test_reused_points_keep_other_codecs_and_rename_re_measured_ones(tmp_path):
    def point(image, codec, bpp):
        return rd.RDPoint(image, codec, "s", 100, bpp, 25.0, 0.8, 0.9, 10.0, 0.1, 0.1)

    earlier = [point("a.png", "webp", 0.2), point("a.png", "latent-rate-control", 0.1), point("b.png", "webp", 0.3)]
    rd.write_json(tmp_path / "earlier.json", earlier, {}, [])
    reused = rd.reused_points(tmp_path / "earlier.json", {"a.png"}, {"latent-rate-control"}, "taef2")
    assert [(p.codec, p.bpp) for p in reused] == [("webp", 0.2), ("latent-rate-control-taef2", 0.1)]


# Downscaled anchors (webp-scaled, avif-scaled)


@pytest.fixture(scope="module")
def face():
    """kodim04's face at 256x256: WebP at quality 0 needs 0.064 bpp for it at full size."""
    return Image.open(kodak_path(4)).convert("RGB").crop((120, 140, 376, 396))


def _webp():
    return rd.classic_codecs()["webp"]


def test_scaled_anchor_fits_the_budget_and_picks_the_best_scoring_scale(face):
    anchor = rd.ScaledAnchor(face, _webp())
    bpp = 0.3
    budget = bpp * 256 * 256 / 8
    candidates = anchor.candidates(bpp)
    assert [c.scale for c in candidates] == list(rd.SCALES)
    for c in candidates:  # each scale at its highest quality that fits
        assert c.bytes <= budget
        assert c.quality == 100 or len(anchor.file(c.scale, c.quality + 1)) + rd.SCALE_HEADER_BYTES > budget
        assert c.decoded.shape == (256, 256, 3)
        assert c.score == pytest.approx(psnr(np.asarray(face), c.decoded))  # rate control's default metric
    within = [c for c in candidates if abs(c.bytes - budget) <= 0.1 * budget]
    assert len({c.scale for c in within}) > 1  # a real choice
    chosen = anchor.at_rate(bpp)
    assert chosen.score == max(c.score for c in within)
    assert chosen.score > min(c.score for c in within)


def test_at_a_very_low_rate_a_downscale_wins_and_at_a_high_one_the_full_size(face):
    anchor = rd.ScaledAnchor(face, _webp())
    low = 0.04
    assert len(anchor.file(1.0, 0)) > low * 256 * 256 / 8  # quality 0 at full size does not fit
    chosen = anchor.at_rate(low)
    assert chosen.scale < 1 and chosen.bytes <= low * 256 * 256 / 8
    assert anchor.at_rate(3.0).scale == 1.0


def test_scaled_anchor_follows_rate_controls_metric(face):
    by_ms_ssim = rd.ScaledAnchor(face, _webp(), scales=(1.0, 0.5), metric="ms-ssim").at_rate(0.3)
    assert 0 < by_ms_ssim.score <= 1  # MS-SSIM, not dB
    with pytest.raises(ValueError, match="unknown metric"):
        rd.ScaledAnchor(face, _webp(), scales=(1.0,), metric="lpips").at_rate(0.3)


def test_scaled_points_count_the_encoded_file_and_the_scale(crops):
    sweeps = {"webp-scaled": [0.1, 0.4], "avif-scaled": [0.1, 0.4]}
    one = {"kodim05": crops["kodim05"]}
    points = rd.evaluate_scaled(one, sweeps, scales=(1.0, 0.6, 0.35))
    assert [(p.image, p.codec, p.setting) for p in points] == [
        ("kodim05", codec, f"target_bpp={t}") for codec in sweeps for t in sweeps[codec]
    ]
    encoders = rd.classic_codecs()
    for p in points:
        settings = dict(item.split("=") for item in p.detail.split(","))
        scale, quality = float(settings["scale"]), int(settings["q"])
        small = rd.downscaled(crops[p.image], scale)
        file = encoders[p.codec.removesuffix("-scaled")](small, quality)
        assert Image.open(io.BytesIO(file)).size == small.size
        assert p.bytes == len(file) + rd.SCALE_HEADER_BYTES and rd.SCALE_HEADER_BYTES == 2
        assert p.bpp == pytest.approx(8 * p.bytes / (192 * 176))
        decoded = Image.open(io.BytesIO(file)).convert("RGB").resize((192, 176), Image.LANCZOS)
        assert p.psnr == pytest.approx(psnr(np.asarray(crops[p.image]), np.asarray(decoded)))
        assert -100 < p.ssimulacra2 < 100 and 0 < p.ms_ssim <= 1
    low, high = points[0], points[1]
    assert low.bytes < high.bytes and low.psnr < high.psnr


def test_cli_rd_measures_the_downscaled_anchors_without_loading_a_model(tmp_path, monkeypatch):
    Image.open(kodak_path(4)).convert("RGB").crop((120, 140, 376, 396)).save(tmp_path / "a.png")

    def no_model(args):
        raise AssertionError("no latent sweep was asked for")

    monkeypatch.setattr(cli, "make_codec", no_model)
    monkeypatch.setattr(rd, "SCALED_SWEEPS", {"webp-scaled": [0.1, 0.3], "avif-scaled": [0.1, 0.3]})
    monkeypatch.setattr(rd, "SCALES", (1.0, 0.5))
    monkeypatch.setattr(rd, "CLASSIC_SWEEPS", {**rd.CLASSIC_SWEEPS, "webp": [0, 20, 50]})
    out = tmp_path / "rd.json"
    assert (
        cli.main(["rd", str(tmp_path), "--codecs", "webp,webp-scaled", "--bd-range", "0", "1", "--json", str(out)]) == 0
    )
    stored = json.loads(out.read_text())
    assert {p["codec"] for p in stored["points"]} == {"webp", "webp-scaled"}
    assert any(r["codec"] == "webp" and r["anchor"] == "webp-scaled" for r in stored["bd_rates"])


def test_side_by_side_adds_downscaled_webp_at_the_same_rate(face, tmp_path):
    rates = figure.side_by_side(face, 0.15, {}, (0, 0, 64, 64), tmp_path / "f.png")
    assert "webp-scaled" in rates and rates["webp-scaled"] <= 0.15
    assert rates["webp-scaled"] == pytest.approx(8 * rd.ScaledAnchor(face, _webp()).at_rate(0.15).bytes / 256**2)
    assert Image.open(tmp_path / "f.png").size == (64 * (1 + len(rates)), 84)
