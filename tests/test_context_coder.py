"""The ``context`` entropy method: exact round trips, hostile payloads, and the same bytes in any process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentcodec.engine.entropy import context_coder, latent_stage, zstd
from latentcodec.engine.errors import CorruptStreamError
from latentcodec.engine.format import CodingMode, EntropyMethod


@pytest.fixture(scope="module")
def model():
    return latent_stage.context_model("flux2")


def laplace_symbols(seed: int, shape: tuple[int, int, int], scale: float) -> np.ndarray:
    """Smooth-ish int8 symbols: a random walk along rows plus Laplace noise, clipped to the int8 range."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.laplace(0, scale / 4, size=shape), axis=2)
    return np.clip(np.round(walk + rng.laplace(0, scale, size=shape)), -127, 127).astype(np.int8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 11),
    scale=st.sampled_from([0.0, 0.3, 2.0, 40.0, 500.0]),
    seed=st.integers(0, 2**16),
)
def test_any_symbols_round_trip_exactly(model, height, width, scale, seed):
    symbols = laplace_symbols(seed, (32, height, width), scale)
    payload = context_coder.encode(symbols, model)
    assert np.array_equal(context_coder.decode(payload, symbols.shape, model), symbols)


def test_extreme_symbols_round_trip(model):
    symbols = np.full((32, 5, 6), 127, dtype=np.int8)
    symbols[::2, ::2] = -127
    assert np.array_equal(context_coder.decode(context_coder.encode(symbols, model), symbols.shape, model), symbols)


@pytest.mark.parametrize("step", [0.5, 2.0])
def test_real_latents_cost_fewer_bytes_than_zstd(model, codec, kodak_crop, step):
    rgb = torch.from_numpy(np.array(kodak_crop)).permute(2, 0, 1).float() / 255
    symbols = torch.round(codec.latents_of(rgb[None])[0] / step).clamp(-127, 127).to(torch.int8).numpy()
    assert len(context_coder.encode(symbols, model)) < 0.85 * len(zstd.compress(symbols.tobytes()))


@pytest.fixture(scope="module", params=list(latent_stage.METHODS), ids=lambda m: m.label)
def method(request):
    """Every modelled method (the hostile-payload tests hold for each): its coder module and model."""
    return latent_stage.METHODS[request.param], latent_stage.model_for(request.param, "flux2")


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=600), height=st.integers(1, 6), width=st.integers(1, 6))
def test_hostile_payloads_decode_or_raise_corrupt_stream(method, payload, height, width):
    (coder, model), start = method, time.perf_counter()
    try:
        symbols = coder.decode(payload, (32, height, width), model)
    except CorruptStreamError:
        pass
    else:
        assert symbols.shape == (32, height, width) and symbols.dtype == np.int8
    assert time.perf_counter() - start < 2.0


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_mutated_payloads_decode_or_raise_corrupt_stream(method, data):
    coder, model = method
    symbols = laplace_symbols(data.draw(st.integers(0, 99)), (32, 4, 5), 1.5)
    payload = bytearray(coder.encode(symbols, model))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        decoded = coder.decode(bytes(payload[:cut]), symbols.shape, model)
    except CorruptStreamError:
        return
    assert decoded.shape == symbols.shape


def test_context_payloads_need_int8_uniform_symbols():
    shape = (32, 2, 2)
    with pytest.raises(CorruptStreamError, match="int8 uniform"):
        latent_stage.decompress(b"\0" * 8, EntropyMethod.CONTEXT, CodingMode.PALETTE, 128, shape, "flux2")
    with pytest.raises(CorruptStreamError, match="int8 uniform"):
        latent_stage.decompress(b"\0" * 8, EntropyMethod.CONTEXT, CodingMode.UNIFORM, 256, shape, "flux2")
    with pytest.raises(CorruptStreamError, match="int8 uniform"):
        latent_stage.decompress(b"\0" * 8, EntropyMethod.CONTEXT, CodingMode.UNIFORM, 128, shape, "sd")


