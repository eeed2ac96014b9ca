"""pytest-benchmark entry to the throughput measurements: one benchmark per model, pass, size and batch.

Run explicitly (outside the package and the test run)::

    pytest bench/benchmarks/test_throughput.py --benchmark-enable --benchmark-json=throughput.json
    LATENTCODEC_BENCH_DEVICE=cuda LATENTCODEC_BENCH_SIZES=512x512,768x512 pytest bench/benchmarks/test_throughput.py ...

Each benchmark times one call of ``batch`` images; ``extra_info`` records images/s. For the engine/baseline
ratio table with the FLOP floor, use ``latentcodec throughput`` (both pipelines in one run).
"""

import os

import pytest
import torch

from latentcodec.bench import throughput

DEVICE = torch.device(os.environ.get("LATENTCODEC_BENCH_DEVICE", "cuda" if torch.cuda.is_available() else "cpu"))
SIZES = [tuple(int(v) for v in s.split("x")) for s in os.environ.get("LATENTCODEC_BENCH_SIZES", "256x256").split(",")]
BATCHES = [int(b) for b in os.environ.get("LATENTCODEC_BENCH_BATCHES", "1,8").split(",")]
MODELS = os.environ.get("LATENTCODEC_BENCH_MODELS", "taef2").split(",")
OPTIONS = {"mode": "uniform", "step": 0.5, "level": 3, "denoiser": None}  # the VAE passes alone


@pytest.fixture(scope="module", params=MODELS)
def codecs(request):
    model = throughput.register_sd_vae_architecture() if request.param == "sd-vae" else request.param
    engine, baseline = throughput.engine_codec(model, DEVICE), throughput.baseline_codec(model, DEVICE)
    yield {"engine": engine, "baseline": baseline}
    engine.close()
    baseline.close()


@pytest.mark.parametrize("pipeline", ["engine", "baseline"])
@pytest.mark.parametrize("direction", ["encode", "decode"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("batch", BATCHES)
def test_throughput(benchmark, codecs, pipeline, direction, size, batch):
    codec = codecs[pipeline]
    codec.batch_size = batch if pipeline == "engine" else 1
    images = torch.randint(0, 256, (batch, 3, size[1], size[0]), dtype=torch.uint8).unbind(0)
    streams = codec.encode_tensors(images, **OPTIONS)
    if direction == "encode":
        result = benchmark.pedantic(codec.encode_tensors, args=(images,), kwargs=OPTIONS, rounds=3, warmup_rounds=1)
    else:
        result = benchmark.pedantic(codec.decode_tensors, args=(streams,), rounds=3, warmup_rounds=1)
    assert len(result) == batch
    if benchmark.stats:  # absent under --benchmark-disable
        benchmark.extra_info["images_per_s"] = batch / benchmark.stats.stats.mean
