"""The ``passes`` entropy method: exact round trips, 16 steps at any size, rate without coding, a large hostile
payload, and the same bytes in any process (the random hostile and mutated payloads of both context methods are
in test_context_coder.py)."""

from __future__ import annotations

import contextlib
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
from test_context_coder import laplace_symbols

from latentcodec.engine.entropy import context_coder, latent_stage, passes_coder, passes_model, zstd
from latentcodec.engine.errors import CorruptStreamError
from latentcodec.engine.format import CodingMode, EntropyMethod


@pytest.fixture(scope="module", params=[EntropyMethod.PASSES, EntropyMethod.PASSES_V1], ids=lambda m: m.label)
def model(request):
    """Both passes models: the current one (side information) and the first one (none)."""
    return latent_stage.model_for(request.param, "flux2")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 11),
    scale=st.sampled_from([0.0, 0.3, 2.0, 40.0, 500.0]),
    seed=st.integers(0, 2**16),
)
def test_any_symbols_round_trip_exactly(model, height, width, scale, seed):
    symbols = laplace_symbols(seed, (32, height, width), scale)
    payload = passes_coder.encode(symbols, model)
    assert np.array_equal(passes_coder.decode(payload, symbols.shape, model), symbols)


def test_extreme_symbols_round_trip_and_minus_128_is_refused(model):
    symbols = np.full((32, 5, 6), 127, dtype=np.int8)
    symbols[::2, ::2] = -127
    assert np.array_equal(passes_coder.decode(passes_coder.encode(symbols, model), symbols.shape, model), symbols)
    symbols[0, 0, 0] = -128
    with pytest.raises(ValueError, match="-127"):
        passes_coder.encode(symbols, model)


@pytest.mark.parametrize("shape", [(32, 1, 1), (32, 2, 3), (32, 17, 9), (32, 64, 96)])
def test_sequential_steps_are_at_most_16_at_any_size(model, shape):
    steps = list(passes_coder.coding_steps(model, shape))
    assert len(steps) <= 16 and len({step for step, _, _ in steps}) == len(steps)
    covered = np.zeros(shape[1:], dtype=int)
    for p, (pi, pj) in enumerate(passes_model.PASSES):
        if any(q == p for _, q, _ in steps):
            covered[pi::2, pj::2] += 1
    assert (covered == 1).all()  # every position in exactly one pass


def test_no_step_reads_a_symbol_coded_at_or_after_it():
    both = passes_model.visible(32, 4).reshape(16, 9, 2, 32)  # symbols, then their log-magnitudes
    assert torch.equal(both[:, :, 0], both[:, :, 1])
    mask = both[:, :, 0]
    passes = len(passes_model.PASSES)
    coded_at = {}
    for p, (pi, pj) in enumerate(passes_model.PASSES):
        for o, (dy, dx) in enumerate(passes_model.OFFSETS):
            q = passes_model.PASSES.index(((pi + dy) % 2, (pj + dx) % 2))
            for g in range(4):
                for c in range(32):
                    coded_at[(p * 4 + g, o, c)] = q * 4 + c // 8
    for (step, o, c), when in coded_at.items():
        assert not mask[step, o, c] or when < step
    assert mask.sum() > 0 and passes == 4
    with_side = passes_model.visible(32, 4, side=8)
    assert torch.equal(with_side[:, :-8], passes_model.visible(32, 4)) and with_side[:, -8:].all()


def test_the_side_information_is_each_first_channels_mean_log_magnitude_and_payloads_check_it():
    model = latent_stage.model_for(EntropyMethod.PASSES, "flux2")
    symbols = laplace_symbols(5, (32, 6, 7), 3.0)
    logs = passes_model.LOG_TABLE[torch.from_numpy(symbols[: model.side]).abs().long()].double()
    side = passes_model.side_info(torch.from_numpy(symbols)[None], model.side)[0]
    assert model.side == 8 and torch.equal(side.long(), (logs.mean((1, 2)) + 0.5).floor().long())
    payload = passes_coder.encode(symbols, model)
    assert payload[: model.side] == side.numpy().tobytes()
    for bad in (payload[: model.side - 1], bytes([200]) + payload[1:], payload[: model.side] + b"\1\2"):
        with pytest.raises(CorruptStreamError):
            passes_coder.decode(bad, symbols.shape, model)