def test_the_method_falls_back_to_zstd_where_context_does_not_apply():
    shape = (32, 2, 2)
    assert latent_stage.method_for(EntropyMethod.CONTEXT, CodingMode.UNIFORM, 128, shape, "flux2").label == "context"
    for mode, size, space in [(CodingMode.UNIFORM, 256, "flux2"), (CodingMode.PALETTE, 128, "flux2")]:
        assert latent_stage.method_for(EntropyMethod.CONTEXT, mode, size, shape, space) == EntropyMethod.ZSTD
    assert latent_stage.method_for(EntropyMethod.CONTEXT, CodingMode.UNIFORM, 16, (4, 2, 2), "") == EntropyMethod.ZSTD
    assert latent_stage.method_for(EntropyMethod.ZSTD, CodingMode.UNIFORM, 128, shape, "flux2") == EntropyMethod.ZSTD


_DIGEST_SCRIPT = """
import hashlib, sys
import numpy as np
from latentcodec.engine.entropy import context_coder, latent_stage
from test_context_coder import laplace_symbols
model = latent_stage.context_model("flux2")
symbols = laplace_symbols(7, (32, 12, 17), 1.2)
payload = context_coder.encode(symbols, model)
decoded = context_coder.decode(payload, symbols.shape, model)
assert np.array_equal(decoded, symbols)
print(hashlib.sha256(payload).hexdigest())
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_payloads_are_the_same_in_any_process_and_thread_count(model, threads):
    """What is guaranteed: the payload is a function of the symbols alone (integer contexts, shipped integer
    tables), so another process with other thread counts writes and reads the same bytes."""
    here = hashlib.sha256(context_coder.encode(laplace_symbols(7, (32, 12, 17), 1.2), model)).hexdigest()
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    here_folder = os.path.dirname(os.path.abspath(__file__))  # where the script imports this module from
    result = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT], env=env, cwd=here_folder, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == here


def test_a_seconds_long_fitting_run(tmp_path):
    from PIL import Image
    from shared_inputs import SHARED

    from latentcodec.engine.entropy.context_model import PRECISION, load
    from latentcodec.training.entropy_model import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("002.png", "003.png"):
        Image.open(SHARED / "data" / "photos" / name).convert("RGB").crop((0, 0, 160, 128)).save(folder / name)
    output = tmp_path / "model.safetensors"
    options = ["--iterations", "3", "--batch", "2", "--crop", "8", "--holdout", "1", "--bins", "8"]
    main([str(output), "--folders", str(folder), *options])
    fitted = load(output)
    assert fitted.frequencies.shape == (8 * 4, 509) and (fitted.frequencies.sum(1) == 1 << PRECISION).all()
    symbols = laplace_symbols(1, (32, 3, 4), 2.0)
    assert np.array_equal(context_coder.decode(context_coder.encode(symbols, fitted), symbols.shape, fitted), symbols)


def test_both_methods_decode_to_the_same_image(codec, kodak_crop):
    """The entropy stage is lossless: the same symbols, the same image; the context stream is the smaller."""
    import latentcodec

    streams = {m: codec.encode(kodak_crop, step=1.0, entropy=m, denoiser=None) for m in ("context", "zstd")}
    assert [latentcodec.info(streams[m]).version for m in ("context", "zstd")] == [4, 1]
    assert latentcodec.info(streams["context"]).entropy == "context"
    images = {m: np.asarray(codec.decode(data)) for m, data in streams.items()}
    assert np.array_equal(images["context"], images["zstd"])
    assert len(streams["context"]) < len(streams["zstd"])


def test_palette_and_scalar8_streams_keep_zstd(codec, kodak_crop):
    import latentcodec

    for options in ({"mode": "palette", "palette_size": 16}, {"mode": "scalar8"}):
        assert latentcodec.info(codec.encode(kodak_crop, denoiser=None, **options)).entropy == "zstd"


def test_the_encoders_block_size_changes_no_byte(model, monkeypatch):
    """The encoder computes contexts block by block (bounded memory); any block size gives the same payload."""
    symbols = laplace_symbols(11, (32, 9, 13), 1.5)
    whole = context_coder.encode(symbols, model)
    monkeypatch.setattr(context_coder, "BLOCK", 5)
    assert len(context_coder._blocks(np.sort((2 * np.arange(9)[:, None] + np.arange(13)).ravel()))) > 5
    assert context_coder.encode(symbols, model) == whole
