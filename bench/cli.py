"""``latentcodec-lab``: the lab's commands, apart from the product CLI: round-trip, rate-distortion, throughput,
denoiser-gain and entropy-coder benchmarks, and training the latent denoiser."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from latentcodec.bindings.cli import EXIT_OK, UserError, codec_parser, make_codec, progress_bar, run, share_global_flags
from latentcodec.engine.format import EntropyMethod
from latentcodec.engine.images import image_files


def add_image_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder")
    parser.add_argument("--limit", type=int, default=6, help="the first N images (default 6)")
    parser.add_argument("--all", action="store_true", help="every image in the folder")


def cmd_bench(args: argparse.Namespace) -> int:
    from latentcodec.bench import roundtrip
    from latentcodec.engine.options import EncodeOptions

    paths = _benchmark_images(args)
    settings = {mode: {"mode": mode, "quality": args.quality} for mode in args.modes.split(",")}
    for options in settings.values():
        try:
            EncodeOptions(**options)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    codec = make_codec(args)
    with progress_bar(len(paths) * len(settings), "round trip") as bar:
        rows = roundtrip.run(codec, paths, settings, progress=bar.update)
    summary = roundtrip.summarize(rows)
    print(f"{'mode':10} {'images':>6} {'bpp':>8} {'PSNR dB':>8} {'enc s':>7} {'dec s':>7}")
    for name, s in summary.items():
        print(f"{name:10} {s['images']:6d} {s['bpp']:8.4f} {s['psnr']:8.2f} {s['encode_s']:7.2f} {s['decode_s']:7.2f}")
    if args.json:
        roundtrip.write_json(Path(args.json), rows)
    return EXIT_OK


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def cmd_throughput(args: argparse.Namespace) -> int:
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return (_throughput_suite if args.suite else _throughput_paths)(args, device)


def _default_entropy() -> str:
    from latentcodec.engine.options import EncodeOptions

    return EncodeOptions().entropy.label


def _throughput_paths(args: argparse.Namespace, device) -> int:
    """The default path beside the plain one, stage by stage (bench/stages.py)."""
    from latentcodec.bench import stages

    suite_only = {"--plot": args.plot, "--denoiser": args.denoiser, "--baseline-images": args.baseline_images}
    if given := [flag for flag, value in suite_only.items() if value is not None]:
        raise UserError(f"{', '.join(given)} needs --suite")
    models = args.models.split(",") if args.models else [args.model]
    sizes, batches, calls = args.sizes or [(512, 512)], args.batches or [8], args.calls or 1
    try:
        stages.path_options(args.entropy or _default_entropy(), args.scale, args.step)
        folder = [stages.folder_images(args.images, max(batches) * calls, s) for s in sizes] if args.images else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    reports = []
    with progress_bar(None, "throughput", unit="step") as bar:
        for model in models:
            for n, size in enumerate(sizes):
                for batch in batches:
                    reports.append(
                        stages.run_paths(
                            model, size, batch, device, calls=calls, entropy=args.entropy or _default_entropy(),
                            scale=args.scale, step=args.step, compile=args.compile,
                            images=folder[n][: batch * calls] if folder else None,
                            progress=lambda message: (bar.set_postfix_str(message), bar.update()),
                        )
                    )  # fmt: skip
    print("\n\n".join(stages.format_report(report) for report in reports))
    if args.json:
        Path(args.json).write_text(json.dumps([report.as_dict() for report in reports], indent=2))
    return EXIT_OK


def _throughput_suite(args: argparse.Namespace, device) -> int:
    """The engine against the naive pipeline and the FLOP floor (bench/throughput.py)."""
    from latentcodec.bench import throughput

    if given := [flag for flag, value in (("--images", args.images), ("--step", args.step)) if value is not None]:
        raise UserError(f"{', '.join(given)} times the default and plain paths: drop --suite")
    if args.scale != 1:
        raise UserError("--scale times the default and plain paths: drop --suite")
    models = (args.models or "taef2,sd-vae").split(",")
    models = [throughput.register_sd_vae_architecture() if m == "sd-vae" else m for m in models]
    options = {**throughput.DEFAULT_OPTIONS, "denoiser": args.denoiser}
    if args.entropy:
        options["entropy"] = args.entropy
    with progress_bar(None, "throughput", unit="step") as bar:
        suite = throughput.run_suite(
            models, args.sizes or [(512, 512), (768, 512)], args.batches or [1, 8, 32], device,
            calls=args.calls or 8, baseline_images=args.baseline_images or 8, compile=args.compile, options=options,
            progress=lambda message: (bar.set_postfix_str(message), bar.update()),
        )  # fmt: skip
    print(throughput.format_table(suite))
    if args.json:
        Path(args.json).write_text(json.dumps(suite.as_dict(), indent=2))
    if args.plot:
        throughput.plot(suite, args.plot)
    return EXIT_OK


def _benchmark_images(args: argparse.Namespace) -> list[Path]:
    """The images of ``args.folder``: the first ``args.limit``, or all with ``args.all``."""
    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    paths = image_files(folder)[: None if getattr(args, "all", False) else args.limit]
    if not paths:
        raise UserError(f"no images in {folder}")
    return paths


def cmd_rd(args: argparse.Namespace) -> int:
    from latentcodec.bench import rd

    paths, folder = _benchmark_images(args), Path(args.folder)
    from PIL import Image

    images = {p.name: Image.open(p).convert("RGB") for p in paths}
    available = rd.classic_codecs()
    classic = {k: v for k, v in rd.CLASSIC_SWEEPS.items() if k in available}
    scaled = {k: v for k, v in rd.SCALED_SWEEPS.items() if k.removesuffix("-scaled") in available}
    latent = dict(rd.LATENT_SWEEPS)
    if args.targets:
        latent[rd.RATE_CONTROL] = [{"mode": "uniform", "target_bpp": t} for t in args.targets]
        for metric in args.rate_metrics or []:
            latent[f"{rd.RATE_CONTROL}-{metric}"] = [{**o, "metric": metric} for o in latent[rd.RATE_CONTROL]]
    if args.effort:
        refined = [{**o, "effort": args.effort} for o in rd.LATENT_SWEEPS["latent-uniform"]]
        latent[f"latent-uniform-effort{args.effort}"] = refined
    if args.codecs:
        chosen = set(args.codecs.split(","))
        classic = {k: v for k, v in classic.items() if k in chosen}
        latent = {k: v for k, v in latent.items() if k in chosen}
        scaled = {k: v for k, v in scaled.items() if k in chosen}
    if args.plain:
        latent |= {f"{name}-plain": [{**o, "denoiser": None} for o in sweep] for name, sweep in latent.items()}
    steps = len(images) * sum(len(sweep) for sweeps in (classic, latent, scaled) for sweep in sweeps.values())
    with progress_bar(steps, "rate-distortion") as bar:
        codec = make_codec(args) if latent else None  # the downscaled anchors and classic codecs need no model
        points = rd.evaluate(images, codec, classic, latent, progress=bar.update)
        points += rd.evaluate_scaled(images, scaled, progress=bar.update)
    if args.reuse:
        points += rd.reused_points(Path(args.reuse), images, {p.codec for p in points}, args.reuse_label)
    curves = rd.mean_curves(points)
    bpp_range = tuple(args.bd_range)
    table = rd.bd_table(curves, bpp_range=bpp_range)
    print(f"{len(images)} images from {folder}; mean over images per setting\n")
    for codec, curve in curves.items():
        print(
            f"{codec}: "
            + "  ".join(
                f"{p['bpp']:.3f} bpp {p['psnr']:.2f} dB {p['ms_ssim']:.4f} {p['ssimulacra2']:.1f}" for p in curve
            )
        )
    misses = rd.rate_control_misses(points)
    if misses is not None:
        print(f"\nrate control: worst miss {100 * max(misses.values()):.1f}% of the target ({misses})")
    print()
    print(rd.format_bd_table(table, bpp_range))
    print(rd.learned_metrics_note())
    if args.json:
        rd.write_json(Path(args.json), points, curves, table)
    if args.plot:
        rd.plot(curves, Path(args.plot), title=f"{folder.name}, {len(images)} images")
    return EXIT_OK


def cmd_denoise_gain(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from latentcodec.bench import denoise

    paths = _benchmark_images(args)
    with progress_bar(len(paths) * len(denoise.OPERATING_POINTS), "denoise-gain") as bar:
        records = denoise.run(make_codec(args), paths, progress=bar.update)
    summary = denoise.summarize(records)
    print(denoise.format_table(summary))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"summary": summary, "records": [asdict(r) | {"kept": r.kept} for r in records]}, indent=1)
        )
    return EXIT_OK


def cmd_entropy(args: argparse.Namespace) -> int:
    from latentcodec.bench import entropy

    paths, codec = _benchmark_images(args), make_codec(args)
    with progress_bar(len(paths) * len(args.targets), "rate control") as bar:
        rows = entropy.rate_control_points(codec, paths, args.targets, progress=bar.update)
    table = entropy.summary(rows)
    print_table(table, ENTROPY_COLUMNS)
    timing = entropy.timing(codec, paths[0])
    print(", ".join(f"{key} {value * 1000:.0f} ms" for key, value in timing.items()))
    for name in entropy.CODERS:
        shares = {k: timing[f"{name}_{k}"] / timing[f"codec_{k}"] for k in ("encode", "decode")}
        print(f"{name} coder share of the CPU encode {shares['encode']:.1%}, of the decode {shares['decode']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": table, "timing": timing}, indent=1))
    return EXIT_OK


def cmd_decoder_gain(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from latentcodec.bench import decoder_gain

    paths = _benchmark_images(args)
    models = tuple(args.models.split(",")) if args.models else decoder_gain.MODELS
    points = decoder_gain.DOWNSCALED if args.downscaled else decoder_gain.POINTS
    with progress_bar(len(paths) * len(points), "decoder-gain") as bar:
        records = decoder_gain.run(paths, points, progress=bar.update, device=args.device, models=models)
    summary = decoder_gain.summarize(records)
    print(decoder_gain.format_table(summary, models))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "records": [asdict(r) for r in records]}, indent=1))
    return EXIT_OK


def cmd_figure(args: argparse.Namespace) -> int:
    from PIL import Image

    from latentcodec.bench import figure
    from latentcodec.engine.codec import Codec

    codecs = {model: Codec(model, device=args.device) for model in args.models.split(",")}
    rates = figure.side_by_side(Image.open(args.image), args.bpp, codecs, tuple(args.box), Path(args.output))
    print(", ".join(f"{name} {bpp:.3f} bpp" for name, bpp in rates.items()) + f" -> {args.output}")
    return EXIT_OK


def cmd_fuzz(args: argparse.Namespace) -> int:
    from latentcodec.bench import fuzz

    with progress_bar(args.count, "fuzz", unit="stream") as bar:
        report = fuzz.run(make_codec(args), args.count, seed=args.seed, max_pixels=args.max_pixels, progress=bar.update)
    print(report)
    for failure in report.failures[:20]:
        print(f"  {failure}")
    return EXIT_OK if not report.failures else 1


def cmd_soak(args: argparse.Namespace) -> int:
    import io

    import numpy as np
    from PIL import Image

    from latentcodec.bench import soak
    from latentcodec.bindings.http_limits import ServiceLimits
    from latentcodec.bindings.http_server import CodecServer

    if args.image:
        image = Image.open(args.image).convert("RGB")
    else:
        ramp = np.linspace(0, 255, 128, dtype=np.uint8)
        image = Image.fromarray(
            np.dstack([np.tile(ramp, (128, 1)), np.tile(ramp[:, None], (1, 128)), np.full((128, 128), 90, np.uint8)])
        )
    png = io.BytesIO()
    image.save(png, format="PNG")
    server = CodecServer(("127.0.0.1", 0), make_codec(args), limits=ServiceLimits(timeout_s=args.timeout))
    server.serve_in_background()
    try:
        report = soak.run(server, png.getvalue(), clients=args.clients, requests=args.requests, bad_share=args.bad)
    finally:
        server.shutdown()
        server.server_close()
    print(report)
    return EXIT_OK if not report.good_lost else 1


Column = tuple[str, str, str]  # (header, key, format spec with its width first)
ENTROPY_COLUMNS: list[Column] = [
    ("target bpp", "target", "10.2f"),
    ("scale", "scale", "6.2f"),
    ("step", "step", "6.2f"),
    ("zstd B", "zstd", "8.0f"),
    ("context B", "context", "10.0f"),
    ("passes B", "passes", "9.0f"),
    ("order-0 B", "order0", "10.0f"),
    ("context", "saving", "8.1%"),
    ("passes", "saving_passes", "7.1%"),
    ("order-0", "saving_order0", "8.1%"),
]
SEAM_COLUMNS: list[Column] = [
    ("image", "image", "14"),
    ("whole dB", "psnr_whole", "9.3f"),
    ("tiled dB", "psnr_tiled", "9.3f"),
    ("between", "psnr_between", "8.2f"),
    ("border whole", "border_ratio_whole", "13.3f"),
    ("border tiled", "border_ratio_tiled", "13.3f"),
]
SIZE_COLUMNS: list[Column] = [
    ("size", "size", "12"),
    ("Mpx", "mpixel", "6.1f"),
    ("enc s", "encode_s", "7.1f"),
    ("s/Mpx", "encode_s_per_mpixel", "6.2f"),
    ("enc MB", "encode_peak_mb", "7.0f"),
    ("dec s", "decode_s", "7.1f"),
    ("s/Mpx", "decode_s_per_mpixel", "6.2f"),
    ("dec MB", "decode_peak_mb", "7.0f"),
]
SCALE_COLUMNS: list[Column] = [
    ("workers", "workers", "7d"),
    ("format", "format", "8"),
    ("images", "images", "6d"),
    ("wall s", "wall_s", "7.1f"),
    ("img/s", "images_per_s", "6.2f"),
    ("steady", "steady_images_per_s", "7.2f"),
    ("lost", "lost", "5d"),
    ("dup", "duplicates", "4d"),
]


def print_table(rows: list[dict], columns: list[Column]) -> None:
    """Rows as aligned columns under their headers."""
    widths = [int("".join(c for c in spec.split(".")[0] if c.isdigit())) for _, _, spec in columns]
    print(" ".join(f"{header:>{width}}" for (header, _, _), width in zip(columns, widths, strict=True)))
    for row in rows:
        print(" ".join(f"{row[key]:{spec}}" for _, key, spec in columns))


def cmd_tiles(args: argparse.Namespace) -> int:
    from latentcodec.bench import tiles

    report: dict = {}
    if args.seams:
        paths = _benchmark_images(argparse.Namespace(folder=args.seams, limit=args.limit, all=args.all))
        with progress_bar(len(paths), "seams") as bar:
            report["seams"] = rows = tiles.seams(paths, args.tile, progress=bar.update)
        print_table(rows, SEAM_COLUMNS)
    if args.photo:
        with progress_bar(len(args.sizes), "sizes") as bar:
            report["sizes"] = rows = tiles.memory_table(Path(args.photo), args.sizes, progress=bar.update)
        print_table(rows, SIZE_COLUMNS)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return EXIT_OK


def cmd_scale(args: argparse.Namespace) -> int:
    from latentcodec.bench import scale

    options = {"mode": args.mode, "step": args.step, "denoiser": None}
    rows = scale.run(Path(args.folder), args.workers, args.limit, batch_size=args.batch_size, **options)
    print_table(rows, SCALE_COLUMNS)
    files = {r["workers"]: r for r in rows if r["format"] == "files"}
    low, high = min(files), max(files)
    print(
        f"{high} workers / {low}: {files[high]['images_per_s'] / files[low]['images_per_s']:.2f}x wall, "
        f"{files[high]['steady_images_per_s'] / max(files[low]['steady_images_per_s'], 1e-9):.2f}x steady; "
        f"lost {sum(r['lost'] for r in rows)}, duplicates {sum(r['duplicates'] for r in rows)}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return EXIT_OK


def cmd_latents(args: argparse.Namespace) -> int:
    from latentcodec.bench import latents

    paths = [
        p for folder in args.folders for p in _benchmark_images(argparse.Namespace(folder=folder, limit=args.limit))
    ]
    rows = latents.run(paths, args.size, args.steps, args.entropies.split(","))
    print(
        f"{len(paths)} latents of {args.size}x{args.size} images (TAEF2, flux2 space); PSNR against the float latents' "
        "decode; src loss: dB of PSNR against the source lost to the float latents'"
    )
    print_table(rows, latents.COLUMNS)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from importlib import import_module

    import_module(f"latentcodec.training.{args.network}").main(args.args)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser, sub = codec_parser("latentcodec-lab", "Benchmarks and training for the latent codec.")

    ben = sub.add_parser("bench", help="round-trip a folder of images and print bpp / PSNR per mode")
    ben.add_argument("folder")
    ben.add_argument("--modes", default="scalar8,uniform,palette")
    ben.add_argument("-q", "--quality", type=float)
    ben.add_argument("--limit", type=int, help="only the first N images")
    ben.add_argument("--json", help="write per-image results here")
    ben.set_defaults(run=cmd_bench)

    rdp = sub.add_parser(
        "rd",
        help="rate-distortion sweep against JPEG, WebP, AVIF, JPEG XL and downscaled WebP and AVIF (webp-scaled, "
        "avif-scaled), with BD-rates and plots",
    )
    add_image_set(rdp)
    rdp.add_argument("--targets", type=float, nargs="+", help="add a rate-controlled curve at these bpp")
    rdp.add_argument("--bd-range", type=float, nargs=2, default=[0.1, 0.5], help="bpp range of the BD-rates")
    rdp.add_argument(
        "--rate-metrics", nargs="+", choices=["ms-ssim"], help="with --targets: also rate-controlled curves by these"
    )
    rdp.add_argument("--effort", type=int, help="add latent-uniform with this many refinement steps")
    rdp.add_argument("--plain", action="store_true", help="add each latent curve without the denoiser (-plain)")
    rdp.add_argument("--codecs", help="comma-separated subset, e.g. jpeg,webp,webp-scaled,latent-uniform-half")
    rdp.add_argument("--reuse", help="add the points of an earlier run's --json (codecs measured now: renamed)")
    rdp.add_argument("--reuse-label", default="earlier", help="suffix of re-measured codecs' earlier curves")
    rdp.add_argument("--json", help="write every point, the curves and the BD-rates here")
    rdp.add_argument("--plot", help="write RD curves (PNG) here")
    rdp.set_defaults(run=cmd_rd)

    thr = sub.add_parser(
        "throughput",
        help="the default path beside the plain one, stage by stage (host CPU ms per image); --suite: the engine "
        "against the naive pipeline",
    )
    thr.add_argument("--suite", action="store_true", help="images/s and latency of the engine against the naive "
                     "pipeline and the FLOP floor, instead of the default and plain paths")  # fmt: skip
    thr.add_argument("--models", help="comma-separated (default: --model; with --suite taef2,sd-vae, sd-vae = its "
                     "architecture, random)")  # fmt: skip
    thr.add_argument(
        "--sizes", nargs="+", type=_size, metavar="WxH", help="(default 512x512; --suite: 512x512 768x512)"
    )
    thr.add_argument("--batches", nargs="+", type=int, help="(default 8; --suite: 1 8 32)")
    thr.add_argument(
        "--calls", type=int, help="timed batches per path (default 1), per engine setting with --suite (8)"
    )
    thr.add_argument(
        "--entropy",
        choices=[m.label for m in EntropyMethod],
        help="the default path's entropy coder (default: the codec's); --suite: the engine's (zstd)",
    )
    thr.add_argument("--scale", type=float, default=1.0, help="both paths encode at this scale (below 1: upscaler)")
    thr.add_argument("--step", type=float, help="both paths' uniform step (default: the codec's)")
    thr.add_argument("--images", help="a folder of photos, cropped and resized to each size (default: synthetic)")
    thr.add_argument("--compile", action="store_true", help="run the engine's passes through torch.compile")
    thr.add_argument("--baseline-images", type=int, help="--suite: timed images per baseline setting (default 8)")
    thr.add_argument("--denoiser", help="--suite: streams name this denoiser, so decode runs it")
    thr.add_argument("--json", help="write every measurement here")
    thr.add_argument("--plot", help="--suite: write a PNG of images/s against batch size here")
    thr.set_defaults(run=cmd_throughput)

    gains = (
        ("denoise-gain", "PSNR and MS-SSIM of streams decoded with and without the denoiser", cmd_denoise_gain),
        ("decoder-gain", "the same streams decoded by taef2 and by the trained taef2-q2", cmd_decoder_gain),
    )
    for name, what, command in gains:
        gain = sub.add_parser(name, help=what)
        add_image_set(gain)
        gain.add_argument("--json", help="write every record and the summary here")
        gain.set_defaults(run=command)
        if name == "decoder-gain":
            gain.add_argument("--models", help="the two models, A,B (default: taef2,taef2-q2)")
            gain.add_argument("--downscaled", action="store_true", help="only the downscaled points (the resizers)")

    ent = sub.add_parser("entropy", help="zstd against the context coders at the points rate control picks")
    add_image_set(ent)
    ent.add_argument("--targets", type=float, nargs="+", default=[0.1, 0.2, 0.3], help="target bpp")
    ent.add_argument("--json", help="write every row, the summary and the timing here")
    ent.set_defaults(run=cmd_entropy)

    trained = (
        ("denoiser", "denoiser", "the latent denoiser"),
        ("decoder", "decoder", "taef2-q's decoder"),
        ("entropy", "entropy_model", "the context entropy model"),
        ("passes", "passes_model", "the passes entropy model"),
        ("upscaler", "upscaler", "taef2-q4's upscaler or (--kind synthesis) a synthesis stage"),
    )
    for name, network, what in trained:
        trn = sub.add_parser(f"train-{name}", help=f"train {what} (see training/{network}.py)")
        trn.add_argument("args", nargs=argparse.REMAINDER, help="outputs, data and training options (--help)")
        trn.set_defaults(run=cmd_train, network=network)

    fig = sub.add_parser("figure", help="side-by-side crops at a matched rate (latent models, WebP, AVIF, JPEG XL)")
    fig.add_argument("image")
    fig.add_argument("output", help="PNG to write")
    fig.add_argument("--bpp", type=float, default=0.12)
    fig.add_argument("--box", type=int, nargs=4, default=[0, 0, 256, 256], metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"))
    fig.add_argument("--models", default="taef2,taef2-q", help="comma-separated latentcodec models")
    fig.set_defaults(run=cmd_figure)

    til = sub.add_parser("tiles", help="peak memory and time per image size (CLI), and seams of tiled decoding")
    til.add_argument("--photo", help="resize this photo to each size and round-trip it through the CLI")
    til.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 16, 24, 64], help="Mpixel")
    til.add_argument("--seams", metavar="FOLDER", help="decode these images' streams whole and tiled")
    til.add_argument("--tile", type=int, default=256, help="tile side in pixels for --seams (default 256)")
    til.add_argument("--limit", type=int, default=6, help="the first N images of --seams (default 6)")
    til.add_argument("--all", action="store_true", help="every image of --seams")
    til.add_argument("--json", help="write the tables here")
    til.set_defaults(run=cmd_tiles)

    scl = sub.add_parser("scale", help="dataset encode images/s on the local Ray cluster with 1 and 2 workers")
    scl.add_argument("folder")
    scl.add_argument("--limit", type=int, help="the first N images")
    scl.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    scl.add_argument("--mode", default="uniform")
    scl.add_argument("--step", type=float, default=2.0)
    scl.add_argument("--json", help="write the rows here")
    scl.set_defaults(run=cmd_scale)

    lat = sub.add_parser("latents", help="latent caches: fp16, bf16, uint8 affine, zstd and latent streams")
    lat.add_argument("folders", nargs="+", help="image folders (e.g. ../shared/data/photos ../shared/data/kodak)")
    lat.add_argument("--limit", type=int, default=3, help="the first N images of each folder (default 3)")
    lat.add_argument("--size", type=int, default=512, help="center-crop and resize to SIZE x SIZE (default 512)")
    lat.add_argument("--steps", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2], help="uniform steps")
    lat.add_argument("--entropies", default="passes,context", help="entropy coders of our modes (comma-separated)")
    lat.add_argument("--json", help="write the rows here")
    lat.set_defaults(run=cmd_latents)

    fzz = sub.add_parser("fuzz", help="decode mutated streams: each must decode or raise a library error")
    fzz.add_argument("--count", type=int, default=10000)
    fzz.add_argument("--seed", type=int, default=0)
    fzz.add_argument("--max-pixels", type=int, default=1 << 16, help="decode limit per stream")
    fzz.set_defaults(run=cmd_fuzz)

    sok = sub.add_parser("soak", help="concurrent HTTP clients with malformed and stalled requests mixed in")
    sok.add_argument("--image", help="the image good requests encode (default: a 128x128 gradient)")
    sok.add_argument("--clients", type=int, default=8)
    sok.add_argument("--requests", type=int, default=50, help="per client")
    sok.add_argument("--bad", type=float, default=0.1, help="share of malformed or stalled requests")
    sok.add_argument("--timeout", type=float, default=2.0, help="the server's idle timeout, seconds")
    sok.set_defaults(run=cmd_soak)
    share_global_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
