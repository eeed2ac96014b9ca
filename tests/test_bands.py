"""Large images after the latents, in bounded memory (engine/bands.py and what it runs): the banded path makes
the whole-image path's pixels, and a tiny stream declaring a huge image decodes in bounded memory and time."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from shared_inputs import kodak_path

import latentcodec.engine.bands as bands
import latentcodec.engine.decoder as decoder
import latentcodec.engine.tiling as tiling
from latentcodec import Codec
from latentcodec.engine.models import lowres
from latentcodec.engine.models.bicubic import Grid, bicubic_block, reads
from latentcodec.engine.models.synthesis import Synthesizer
from latentcodec.engine.models.upscaler import Upscaler
from latentcodec.engine.tiling import Tiling, blend_weights, tiled_bands

GB = 1 << 30


def _blocks(make, size: tuple[int, int], rows: int, cols: int) -> torch.Tensor:
    """An output ``[1, 3, H, W]`` assembled from ``make((r0, r1), (c0, c1))`` blocks."""
    out = torch.empty(1, 3, *size)
    for r0 in range(0, size[0], rows):
        for c0 in range(0, size[1], cols):
            spans = (r0, min(size[0], r0 + rows)), (c0, min(size[1], c0 + cols))
            out[..., slice(*spans[0]), slice(*spans[1])] = make(*spans)
    return out


def _grid(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> Grid:
    return Grid(image[:, :, rows][:, :, :, cols], rows, cols, tuple(image.shape[-2:]))


@pytest.mark.parametrize("shape", [(96, 96, 1024, 700), (37, 21, 101, 333), (300, 200, 40, 90), (5, 5, 1, 1)])
def test_bicubic_blocks_are_the_whole_resize(shape):
    h, w, height, width = shape
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    whole = F.interpolate(image, size=(height, width), mode="bicubic")

    def block(rows, cols):
        source = _grid(image, reads(h, height, rows), reads(w, width, cols))  # only what the block reads
        return bicubic_block(source, (height, width), rows, cols)

    assert (_blocks(block, (height, width), 50, 64) - whole).abs().max() < 2e-6  # PyTorch's fused rounding


@pytest.mark.parametrize("kind", ["upscaler", "synthesis"])
def test_upscaler_blocks_are_the_whole_upscale(kind):
    torch.manual_seed(0)
    upscaler = Upscaler(width=8, depth=2) if kind == "upscaler" else Synthesizer((8, 16, 24))
    last = upscaler.body[-1] if kind == "upscaler" else upscaler.body.tail
    torch.nn.init.normal_(last.weight, std=0.1)  # a residual that is not zero
    image, size, level = torch.rand(1, 3, 41, 30), (301, 222), torch.tensor([0.4])
    with torch.no_grad():
        whole = upscaler(image, size, level)
        assert (whole - F.interpolate(image, size=size, mode="bicubic")).abs().max() > 1e-2

        def block(rows, cols):
            source = _grid(image, upscaler.reads(41, size[0], rows), upscaler.reads(30, size[1], cols))
            return upscaler.block(source, size, rows, cols, level)

        assert (_blocks(block, size, 64, 48) - whole).abs().max() < 1e-5


def _reference_blend(fn, inputs: torch.Tensor, tiling_: Tiling, out_cell: int) -> torch.Tensor:
    """The blend written out plainly: every tile into one zeroed output, row by row of tiles."""
    rows, cols = tiling_.spans(inputs.shape[-2]), tiling_.spans(inputs.shape[-1])
    row_weights, col_weights = blend_weights(rows, out_cell), blend_weights(cols, out_cell)
    output = torch.zeros(1, 3, inputs.shape[-2] * out_cell, inputs.shape[-1] * out_cell)
    for (r0, r1), rw in zip(rows, row_weights, strict=True):
        for (c0, c1), cw in zip(cols, col_weights, strict=True):
            tile = fn(inputs[..., r0:r1, c0:c1])[0]
            output[0, :, r0 * out_cell : r1 * out_cell, c0 * out_cell : c1 * out_cell].addcmul_(tile, rw[:, None] * cw)
    return output


@pytest.mark.parametrize("across", [False, True])
def test_tiled_bands_hold_one_row_of_tiles_and_blend_as_one_output(across):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Upsample(scale_factor=8), torch.nn.Conv2d(4, 3, 3, padding=1))
    inputs, tiling_ = torch.randn(1, 4, 70, 45), Tiling(16, 4)
    with torch.no_grad():
        reference = _reference_blend(net, inputs, tiling_, 8)
        joined, at = torch.zeros_like(reference), 0
        for start, band in tiled_bands(
            lambda x: net(x), inputs, (), tiling_, cell=1, out_cell=8, chunk=1, across=across
        ):
            length = band.shape[-1] if across else band.shape[-2]
            assert start == at and 0 < length <= 16 * 8  # in order, at most one row (column) of tiles
            (joined[..., start : start + length] if across else joined[:, :, start : start + length]).copy_(band)
            at += length
    assert at == (reference.shape[-1] if across else reference.shape[-2])
    if across:  # where four tiles overlap, their sum is added up in another order
        assert (joined - reference).abs().max() < 1e-6
    else:
        assert torch.equal(joined, reference)


@pytest.mark.parametrize("grid", [(300, 128), (257, 128), (40, 4096)])
def test_a_lone_convolution_at_latent_resolution_runs_in_stripes_to_the_same_numbers(grid):
    torch.manual_seed(0)
    conv, x = torch.nn.Conv2d(32, 64, 3, padding=1), torch.randn(1, 32, *grid)
    assert len(lowres._stripes(*grid)) > 1
    with torch.no_grad():
        assert torch.equal(lowres.run_layer(conv, x), conv(x))


# the real decoder, small images forced through the banded path ------------------------------------------------------


@pytest.fixture(scope="module")
def tiled_codec() -> Codec:
    return Codec("taef2-q2", device="cpu", tile=256)  # a 400x300 image runs in 2 x 2 tiles


def _both(codec: Codec, data: bytes, monkeypatch, tensors: bool = False):
    """(whole-image path, banded path) images of a stream."""
    decode = (lambda: codec.decode_tensors([data])[0].numpy()) if tensors else (lambda: np.asarray(codec.decode(data)))
    with monkeypatch.context() as patch:
        patch.setattr(decoder, "streamed", lambda header: False)
        whole = decode()
    with monkeypatch.context() as patch:
        patch.setattr(bands, "STREAMED_PIXELS", 0)
        patch.setattr(bands, "BLOCK_SAMPLES", 1 << 14)  # many blocks, in both directions
        patch.setattr(bands, "WINDOW_SAMPLES", 1 << 15)
        banded = decode()
    return whole, banded


@pytest.mark.parametrize("kind", ["RGB", "L", "RGBA", "LA"])
def test_banded_decode_makes_the_whole_image_paths_pixels(tiled_codec, monkeypatch, kind):
    crop = Image.open(kodak_path(23)).crop((200, 100, 600, 400))
    image = crop.convert(kind) if kind != "LA" else crop.convert("L").convert("LA")
    if "A" in kind:
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    data = tiled_codec.encode(image, mode="uniform", step=1.0, denoiser=None, entropy="zstd")
    whole, banded = _both(tiled_codec, data, monkeypatch)
    assert whole.shape == banded.shape and np.array_equal(whole, banded)


def test_banded_tensors_and_columns_of_tiles(tiled_codec, monkeypatch):
    image = Image.open(kodak_path(5)).convert("RGB").crop((0, 0, 512, 264))
    data = tiled_codec.encode(image, mode="uniform", step=1.0, denoiser=None, entropy="zstd")
    whole, banded = _both(tiled_codec, data, monkeypatch, tensors=True)
    assert np.array_equal(whole, banded)
    monkeypatch.setattr(tiling, "BAND_BYTES", 1)  # wider than tall: columns of tiles
    whole, banded = _both(tiled_codec, data, monkeypatch)
    assert np.abs(whole.astype(int) - banded).max() <= 1 and np.mean(whole != banded) < 1e-4


def test_banded_resize_makes_the_whole_image_paths_pixels_but_for_rounding(tiled_codec, monkeypatch):
    image = Image.open(kodak_path(8)).convert("RGBA").crop((100, 100, 500, 400))
    data = tiled_codec.encode(image, mode="uniform", step=1.0, scale=0.6, denoiser=None, entropy="zstd")
    whole, banded = _both(tiled_codec, data, monkeypatch)
    assert whole.shape == banded.shape == (300, 400, 4)
    assert np.abs(whole.astype(int) - banded).max() <= 1 and np.mean(whole != banded) < 1e-3


def test_banded_resize_by_a_synthesis_stage_makes_the_whole_image_paths_pixels_but_for_rounding(monkeypatch):
    codec = Codec("taef2-q3", device="cpu", tile=256)
    torch.manual_seed(0)
    synthesizer = Synthesizer((8, 16, 24)).eval()  # blocks on its grid of 8, told the level
    torch.nn.init.normal_(synthesizer.body.tail.weight, std=0.02)
    monkeypatch.setitem(codec.session.model._modules, "upscaler", synthesizer)  # a module: setattr would not undo
    image = Image.open(kodak_path(8)).convert("RGB").crop((100, 100, 500, 400))
    data = codec.encode(image, mode="uniform", step=1.0, scale=0.4, denoiser=None, entropy="zstd")
    whole, banded = _both(codec, data, monkeypatch)
    assert whole.shape == banded.shape == (300, 400, 3)
    assert np.abs(whole.astype(int) - banded).max() <= 1 and np.mean(whole != banded) < 1e-3


# the acceptance: a tiny stream declaring a huge image -------------------------------------------------------------

# Run in a fresh process: ru_maxrss (what the kernel saw, torch's and Pillow's allocations included) less the
# resident set just before the decode, once the model is loaded and its passes have run. tracemalloc misses
# torch's allocator, and an address-space limit (RLIMIT_AS) also counts what torch and OpenMP only reserve.
_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, sys.argv[1])
    import latentcodec
    from hostile_inputs import declared_stream

    model = latentcodec.codec_for("taef2-q2").session.model
    latentcodec.decode(declared_stream(64, 64, model_id="taef2-q2", fingerprint=model.fingerprint, noise_level=0.5))
    data = declared_stream(
        16384, 1024, model_id="taef2-q2", fingerprint=model.fingerprint, coded=(768, 768), noise_level=0.5
    )
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * resource.getpagesize()
    started = time.perf_counter()
    image = latentcodec.decode(data)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"bytes": len(data), "size": image.size, "seconds": seconds, "growth": peak - resident}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set from /proc")
def test_a_tiny_stream_declaring_a_huge_image_decodes_in_bounded_memory_and_time():
    child = [sys.executable, "-c", _CHILD, str(Path(__file__).parent)]
    done = subprocess.run(child, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["bytes"] < 200 and result["size"] == [16384, 1024]
    assert result["growth"] < 1 * GB  # the whole-image path took 2.3 GB
    assert result["seconds"] < 120  # 15-30 s on 2 busy cores, before and after