def test_side_information_makes_coarse_steps_cheap(codec, kodak_crop):
    """The first step of the first passes model saw no symbol and no scale: coarse symbols cost far more."""
    rgb = torch.from_numpy(np.array(kodak_crop)).permute(2, 0, 1).float() / 255
    symbols = torch.round(codec.latents_of(rgb[None])[0] / 4.0).clamp(-127, 127).to(torch.int8).numpy()
    first, current = (latent_stage.model_for(m, "flux2") for m in (EntropyMethod.PASSES_V1, EntropyMethod.PASSES))
    assert len(passes_coder.encode(symbols, current)) < 0.85 * len(passes_coder.encode(symbols, first))


@pytest.mark.parametrize("step", [0.5, 2.0])
def test_real_latents_cost_about_what_the_wavefront_context_costs(model, codec, kodak_crop, step):
    rgb = torch.from_numpy(np.array(kodak_crop)).permute(2, 0, 1).float() / 255
    symbols = torch.round(codec.latents_of(rgb[None])[0] / step).clamp(-127, 127).to(torch.int8).numpy()
    ours, theirs = len(passes_coder.encode(symbols, model)), len(zstd.compress(symbols.tobytes()))
    wavefront = len(context_coder.encode(symbols, latent_stage.context_model("flux2")))
    assert ours < 0.85 * theirs and ours < 1.08 * wavefront


def test_the_rate_is_known_without_coding(model):
    method = next(m for m in latent_stage.METHODS if latent_stage.model_for(m, "flux2") is model)
    for seed, scale in [(1, 0.3), (2, 2.0), (3, 20.0)]:
        symbols = laplace_symbols(seed, (32, 13, 22), scale)
        payload = passes_coder.encode(symbols, model)
        bits = passes_coder.code_length(symbols, model)
        assert bits <= 8 * len(payload) <= bits + 96
        planes = symbols.tobytes()
        estimate = latent_stage.payload_bits(planes, method, symbols.shape, "flux2", 19)
        assert estimate == bits


def test_passes_payloads_need_int8_uniform_symbols_and_fall_back_to_zstd():
    shape = (32, 2, 2)
    with pytest.raises(CorruptStreamError, match="int8 uniform"):
        latent_stage.decompress(b"\0" * 8, EntropyMethod.PASSES, CodingMode.PALETTE, 128, shape, "flux2")
    with pytest.raises(CorruptStreamError, match="int8 uniform"):
        latent_stage.decompress(b"\0" * 8, EntropyMethod.PASSES, CodingMode.UNIFORM, 128, shape, "sd")
    assert latent_stage.method_for(EntropyMethod.PASSES, CodingMode.UNIFORM, 128, shape, "flux2").label == "passes"
    assert latent_stage.method_for(EntropyMethod.PASSES, CodingMode.PALETTE, 128, shape, "flux2") == EntropyMethod.ZSTD


def test_a_large_hostile_payload_decodes_in_bounded_time(model):
    """A garbage payload for a 512x512 image's latents: decoded (garbage) or refused, quickly."""
    rng = np.random.default_rng(0)
    payload = rng.integers(1, 2**32, size=40_000, dtype=np.uint64).astype("<u4").tobytes()
    start = time.perf_counter()
    with contextlib.suppress(CorruptStreamError):
        passes_coder.decode(payload, (32, 64, 64), model)
    assert time.perf_counter() - start < 5.0


