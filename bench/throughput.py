"""Throughput and latency of the engine against the naive pipeline, and the floor set by FLOPs and bytes.

The *engine* is :class:`~latentcodec.Codec` as shipped: batches, fp16 on CUDA, channels-last, CUDA graphs,
Triton kernels, host threads for zstd beside the device. The *baseline* is what a diffusers user writes first:
the same model and coding, one image at a time, fp32, NCHW, eager, torch kernels, one host thread.
Both run in the same process on the same inputs, so their ratio is measured in one run.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from latentcodec.engine.codec import Codec
from latentcodec.engine.models import get_spec, load_model, register
from latentcodec.engine.models.loaders import wrap_diffusers

SD_VAE_ARCH = "sd-vae-arch"
# what the suite encodes with: the VAE passes and zstd (the plain path) unless a denoiser or coder is asked for
DEFAULT_OPTIONS = {"mode": "uniform", "step": 0.5, "level": 3, "denoiser": None, "entropy": "zstd"}

# Stable Diffusion 1.x VAE (the diffusers AutoencoderKL config of sd-vae-ft-mse); weights are random here
SD_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


def register_sd_vae_architecture(config: dict | None = None, model_id: str = SD_VAE_ARCH) -> str:
    """Register the SD VAE architecture with random weights (its speed does not depend on their values)."""
    from diffusers import AutoencoderKL

    def load(spec, _source):
        torch.manual_seed(0)
        return wrap_diffusers(spec, AutoencoderKL(**(config or SD_VAE_CONFIG)))

    spec = get_spec("sd-vae")
    register(model_id, type(spec)(**{**asdict(spec), "model_id": model_id, "description": "SD VAE, random"}), load)
    return model_id


def engine_codec(model: str, device: torch.device, compile: bool = False) -> Codec:
    """The engine as shipped (``compile`` adds torch.compile, worth it on GPUs)."""
    return Codec(model, device=device, compile=compile)


def baseline_codec(model: str, device: torch.device) -> Codec:
    """The naive pipeline: per image, fp32, NCHW, eager, torch kernels, one host thread."""
    return Codec(
        model, device=device, dtype=torch.float32, batch_size=1, graphs=False, channels_last=False, backend="torch",
        host_threads=1,
    )  # fmt: skip


@dataclass(frozen=True)
class Measurement:
    model: str
    pipeline: str  # "engine" or "baseline"
    direction: str  # "encode" or "decode"
    width: int
    height: int
    batch: int
    images: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[int], object], calls: int, device: torch.device) -> tuple[float, list[float]]:
    """Run ``call(i)`` for ``i`` in ``range(calls)`` after one warm-up; total seconds and each call's latency."""
    call(0)
    _sync(device)
    latencies = []
    start = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        call(i)
        _sync(device)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def measure(
    codec: Codec,
    pipeline: str,
    direction: str,
    images: torch.Tensor,
    batch: int,
    calls: int,
    options: dict,
    streams: Sequence[bytes] | None = None,
) -> Measurement:
    """Encode (uint8 ``images`` ``[N, 3, H, W]``) or decode (``streams``) batches of ``batch``.

    Latency: ``calls`` separate calls of one batch each. Throughput: one call of ``calls`` batches, which
    the codec pipelines (host work of one batch beside the device work of the next), as a service would.
    """
    codec.batch_size = batch
    items = images.unbind(0) if direction == "encode" else streams  # views: nothing is copied while timed

    def window(i: int, size: int) -> list:
        return [items[(i * batch + j) % len(items)] for j in range(size)]

    if direction == "encode":
        call = lambda i, size=batch: codec.encode_tensors(window(i, size), **options)  # noqa: E731
    else:
        call = lambda i, size=batch: codec.decode_tensors(window(i, size))  # noqa: E731
    _, latencies = time_calls(call, calls, codec.device)
    seconds, _ = time_calls(lambda i: call(i, calls * batch), 1, codec.device)
    return Measurement(
        codec.model_id, pipeline, direction, images.shape[3], images.shape[2], batch, calls * batch, seconds,
        1000 * statistics.median(latencies), 1000 * percentile(latencies, 99),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- floor


class _ByteCounter(TorchDispatchMode):
    """Bytes read and written by the compute-heavy ops (convolutions, matrix products, attention)."""

    HEAVY = ("convolution", "mm", "bmm", "addmm", "baddbmm", "scaled_dot_product")

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(word in func.__name__ for word in self.HEAVY):
            tensors = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
            outs = out if isinstance(out, (tuple, list)) else (out,)
            tensors += [o for o in outs if isinstance(o, torch.Tensor)]
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


@dataclass(frozen=True)
class PassCost:
    """What one image's pass must at least do: FLOPs, and bytes moved if every elementwise op were fused."""

    flops: float
    bytes: float


def pass_costs(model_id: str, width: int, height: int, dtype: torch.dtype) -> dict[str, PassCost]:
    """Encode and decode cost of one ``width`` x ``height`` image, counted on the meta device (no compute)."""
    model = copy.deepcopy(load_model(model_id)).to(device="meta", dtype=dtype)
    spec = model.spec
    image = torch.zeros(1, 3, height, width, device="meta", dtype=dtype)
    latents = torch.zeros(
        1, spec.latent_channels, height // spec.downsample, width // spec.downsample, device="meta", dtype=dtype
    )
    return {"encode": count_cost(model.encode, image), "decode": count_cost(model.decode, latents)}


def count_cost(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> PassCost:
    """FLOPs and heavy-op bytes of ``fn(x)``."""
    with torch.no_grad(), FlopCounterMode(display=False) as flops, _ByteCounter() as moved:
        fn(x)
    return PassCost(float(flops.get_total_flops()), float(moved.bytes))


@dataclass(frozen=True)
class Peaks:
    """Measured peak rates of the device: dense matrix FLOP/s in the engine's dtype, and copy bytes/s."""

    flops: float
    bytes: float


def measure_peaks(device: torch.device, dtype: torch.dtype) -> Peaks:
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    seconds, _ = time_calls(lambda _: a @ a, 10, device)
    flops = 10 * 2 * n**3 / seconds
    buffer = torch.empty(1 << (28 if device.type == "cuda" else 26), dtype=torch.uint8, device=device)
    target = torch.empty_like(buffer)
    seconds, _ = time_calls(lambda _: target.copy_(buffer), 10, device)
    return Peaks(flops, 10 * 2 * buffer.numel() / seconds)


def floor_images_per_s(cost: PassCost, peaks: Peaks) -> float:
    """The roofline bound: no pass can beat both its FLOPs at peak FLOP/s and its bytes at peak bandwidth."""
    return 1.0 / max(cost.flops / peaks.flops, cost.bytes / peaks.bytes)


# ------------------------------------------------------------------------------------------- kernels


def kernel_seconds(device: torch.device, latent_shape: tuple[int, int, int, int], repeats: int = 20) -> dict:
    """Seconds per call of the fused quantize+pack and unpack+dequantize kernels on ``[B, C, h, w]`` latents."""
    from latentcodec.kernels import ops as kernels

    b, c = latent_shape[:2]
    latents = torch.randn(latent_shape, device=device, dtype=torch.float16).contiguous(
        memory_format=torch.channels_last
    )
    zeros, steps = torch.zeros(b, c, device=device), torch.full((b, c), 0.5, device=device)
    planes = kernels.quantize_planes(latents, zeros, steps, -127, 127, 1)
    quantize, _ = time_calls(lambda _: kernels.quantize_planes(latents, zeros, steps, -127, 127, 1), repeats, device)
    dequantize, _ = time_calls(
        lambda _: kernels.dequantize_planes(
            planes, zeros, steps, latent_shape[1:], 1, True, dtype=torch.float16, memory_format=torch.channels_last
        ),
        repeats,
        device,
    )
    return {"quantize": quantize / repeats, "dequantize": dequantize / repeats}


# ------------------------------------------------------------------------------------------- suite


@dataclass
class Suite:
    """A whole throughput run: measurements, floors and kernel timings, all from one process."""

    device: str
    dtype: str
    peaks: Peaks
    measurements: list[Measurement]
    floors: dict[str, float]  # "model encode WxH" -> images/s
    kernels: dict[str, dict]  # "model WxH bB" -> seconds per call of each kernel

    def ratio_rows(self) -> list[dict]:
        """One row per engine measurement: images/s, latency, and its ratio to the baseline and the floor."""
        base = {(m.model, m.direction, m.width, m.height): m for m in self.measurements if m.pipeline == "baseline"}
        rows = []
        for m in self.measurements:
            if m.pipeline != "engine":
                continue
            ref = base.get((m.model, m.direction, m.width, m.height))
            floor = self.floors.get(f"{m.model} {m.direction} {m.width}x{m.height}")
            rows.append(
                {
                    "model": m.model,
                    "direction": m.direction,
                    "size": f"{m.width}x{m.height}",
                    "batch": m.batch,
                    "images_per_s": m.images_per_s,
                    "p50_ms": m.p50_ms,
                    "p99_ms": m.p99_ms,
                    "baseline_images_per_s": ref.images_per_s if ref else None,
                    "speedup": m.images_per_s / ref.images_per_s if ref else None,
                    "floor_images_per_s": floor,
                    "of_floor": m.images_per_s / floor if floor else None,
                }
            )
        return rows

    def as_dict(self) -> dict:
        return {
            "device": self.device,
            "dtype": self.dtype,
            "peaks": asdict(self.peaks),
            "measurements": [{**asdict(m), "images_per_s": m.images_per_s} for m in self.measurements],
            "floors": self.floors,
            "kernels": self.kernels,
            "table": self.ratio_rows(),
        }


def run_suite(
    models: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    device: torch.device,
    *,
    calls: int = 8,
    baseline_images: int = 8,
    compile: bool = False,
    options: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> Suite:
    """Measure engine (every batch size) and baseline encode and decode for each model and size."""
    options = options or DEFAULT_OPTIONS
    say = progress or (lambda _message: None)
    generator = torch.Generator().manual_seed(0)
    measurements, floors, kernel_times = [], {}, {}
    engine_dtype = torch.float16 if device.type == "cuda" else torch.float32
    peaks = measure_peaks(device, engine_dtype)
    for model in models:
        engine, baseline = engine_codec(model, device, compile), baseline_codec(model, device)
        for width, height in sizes:
            images = torch.randint(0, 256, (max(batches), 3, height, width), dtype=torch.uint8, generator=generator)
            for direction, cost in pass_costs(model, width, height, engine_dtype).items():
                floors[f"{model} {direction} {width}x{height}"] = floor_images_per_s(cost, peaks)
            streams = engine.encode_tensors(images, **options)
            for batch in batches:
                say(f"engine {model} {width}x{height} batch {batch}")
                for direction in ("encode", "decode"):
                    measurements.append(measure(engine, "engine", direction, images, batch, calls, options, streams))
                if device.type == "cuda":
                    spec = engine.spec
                    shape = (batch, spec.latent_channels, height // spec.downsample, width // spec.downsample)
                    kernel_times[f"{model} {width}x{height} b{batch}"] = kernel_seconds(device, shape)
            say(f"baseline {model} {width}x{height}")
            for direction in ("encode", "decode"):
                measurements.append(
                    measure(baseline, "baseline", direction, images, 1, baseline_images, options, streams)
                )
        engine.close()
        baseline.close()
    return Suite(str(device), str(engine_dtype).removeprefix("torch."), peaks, measurements, floors, kernel_times)


def format_table(suite: Suite) -> str:
    """A markdown table of the engine against the baseline and the floor."""
    lines = [
        f"device {suite.device}, engine dtype {suite.dtype}; measured peaks {suite.peaks.flops / 1e12:.1f} TFLOP/s, "
        f"{suite.peaks.bytes / 1e9:.0f} GB/s",
        "",
        "| model | pass | size | batch | images/s | p50 ms | p99 ms | baseline images/s | engine/baseline "
        "| floor images/s | of floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in suite.ratio_rows():
        lines.append(
            f"| {row['model']} | {row['direction']} | {row['size']} | {row['batch']} | {_num(row['images_per_s'])} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {_num(row['baseline_images_per_s'])} "
            f"| {_num(row['speedup'], 'x', 2)} | {_num(row['floor_images_per_s'])} | {_num(row['of_floor'], '', 2)} |"
        )
    return "\n".join(lines)


def _num(value: float | None, suffix: str = "", digits: int = 4) -> str:
    """``digits`` significant digits, no exponent."""
    return "-" if value is None else f"{float(f'{value:.{digits}g}'):g}{suffix}"


def plot(suite: Suite, path) -> None:
    """images/s against batch size per model, pass and size, with the baseline and the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = suite.ratio_rows()
    panels = sorted({(r["model"], r["direction"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (model, direction) in zip(axes[0], panels, strict=True):
        for size in sorted({r["size"] for r in rows if r["model"] == model}):
            chosen = [r for r in rows if (r["model"], r["direction"], r["size"]) == (model, direction, size)]
            line = ax.plot([r["batch"] for r in chosen], [r["images_per_s"] for r in chosen], "o-", label=size)[0]
            if chosen[0]["baseline_images_per_s"]:
                ax.axhline(chosen[0]["baseline_images_per_s"], ls="--", color=line.get_color(), lw=1)
            if chosen[0]["floor_images_per_s"]:
                ax.axhline(chosen[0]["floor_images_per_s"], ls=":", color=line.get_color(), lw=1)
        ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="images/s", title=f"{model} {direction}")
        batches = sorted({r["batch"] for r in rows})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.legend(title="engine (dashed: baseline, dotted: floor)", fontsize=7, title_fontsize=7)
    fig.suptitle(f"latentcodec throughput on {suite.device}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
