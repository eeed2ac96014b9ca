"""The throughput benchmark's machinery, on the CPU at toy sizes: counting, floors, the suite, the default and
plain paths stage by stage, the stage timer, and their outputs."""

import contextvars
import json
import time

import pytest
import torch

import latentcodec
from latentcodec.bench import cli, stages, throughput
from latentcodec.engine import stage_timer
from latentcodec.engine.pipeline import HostPool
from latentcodec.engine.stage_timer import recording, stage, staged

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
        ["--device", "cpu", "throughput", "--suite", "--models", "taef2", "--sizes", "16x16", "--batches", "2",
         "--calls", "1", "--baseline-images", "1", "--json", str(tmp_path / "t.json"),
         "--plot", str(tmp_path / "t.png")]
    )  # fmt: skip
    assert code == 0
    assert "engine/baseline" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["measurements"]
    assert (tmp_path / "t.png").exists()


def test_stage_timer_records_nothing_when_no_recorder_is_active():
    calls = []
    counted = staged("counted")(lambda x: calls.append(x) or x)
    assert stage("anything") is stage_timer.OFF  # one shared do-nothing context manager
    with stage("anything"):
        assert counted(1) == 1
    with recording() as recorder:
        pass
    elsewhere = contextvars.copy_context()
    with recording() as active:
        elsewhere.run(counted, 2)  # a context that was copied before the recording: not recorded
    with stage("after"):
        counted(3)
    assert calls == [1, 2, 3]
    assert recorder.totals() == {} and active.totals() == {}


class _WallClock:
    """A device clock for the test: wall time stands in for the device's timeline."""

    def mark(self) -> float:
        return time.perf_counter()

    def elapsed_ms(self, start: float, end: float) -> float:
        return 1000 * (end - start)


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_stage_timer_nests_exclusively_and_follows_work_onto_host_threads():
    pool = HostPool(1)
    with recording(_WallClock()) as recorder:
        with stage("search", device=True, scope=True):
            _busy(0.02)
            with stage("decoder network", device=True):
                _busy(0.03)
            pool.submit(staged("pack")(_busy), 0.01).result()
        with stage("decoder network"):
            _busy(0.01)
    pool.shutdown()
    totals = recorder.totals()
    assert set(totals) == {"search", "search / decoder network", "search / pack", "decoder network"}
    assert all(t.calls == 1 and t.cpu_s >= 0 and t.wall_s >= 0 for t in totals.values())
    assert 0.02 <= totals["search"].cpu_s < 0.03  # the nested decode is taken out; the host thread's pack was not in
    assert totals["search / decoder network"].cpu_s >= 0.03 and totals["search / pack"].cpu_s >= 0.01
    assert totals["search"].device_s is not None and totals["search"].device_s < totals["search"].wall_s + 0.011
    assert totals["decoder network"].device_s is None  # no device work marked


def test_cli_throughput_times_the_default_and_the_plain_path_by_stage(tmp_path, capsys):
    out = tmp_path / "paths.json"
    code = cli.main(
        ["--device", "cpu", "throughput", "--sizes", "48x32", "--batches", "2", "--scale", "0.5", "--json", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "| encode | default | plain | default/plain |" in text and "| decode | default | plain |" in text
    (report,) = json.loads(out.read_text())
    assert report["model"] == "taef2-q4" and report["options"]["plain"]["entropy"] == "zstd"
    default_entropy = latentcodec.EncodeOptions().entropy.label
    assert report["streams"]["default"]["entropy"] == {default_entropy: 2}
    assert report["streams"]["plain"]["upscaled"] == 2
    for run in report["runs"]:
        assert run["images"] == 2 and run["images_per_s"] > 0 and run["cpu_s"] >= 0
        rows = run["stages"]
        assert [*stages.STAGES[run["direction"]], stages.UNTIMED] == [n for n in rows if " / " not in n]
        assert all(v >= 0 for row in rows.values() for k, v in row.items() if k.endswith("_ms") and v is not None)
        for name in ("encoder network", "entropy coding", "pack", "decoder network", "upscaler", "conversion"):
            assert rows.get(name, {"calls": 1})["calls"] > 0
    default_encode = next(r for r in report["runs"] if (r["path"], r["direction"]) == ("default", "encode"))
    # taef2-q4 names no denoiser by default: no strength search on the default path
    assert default_encode["stages"].get("strength search / decoder network", {"calls": 0})["calls"] == 0
    assert report["streams"]["default"]["denoised"] == 0


def test_cli_throughput_refuses_flags_of_the_other_part(tmp_path):
    assert cli.main(["--device", "cpu", "throughput", "--plot", str(tmp_path / "p.png")]) == 2
    assert cli.main(["--device", "cpu", "throughput", "--suite", "--scale", "0.5"]) == 2
