"""``latentcodec-lab latents`` on two small crops: every row measured, the baselines and our exact modes as stated."""

import json

import pytest
from shared_inputs import kodak_path

from latentcodec.bench import latents
from latentcodec.bench.cli import main


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return latents.run([kodak_path(1), kodak_path(2)], size=64, steps=(0.2,), entropies=("passes",))


def test_rows_cover_every_method(rows) -> None:
    names = [row["method"] for row in rows]
    assert names[:5] == ["float16 safetensors", "bfloat16 safetensors", "zstd-19 fp16", "uint8 affine", "zstd-19 uint8"]
    assert any(n.startswith("ours lossless uint8") for n in names) and "ours passes step 0.2" in names
    by = {row["method"]: row for row in rows}
    assert by["float16 safetensors"]["x_fp16"] == 1 and by["uint8 affine"]["x_uint8"] == 1
    assert by["uint8 affine"]["x_fp16"] == pytest.approx(2, rel=0.05)  # less the headers
    assert by["ours lossless uint8 passes"]["rmse"] == pytest.approx(by["uint8 affine"]["rmse"])  # exact codes
    assert by["ours passes step 0.2"]["max_error"] <= 0.1 + 1e-6
    near = next(row for row in rows if row["method"].startswith("ours near-lossless"))
    assert near["max_error"] <= float(near["method"].rsplit(" ", 1)[1]) / 2 + 1e-4
    assert all(row["latents_per_s"] > 0 and row["psnr"] > 20 for row in rows)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(kodak_path(3).read_bytes())
    out = tmp_path / "rows.json"
    argv = ["latents", str(folder), "--limit", "1", "--size", "64", "--steps", "0.3", "--entropies", "passes"]
    assert main([*argv, "--json", str(out)]) == 0
    assert "uint8 affine" in capsys.readouterr().out
    assert len(json.loads(out.read_text())) == 9
