"""The entropy bench: every method codes real bytes, the bound is a bound, the summary adds up."""

import numpy as np
import pytest

from latentcodec.bench import entropy


def test_order0_bound_of_known_symbols():
    values = np.array([[0, 0, 1, 1], [5, 5, 5, 5]], dtype=np.int8)  # channel 0: 1 bit each, channel 1: nothing
    assert entropy.order0_bytes(values) == pytest.approx(4 / 8)


def test_compare_codes_real_latents(codec, kodak_crop):
    rgb = entropy.torch.from_numpy(np.array(kodak_crop)).permute(2, 0, 1).float() / 255
    symbols = entropy.symbols_at(codec, rgb, 0.5, 1.0)
    assert symbols.shape == (32, -(-round(kodak_crop.height / 2) // 8), -(-round(kodak_crop.width / 2) // 8))
    sizes = entropy.compare(symbols)
    assert 0 < sizes["context"] < sizes["zstd"] and 0 < sizes["passes"] < sizes["zstd"]
    assert sizes["order0"] < sizes["zstd"]


def test_summary_totals_per_target():
    bounds = ({"order0": 90}, {"order0": 280})
    rows = [
        {"image": "a", "target": 0.1, "scale": 0.5, "step": 1.0, "zstd": 100, "context": 60, "passes": 64},
        {"image": "b", "target": 0.1, "scale": 0.35, "step": 2.0, "zstd": 300, "context": 240, "passes": 256},
    ]
    (row,) = entropy.summary([{**row, **bound} for row, bound in zip(rows, bounds, strict=True)])
    assert row["zstd"] == 200 and row["context"] == 150 and row["scale"] == pytest.approx(0.425)
    assert row["saving"] == pytest.approx(0.25) and row["saving_order0"] == pytest.approx(0.075)
    assert row["passes"] == 160 and row["saving_passes"] == pytest.approx(0.2)
