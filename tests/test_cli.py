"""The latentcodec command line."""

import contextlib
import json
import socket
import subprocess
import sys
from pathlib import Path

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
        (["decode", "no/such.lcz"], 1, "cannot read"),  # a missing input is a failed item, as for encode
        (["encode", "no/such.png"], 1, "no such file"),
        (["encode", "X", "--quality", "500"], 2, "quality must be in"),
        (["info", __file__], 1, "bad magic"),
        (["--model", "nope", "encode", __file__], 2, "unknown model 'nope'; known: "),
        (["encode", __file__, "--model", "nope"], 2, "taef2"),
        (["encode", "X", "--denoiser", "nope"], 2, "unknown denoiser"),
        (["encode", "X", "--denoiser", "None"], 2, "known: auto, none, latent-denoiser"),
        (["encode", "X", "--denoiser-strength", "0.5"], 2, "needs a named denoiser"),
        (["encode", "X", "--quality", "50", "--step", "1"], 2, "give one of quality, step: each sets the step"),
        (["encode", "X", "--mode", "palette", "-q", "5", "--palette-size", "8"], 2, "one of quality, palette_size"),
        (["encode", "X", "--target-bpp", "0.2", "--step", "1"], 2, "give one of step, target_bpp"),
    ],
)
def test_user_errors_are_one_line(argv, code, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
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


# issue 29, "the first hour of a new user" ------------------------------------------------------------------------

FAST = ["--model", "taef2", "--step", "2", "--denoiser", "none", "--entropy", "zstd"]


@pytest.fixture()
def tiny(tmp_path, kodak_crop):
    """Two 32x32 images, one with alpha, in tmp_path."""
    rgb = kodak_crop.crop((0, 0, 32, 32))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(200)
    paths = tmp_path / "a.png", tmp_path / "b.png"
    rgb.save(paths[0])
    rgba.save(paths[1])
    return paths


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if a command loads a model."""
    from latentcodec.bindings import cli

    def refuse(*_):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(cli, "codec_of", refuse)


def test_encode_and_decode_say_what_they_did(tiny, tmp_path, capsys):
    one = tmp_path / "one.lcz"
    assert main(["encode", str(tiny[0]), "-o", str(one), *FAST]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{tiny[0]} -> {one}: 32x32, {one.stat().st_size} bytes, ") and line.endswith(" s\n")
    assert main(["encode", *map(str, tiny), "-o", str(tmp_path / "out"), "--json", *FAST]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["output"] for r in records] == [str(tmp_path / "out" / "a.lcz"), str(tmp_path / "out" / "b.lcz")]
    assert records[0]["bpp"] == pytest.approx(8 * records[0]["bytes"] / 32**2) and records[0]["seconds"] > 0
    streams = [str(tmp_path / "out" / name) for name in ("a.lcz", "b.lcz")]
    assert main(["decode", *streams, "-o", str(tmp_path / "dec")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{streams[0]} -> {tmp_path / 'dec' / 'a.png'}: 32x32") and len(lines) == 3
    assert lines[2].startswith("2 files: 2 done, 0 failed")  # the summary
    assert main(["decode", streams[0], "-o", str(tmp_path / "q.png"), "--quiet"]) == 0
    assert capsys.readouterr().out == "" and (tmp_path / "q.png").exists()


def test_failures_are_reported_before_any_model_loads(tmp_path, capsys, no_model):
    missing = tmp_path / "missing.png"
    assert main(["encode", str(missing), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"input": str(missing), "error": f"no such file: {missing}"} and "no such file" in err
    corrupt = tmp_path / "bad.lcz"
    corrupt.write_bytes(b"not a stream")
    assert main(["decode", str(corrupt), str(tmp_path / "gone.lcz")]) == 1
    err = capsys.readouterr().err
    assert "bad.lcz: not a latentcodec stream" in err and "gone.lcz: cannot read" in err


def test_commands_that_need_no_model_never_import_torch(tmp_path):
    stream = Path(__file__).parent / "fixtures" / "old_taef2_step2.lcd"
    script = (
        "import sys\n"
        "from latentcodec.bindings.cli import main\n"
        f"assert main(['info', {str(stream)!r}]) == 0\n"
        "try:\n    main(['encode', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "model          taef2" in done.stdout and "(default: uniform)" in done.stdout


def test_output_paths_are_decided_up_front(tiny, tmp_path, capsys, monkeypatch):
    nested = tmp_path / "no" / "dir" / "x.lcz"
    assert main(["encode", str(tiny[0]), "-o", str(nested), *FAST]) == 0 and nested.exists()  # folders made
    assert main(["encode", str(tiny[0]), "-o", f"{tmp_path / 'newdir'}/", *FAST]) == 0
    assert (tmp_path / "newdir" / "a.lcz").is_file()  # a trailing slash names a folder
    capsys.readouterr()
    from latentcodec.bindings import cli

    monkeypatch.setattr(cli, "codec_of", lambda *_: pytest.fail("a model was loaded"))
    (tmp_path / "file").write_bytes(b"")
    refused = {
        ("encode", *map(str, tiny), "-o", str(tmp_path / "out" / "one.lcz")): "names a file",
        ("encode", str(tiny[0]), "-o", str(tmp_path / "file" / "x.lcz")): "is not a folder",
        ("decode", str(nested), "-o", str(tmp_path / "x.xyz")): ".png, .jpg, .jpeg, .webp",
        ("decode", str(nested), "-o", str(tmp_path / "noext")): "end -o with / to name a folder",
        ("decode", str(nested), "--format", "gif"): "invalid choice",
    }
    for argv, message in refused.items():
        with contextlib.suppress(SystemExit):  # argparse's own errors exit 2
            assert main(list(argv)) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.xyz").exists()


def test_a_stream_with_alpha_is_refused_for_jpeg_before_decoding(tiny, tmp_path, capsys, monkeypatch):
    assert main(["encode", str(tiny[1]), "-o", str(tmp_path / "rgba.lcz"), *FAST]) == 0
    from latentcodec.bindings import cli

    monkeypatch.setattr(cli, "codec_of", lambda *_: pytest.fail("a model was loaded"))
    assert main(["decode", str(tmp_path / "rgba.lcz"), "-o", str(tmp_path / "d.jpg")]) == 2
    assert "has an alpha plane, which JPEG cannot hold: decode it to .png" in capsys.readouterr().err


def test_serve_on_a_port_in_use_says_so_in_one_line(capsys, no_model, codec):
    from latentcodec.bindings.http_server import CodecServer

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
        err = capsys.readouterr().err
        assert err == f"latentcodec: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        with pytest.raises(OSError, match="in use"):  # not AttributeError from the cleanup
            CodecServer(("127.0.0.1", port), codec)


def test_serve_on_ray_refuses_bad_replica_bounds_before_starting_ray(capsys, no_model):
    assert main(["serve", "--ray", "--port", "0", "--min-replicas", "3", "--max-replicas", "2"]) == 2
    assert capsys.readouterr().err == "latentcodec: error: --min-replicas 3 is over --max-replicas 2\n"


def test_global_flags_go_before_or_after_the_command_and_help_shows_defaults():
    parser = build_parser()
    before = parser.parse_args(["--model", "taef2", "--batch-size", "3", "encode", "x.png"])
    after = parser.parse_args(["encode", "x.png", "--model", "taef2", "--source", "here"])
    mixed = parser.parse_args(["--model", "taef2", "encode", "x.png", "--batch-size", "3"])
    assert (before.model, before.batch_size, after.model, after.source) == ("taef2", 3, "taef2", "here")
    assert (mixed.model, mixed.batch_size) == ("taef2", 3) and after.batch_size == 8
    assert parser.parse_args(["dataset", "encode", "a", "b", "--model", "taef2"]).model == "taef2"
    sub = next(a for a in parser._actions if a.dest == "command")
    assert (
        "(default: taef2-q4)" in parser.format_help() and "(default: taef2-q4)" in sub.choices["encode"].format_help()
    )
    assert "(default: 67108864)" in sub.choices["serve"].format_help()


def test_a_model_not_on_this_machine_names_the_ways_to_name_its_source(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LATENTCODEC_SD_VAE", raising=False)
    monkeypatch.delenv("LATENTCODEC_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["encode", str(tiny[0]), "--model", "sd-vae"]) == 1  # no source named: nothing is downloaded
    err = capsys.readouterr().err
    assert "model 'sd-vae' is not on this machine (stabilityai/sd-vae-ft-mse)" in err
    assert "latentcodec --source" in err and "$LATENTCODEC_SD_VAE" in err and err.count("\n") == 1


def test_the_api_refuses_a_knob_given_twice_too():
    with pytest.raises(ValueError, match="give one of quality, step"):
        latentcodec.EncodeOptions(quality=50, step=1.0)
    with pytest.raises(ValueError, match="give one of quality, target_psnr"):
        latentcodec.EncodeOptions(target_psnr=30, quality=50)
    assert latentcodec.EncodeOptions(mode="scalar8", quality=50, palette_size=8).quality == 50  # no knob: no clash
