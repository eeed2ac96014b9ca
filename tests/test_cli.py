"""The latentcodec command line."""

import json

import pytest

import latentcodec
from latentcodec.bench.cli import main as lab_main
from latentcodec.bindings.cli import build_parser, main
from latentcodec.engine.denoise.registry import denoiser_spec


@pytest.fixture()
def crop_file(tmp_path, kodak_crop):
    path = tmp_path / "crop.png"
    kodak_crop.save(path)
    return path


def test_encode_decode_info(tmp_path, crop_file, capsys):
    lcz, png = tmp_path / "x.lcz", tmp_path / "y.png"
    assert (
        main(
            [
                "--model",
                "taef2",
                "encode",
                str(crop_file),
                "-o",
                str(lcz),
                "--mode",
                "palette",
                "--palette-size",
                "32",
                "--denoiser",
                "latent-denoiser",
            ]
        )
        == 0
    )
    assert main(["decode", str(lcz), "-o", str(png)]) == 0
    from PIL import Image

    assert Image.open(png).size == (72, 40)
    capsys.readouterr()
    assert main(["info", "--json", str(lcz)]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["mode"] == "palette" and details["width"] == 72
    assert details["denoiser"] == "latent-denoiser" and details["noise_level"] > 0


def test_denoiser_flags(tmp_path, crop_file):
    from PIL import Image

    lcz, with_it, without = tmp_path / "x.lcz", tmp_path / "a.png", tmp_path / "b.png"
    taef2 = ["--model", "taef2", "encode", str(crop_file), "-o", str(lcz)]
    assert main([*taef2, "--step", "2", "--denoiser", "latent-denoiser"]) == 0
    assert main(["decode", str(lcz), "-o", str(with_it)]) == 0
    assert main(["decode", str(lcz), "-o", str(without), "--no-denoise"]) == 0
    assert Image.open(with_it).tobytes() != Image.open(without).tobytes()
    level = latentcodec.info(lcz.read_bytes()).noise_level / denoiser_spec("latent-denoiser").strength  # measured
    flags = ["--step", "2", "--denoiser", "latent-denoiser", "--denoiser-strength", "1"]
    assert main([*taef2, *flags]) == 0
    assert latentcodec.info(lcz.read_bytes()).noise_level == pytest.approx(level, rel=1e-3)
    assert main([*taef2, "--denoiser", "none"]) == 0
    assert latentcodec.info(lcz.read_bytes()).denoiser is None


def test_many_files_into_a_folder_with_one_failure(tmp_path, crop_file, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = tmp_path / "out"
    assert main(["encode", str(crop_file), str(bad), "-o", str(out)]) == 1
    assert (out / "crop.lcz").exists() and not (out / "bad.lcz").exists()
    err = capsys.readouterr().err
    assert "bad.png: not a readable image" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["decode", "/no/such.lcz"], 1, "cannot read"),  # a missing input is a failed item, as for encode
        (["encode", "/no/such.png"], 1, "no such file"),
        (["encode", "X", "--quality", "500"], 2, "quality must be in"),
        (["info", __file__], 1, "bad magic"),
        (["--model", "nope", "encode", __file__], 1, "unknown model"),
        (["encode", "X", "--denoiser", "nope"], 2, "unknown denoiser"),
        (["encode", "X", "--denoiser-strength", "0.5"], 2, "needs a named denoiser"),
    ],
)
def test_user_errors_are_one_line(argv, code, message, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_bench_command(tmp_path, crop_file, capsys):
    report = tmp_path / "r.json"
    assert lab_main(["bench", str(tmp_path), "--modes", "scalar8,uniform", "--json", str(report)]) == 0
    summary = json.loads(report.read_text())["summary"]
    assert set(summary) == {"scalar8", "uniform"} and summary["scalar8"]["bpp"] > summary["uniform"]["bpp"]


def test_the_product_cli_offers_user_commands_and_every_encode_option():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"encode", "decode", "info", "serve", "dataset"}  # lab commands live in latentcodec-lab
    flags = {flag for action in sub.choices["encode"]._actions for flag in action.option_strings}
    from latentcodec.engine.options import EncodeOptions

    assert {f"--{name.replace('_', '-')}" for name in EncodeOptions.names()} <= flags
    assert {"--no-dither", "-q"} <= flags
