"""The pass runner (bucketed static batches, CUDA graphs) and the pipelined Codec built on it."""

import pytest
import torch
from PIL import Image

from latentcodec import Codec
from latentcodec.engine.encoder import Encoder
from latentcodec.engine.errors import EngineError
from latentcodec.engine.runner import BUCKETS, HostCopy, PassRunner, bucket_size


def test_bucket_sizes():
    assert [bucket_size(n) for n in (1, 2, 3, 5, 8, 9, 33, 128)] == [1, 2, 4, 8, 8, 16, 64, 128]
    assert bucket_size(129) == 256 and bucket_size(300) == 384
    assert all(bucket_size(b) == b for b in BUCKETS)
    with pytest.raises(ValueError):
        bucket_size(0)


def _conv_pass(device="cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).to(device).eval()


def test_static_batches_match_eager_and_are_reused():
    net = _conv_pass()
    runner = PassRunner(net, torch.device("cpu"), static=True, max_graphs=2)
    a, b = torch.rand(4, 3, 8, 8), torch.rand(3, 3, 8, 8)
    with torch.inference_mode():
        expected_a, expected_b = net(a), net(b)
    assert torch.equal(runner(a), expected_a)
    out_b = runner(b)  # bucket 4 again: one buffer, and row 3 still holds a's data, which must not leak
    assert torch.equal(out_b, expected_b) and out_b.shape[0] == 3
    assert runner.captures == 1
    out_b.zero_()  # the caller owns what it gets
    assert torch.equal(runner(b), expected_b)

    runner(torch.rand(1, 3, 8, 8))
    runner(torch.rand(2, 3, 16, 8))
    assert runner.captures == 3 and len(runner._batches) == 2  # least recently used shape dropped
    runner(a)
    assert runner.captures == 4


def test_passes_with_a_per_image_second_input():
    """A denoiser-and-decoder pass takes latents and one noise level per image: both go through the buffers."""
    net = _conv_pass()
    fn = lambda x, scale: net(x) * scale[:, None, None, None]  # noqa: E731
    runner = PassRunner(fn, torch.device("cpu"), static=True)
    x, scale = torch.rand(3, 3, 8, 8), torch.tensor([0.5, 1.0, 2.0])
    with torch.inference_mode():
        expected = fn(x, scale)
    assert torch.allclose(runner(x, scale), expected)
    assert torch.allclose(runner(x[:1], scale[2:]), fn(x[:1], scale[2:]))  # bucket 1: a second buffer pair
    eager = PassRunner(fn, torch.device("cpu"), static=False, max_rows=1)
    assert torch.allclose(eager(x, scale), expected, atol=1e-6)


def test_eager_runner_calls_the_pass_directly():
    net = _conv_pass()
    runner = PassRunner(net, torch.device("cpu"), static=False)
    x = torch.rand(3, 3, 5, 7)
    with torch.inference_mode():
        assert torch.equal(runner(x), net(x))
    assert runner.captures == 0


def test_host_copy_of_cpu_tensor_is_immediate():
    t = torch.arange(6)
    assert HostCopy(t).get() is t


@pytest.fixture(scope="module")
def crops(kodak_crop, odd_crop):
    flipped = kodak_crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return [kodak_crop, flipped, kodak_crop.transpose(Image.Transpose.FLIP_TOP_BOTTOM), odd_crop]


@pytest.mark.parametrize("mode", ["uniform", "palette", "scalar8"])
def test_static_batches_give_the_same_streams_as_one_by_one(codec, crops, mode):
    """Three equal-shape images run padded to a bucket of 4; every stream equals its one-image encode."""
    static = Codec("taef2", device="cpu", graphs=True, batch_size=8)
    options = {"mode": mode, "palette_size": 16}
    batched = static.encode_batch(crops, **options)
    assert static.encoder_pass.captures == 2  # one bucket for the three 72x40 crops, one for the 37x21 crop
    singles = [codec.encode(image, **options) for image in crops]
    assert [r.unwrap() for r in batched] == singles
    decoded = static.decode_tensors(singles)
    reference = codec.decode_tensors(singles)
    assert all(torch.equal(a, b) for a, b in zip(decoded, reference, strict=True))


def test_a_failure_in_the_host_stage_costs_only_that_item(codec, crops, monkeypatch):
    original = Encoder.pack

    def flaky(self, job, *args):
        if job.width == crops[3].width:
            raise RuntimeError("disk on fire")
        return original(self, job, *args)

    monkeypatch.setattr(Encoder, "pack", flaky)
    small = Codec("taef2", device="cpu", batch_size=2)
    results = small.encode_batch([*crops, *crops])
    assert [r.ok for r in results] == [True, True, True, False] * 2
    assert isinstance(results[3].error, EngineError) and "disk on fire" in str(results[3].error)
    assert results[0].value == results[4].value == codec.encode(crops[0])


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@pytest.mark.gpu
@cuda
def test_cuda_graph_replays_match_eager():
    net = _conv_pass("cuda").half()
    runner = PassRunner(net, torch.device("cuda"), static=True, memory_format=torch.channels_last)
    assert runner.graphs
    for n in (3, 4, 1, 3):
        x = torch.rand(n, 3, 32, 24, device="cuda", dtype=torch.float16)
        with torch.inference_mode():
            torch.testing.assert_close(runner(x), net(x), atol=2e-3, rtol=1e-3)
    assert runner.captures == 2  # buckets 4 and 1


@pytest.mark.gpu
@cuda
def test_gpu_codec_streams_decode_anywhere(codec, crops):
    gpu = Codec("taef2", device="cuda", batch_size=4)
    assert gpu.graphs and gpu.dtype == torch.float16
    streams = [r.unwrap() for r in gpu.encode_batch(crops, mode="uniform", step=0.25)]
    on_cpu = codec.decode_tensors(streams)  # same weights fingerprint, so CPU decodes GPU streams
    on_gpu = gpu.decode_tensors(streams)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert a.shape == b.shape and (a - b).abs().mean() < 0.01
    reference = [codec.decode_tensors([codec.encode(image, mode="uniform", step=0.25)])[0] for image in crops]
    for a, b in zip(on_gpu, reference, strict=True):
        assert (a - b).abs().mean() < 0.02  # fp16 GPU and fp32 CPU encodes agree closely
    assert gpu.encoder_pass.captures >= 1 and gpu.decoder_pass.captures >= 1


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(("qmin", "qmax", "nbytes"), [(0, 255, 1), (-127, 127, 1), (-32767, 32767, 2)])
def test_triton_kernels_on_the_gpu_match_the_reference(qmin, qmax, nbytes):
    from latentcodec.kernels import ops as kernels

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(5, 32, 64, 96, device="cuda", generator=g).to(torch.float16) * (qmax / 30)
    x = x.contiguous(memory_format=torch.channels_last)
    offset = torch.randn(5, 32, device="cuda", generator=g)
    scale = torch.rand(5, 32, device="cuda", generator=g) * 0.2 + 0.01
    expected = kernels.quantize_planes(x, offset, scale, qmin, qmax, nbytes, backend="torch")
    actual = kernels.quantize_planes(x, offset, scale, qmin, qmax, nbytes, backend="triton")
    mismatch = (actual != expected).float().mean().item()
    assert mismatch < 1e-6, f"{mismatch:.2e} of the bytes differ"  # only exact .5 ties may round differently
    layout = {"dtype": torch.float16, "memory_format": torch.channels_last}
    back = kernels.dequantize_planes(actual, offset, scale, (32, 64, 96), nbytes, qmin < 0, backend="triton", **layout)
    ref = kernels.dequantize_planes(actual, offset, scale, (32, 64, 96), nbytes, qmin < 0, backend="torch", **layout)
    torch.testing.assert_close(back, ref, atol=1e-2, rtol=1e-3)


@pytest.mark.gpu
@cuda
def test_compiled_graphed_codec_matches_the_eager_one(crops):
    eager = Codec("taef2", device="cuda", graphs=False)
    fast = Codec("taef2", device="cuda", compile=True, batch_size=4)
    streams = [r.unwrap() for r in fast.encode_batch(crops, mode="uniform", step=0.25)]
    for a, b in zip(fast.decode_tensors(streams), eager.decode_tensors(streams), strict=True):
        assert (a - b).abs().mean() < 0.005
    again = [r.unwrap() for r in eager.encode_batch(crops, mode="uniform", step=0.25)]
    for a, b in zip(eager.decode_tensors(streams), eager.decode_tensors(again), strict=True):
        assert (a - b).abs().mean() < 0.005  # compiled and eager encoders agree but for rare rounding ties
    assert fast.encoder_pass.graphs and fast.encoder_pass.captures >= 1