_DIGEST_SCRIPT = """
import hashlib
import numpy as np
from latentcodec.engine.entropy import latent_stage, passes_coder
from latentcodec.engine.format import EntropyMethod
from test_context_coder import laplace_symbols
model = latent_stage.model_for(EntropyMethod.parse("{method}"), "flux2")
symbols = laplace_symbols(7, (32, 12, 17), 1.2)
payload = passes_coder.encode(symbols, model)
assert np.array_equal(passes_coder.decode(payload, symbols.shape, model), symbols)
print(hashlib.sha256(payload).hexdigest())
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_payloads_are_the_same_in_any_process_and_thread_count(model, threads):
    method = next(m for m in latent_stage.METHODS if latent_stage.model_for(m, "flux2") is model)
    here = hashlib.sha256(passes_coder.encode(laplace_symbols(7, (32, 12, 17), 1.2), model)).hexdigest()
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    folder = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT.format(method=method.label)],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == here


def test_a_seconds_long_fitting_run(tmp_path):
    from PIL import Image
    from shared_inputs import SHARED

    from latentcodec.training.passes_model import main

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("002.png", "003.png"):
        Image.open(SHARED / "data" / "photos" / name).convert("RGB").crop((0, 0, 160, 128)).save(folder / name)
    output = tmp_path / "model.safetensors"
    options = ["--iterations", "3", "--batch", "2", "--crop", "8", "--holdout", "1", "--bins", "8", "--hidden", "8"]
    main([str(output), "--folders", str(folder), *options])
    fitted = passes_model.load(output)
    assert fitted.frequencies.shape == (8 * 4, 509) and (fitted.frequencies.sum(1) == 1 << 24).all()
    assert fitted.steps == 16 and fitted.hidden_weights.shape == (16, 2 * 9 * 32 + 8, 8) and fitted.side == 8
    symbols = laplace_symbols(1, (32, 3, 4), 2.0)
    assert np.array_equal(passes_coder.decode(passes_coder.encode(symbols, fitted), symbols.shape, fitted), symbols)


def test_both_context_methods_decode_to_the_same_image(codec, kodak_crop):
    import latentcodec

    streams = {m: codec.encode(kodak_crop, step=1.0, entropy=m, denoiser=None) for m in ("passes", "context", "zstd")}
    assert [latentcodec.info(streams[m]).entropy for m in streams] == ["passes", "context", "zstd"]
    images = {m: np.asarray(codec.decode(data)) for m, data in streams.items()}
    assert np.array_equal(images["passes"], images["zstd"]) and np.array_equal(images["context"], images["zstd"])


def test_a_batch_s_contexts_computed_at_once_code_each_row_as_alone(model):
    method = next(m for m in latent_stage.METHODS if latent_stage.model_for(m, "flux2") is model)
    grids = np.stack([laplace_symbols(seed, (32, 10, 13), scale) for seed, scale in ((1, 0.5), (2, 3.0), (3, 40.0))])
    planes = torch.from_numpy(grids).view(torch.uint8).reshape(3, -1)
    contexts = latent_stage.batch_contexts(planes, method, CodingMode.UNIFORM, grids.shape[1:], "flux2")
    for row, symbols in enumerate(grids):
        alone = latent_stage.compress(symbols.tobytes(), method, symbols.shape, "flux2", 19)
        given = tuple(t[row].numpy() for t in contexts)
        assert latent_stage.compress(symbols.tobytes(), method, symbols.shape, "flux2", 19, contexts=given) == alone
    wider = torch.cat([planes, planes], 1)  # the uniform coder's rows hold room for int16 symbols after them
    again = latent_stage.batch_contexts(wider, method, CodingMode.UNIFORM, grids.shape[1:], "flux2")
    assert all(torch.equal(a, b) for a, b in zip(again, contexts, strict=True))
    assert latent_stage.batch_contexts(planes[:, :-1], method, CodingMode.UNIFORM, grids.shape[1:], "flux2") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_contexts_on_cuda_give_the_same_payloads(model):
    symbols = laplace_symbols(5, (32, 24, 31), 1.5)
    payload = passes_coder.encode(symbols, model)
    assert passes_coder.encode(symbols, model, torch.device("cuda")) == payload
    assert np.array_equal(passes_coder.decode(payload, symbols.shape, model, torch.device("cuda")), symbols)


def test_the_encoder_codes_a_batch_from_contexts_computed_at_once(codec, kodak_crop, monkeypatch):
    images = [kodak_crop, kodak_crop.transpose(0), kodak_crop.transpose(1)]
    given = []
    compress = latent_stage.compress

    def spy(*args, **kwargs):
        given.append(kwargs.get("contexts", args[6] if len(args) > 6 else None) is not None)
        return compress(*args, **kwargs)

    monkeypatch.setattr(latent_stage, "compress", spy)
    batched = [r.unwrap() for r in codec.encode_batch(images, denoiser=None, step=1.0)]
    assert given == [True] * 3
    monkeypatch.setattr(latent_stage, "batch_contexts", lambda *args: None)
    assert [r.unwrap() for r in codec.encode_batch(images, denoiser=None, step=1.0)] == batched
    assert given[3:] == [False] * 3
