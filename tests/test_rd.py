"""Rate-distortion harness: BD-rates against known answers, and the whole sweep on two small Kodak crops."""

import json

import pytest
from PIL import Image
from shared_inputs import KODAK, kodak_path

from latentcodec.bench import cli, rd

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
