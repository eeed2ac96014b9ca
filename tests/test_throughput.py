"""The throughput benchmark's machinery, on the CPU at toy sizes: counting, floors, the suite and its outputs."""

import json

import pytest
import torch

from latentcodec.bench import cli, throughput

TINY_SD = {
    **throughput.SD_VAE_CONFIG,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "norm_num_groups": 8,
}


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert throughput.percentile(values, 50) == 50
    assert throughput.percentile(values, 99) == 99
    assert throughput.percentile([3.0], 99) == 3.0
    assert throughput.percentile([5, 1, 4, 2, 3], 100) == 5


def test_cost_of_one_convolution_is_counted_exactly():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.zeros(1, 3, 8, 8)
    cost = throughput.count_cost(conv, x)
    assert cost.flops == 2 * (3 * 9) * 4 * 8 * 8  # multiply-adds per output element, times outputs
    assert cost.bytes == 4 * (3 * 64 + 4 * 3 * 9 + 4 + 4 * 64)  # input, weight, bias, output in float32


def test_model_costs_scale_with_pixels():
    small, wide, large = (
        throughput.pass_costs("taef2", w, h, torch.float32) for w, h in ((64, 64), (128, 64), (128, 128))
    )
    for direction in ("encode", "decode"):
        assert large[direction].flops == pytest.approx(4 * small[direction].flops, rel=1e-9)
        # bytes: weights once per layer plus activations in proportion to pixels (4096, 8192, 16384 here)
        step_1 = wide[direction].bytes - small[direction].bytes
        step_2 = large[direction].bytes - wide[direction].bytes
        assert step_1 > 0 and step_2 == pytest.approx(2 * step_1, rel=1e-9)
    half = throughput.pass_costs("taef2", 64, 64, torch.float16)
    assert half["decode"].bytes == pytest.approx(small["decode"].bytes / 2)


def test_floor_is_the_slower_of_compute_and_memory():
    peaks = throughput.Peaks(flops=1e12, bytes=1e11)
    assert throughput.floor_images_per_s(throughput.PassCost(2e12, 1e9), peaks) == pytest.approx(0.5)
    assert throughput.floor_images_per_s(throughput.PassCost(1e9, 1e12), peaks) == pytest.approx(0.1)


def test_suite_measures_engine_and_baseline_in_one_run(tmp_path):
    tiny = throughput.register_sd_vae_architecture(TINY_SD, "sd-vae-tiny")
    suite = throughput.run_suite(["taef2", tiny], [(32, 24)], [1, 2], torch.device("cpu"), calls=2, baseline_images=2)
    rows = suite.ratio_rows()
    assert len(rows) == 2 * 2 * 2  # models x batches x passes
    assert len([m for m in suite.measurements if m.pipeline == "baseline"]) == 2 * 2
    for row in rows:
        assert row["images_per_s"] > 0 and row["speedup"] > 0 and row["floor_images_per_s"] > 0
        assert row["p99_ms"] >= row["p50_ms"] > 0
    table = throughput.format_table(suite)
    assert table.count("\n| ") == len(rows) + 1  # header and one line per row
    throughput.plot(suite, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(json.dumps(suite.as_dict()))["table"][0]["model"] == "taef2"


def test_cli_throughput_writes_json_and_plot(tmp_path, capsys):
    code = cli.main(
        ["--device", "cpu", "throughput", "--models", "taef2", "--sizes", "16x16", "--batches", "2", "--calls", "1",
         "--baseline-images", "1", "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png")]
    )  # fmt: skip
    assert code == 0
    assert "engine/baseline" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["measurements"]
    assert (tmp_path / "t.png").exists()
