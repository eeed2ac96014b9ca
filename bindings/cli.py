"""``latentcodec`` command line: encode, decode, info, bench, rd, throughput, serve, train-denoiser."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from latentcodec.engine.errors import LatentCodecError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """A mistake on the command line: reported in one line, no traceback."""


def _outputs(inputs: Sequence[Path], output: Path | None, suffix: str) -> list[Path]:
    """Where each input's result goes: ``-o`` names a file for one input, else a folder."""
    if output is not None and len(inputs) == 1 and not output.is_dir():
        return [output]
    folder = output
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    return [(folder or path.parent) / (path.stem + suffix) for path in inputs]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def _codec(args: argparse.Namespace):
    from latentcodec.engine.codec import Codec

    return Codec(args.model, device=args.device, batch_size=args.batch_size)


def _progress(total: int, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit="img", disable=None, file=sys.stderr)


def _report(paths: Sequence[Path], results, outputs: Sequence[Path], write) -> int:
    failures = 0
    for path, result, out in zip(paths, results, outputs, strict=True):
        if result.ok:
            try:
                write(result.value, out)
            except (OSError, ValueError) as exc:
                print(f"latentcodec: {path}: cannot write {out}: {exc}", file=sys.stderr)
                failures += 1
        else:
            print(f"latentcodec: {path}: {result.error}", file=sys.stderr)
            failures += 1
    return EXIT_FAILED if failures else EXIT_OK


def cmd_encode(args: argparse.Namespace) -> int:
    from latentcodec.engine.options import EncodeOptions

    options = dict(
        mode=args.mode,
        quality=args.quality,
        step=args.step,
        palette_size=args.palette_size,
        dither=not args.no_dither,
        scale=args.scale,
        alpha=args.alpha,
        level=args.level,
        target_bpp=args.target_bpp,
        target_psnr=args.target_psnr,
        effort=args.effort,
        denoiser=args.denoiser,
        denoiser_strength=args.denoiser_strength,
    )
    try:
        EncodeOptions(**options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    codec = _codec(args)
    outputs = _outputs(args.inputs, args.output, ".lcz")
    with _progress(len(args.inputs), "encode") as bar:
        results = codec.encode_batch([str(p) for p in args.inputs], progress=bar.update, **options)
    return _report(args.inputs, results, outputs, lambda data, out: out.write_bytes(data))


def cmd_decode(args: argparse.Namespace) -> int:
    from latentcodec.engine.api import decode_batch

    outputs = _outputs(args.inputs, args.output, "." + args.format)
    streams = [_read(p) for p in args.inputs]
    with _progress(len(streams), "decode") as bar:
        results = decode_batch(streams, progress=bar.update, denoise=not args.no_denoise)
    return _report(args.inputs, results, outputs, lambda image, out: image.save(out))


def cmd_info(args: argparse.Namespace) -> int:
    from latentcodec.engine.api import info

    status = EXIT_OK
    for path in args.inputs:
        try:
            details = info(_read(path)).as_dict()
        except LatentCodecError as exc:
            print(f"latentcodec: {path}: {exc}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        if args.json:
            print(json.dumps({"file": str(path), **details}))
        else:
            print(f"{path}:")
            for key, value in details.items():
                print(f"  {key:14} {value:.4f}" if isinstance(value, float) else f"  {key:14} {value}")
    return status


def cmd_bench(args: argparse.Namespace) -> int:
    from latentcodec.bench import roundtrip
    from latentcodec.engine.options import EncodeOptions

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    paths = roundtrip.image_files(folder)[: args.limit]
    if not paths:
        raise UserError(f"no images in {folder}")
    settings = {mode: {"mode": mode, "quality": args.quality} for mode in args.modes.split(",")}
    for options in settings.values():
        try:
            EncodeOptions(**options)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    codec = _codec(args)
    with _progress(len(paths) * len(settings), "round trip") as bar:
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

    from latentcodec.bench import throughput

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    models = [throughput.register_sd_vae_architecture() if m == "sd-vae" else m for m in args.models.split(",")]
    with tqdm(desc="throughput", unit="step", disable=None, file=sys.stderr) as bar:
        suite = throughput.run_suite(
            models, args.sizes, args.batches, device, calls=args.calls, baseline_images=args.baseline_images,
            compile=args.compile, options={**throughput.DEFAULT_OPTIONS, "denoiser": args.denoiser},
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
    from latentcodec.bench import roundtrip

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    paths = roundtrip.image_files(folder)[: None if args.all else args.limit]
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
    latent = dict(rd.LATENT_SWEEPS)
    if args.targets:
        latent[rd.RATE_CONTROL] = [{"mode": "uniform", "target_bpp": t} for t in args.targets]
    if args.effort:
        refined = [{**o, "effort": args.effort} for o in rd.LATENT_SWEEPS["latent-uniform"]]
        latent[f"latent-uniform-effort{args.effort}"] = refined
    if args.codecs:
        chosen = set(args.codecs.split(","))
        classic = {k: v for k, v in classic.items() if k in chosen}
        latent = {k: v for k, v in latent.items() if k in chosen}
    if args.plain:
        latent |= {f"{name}-plain": [{**o, "denoiser": None} for o in sweep] for name, sweep in latent.items()}
    steps = len(images) * (sum(map(len, classic.values())) + sum(map(len, latent.values())))
    with _progress(steps, "rate-distortion") as bar:
        points = rd.evaluate(images, _codec(args), classic, latent, progress=bar.update)
    curves = rd.mean_curves(points)
    table = rd.bd_table(curves)
    print(f"{len(images)} images from {folder}; mean over images per setting\n")
    for codec, curve in curves.items():
        print(f"{codec}: " + "  ".join(f"{p['bpp']:.3f} bpp {p['psnr']:.2f} dB {p['ms_ssim']:.4f}" for p in curve))
    misses = rd.rate_control_misses(points)
    if misses is not None:
        print(f"\nrate control: worst miss {100 * max(misses.values()):.1f}% of the target ({misses})")
    print()
    print(rd.format_bd_table(table))
    if args.json:
        rd.write_json(Path(args.json), points, curves, table)
    if args.plot:
        rd.plot(curves, Path(args.plot), title=f"{folder.name}, {len(images)} images")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from latentcodec.bindings.http_service import CodecServer

    server = CodecServer((args.host, args.port), _codec(args), max_latency_ms=args.max_latency_ms)
    host, port = server.server_address[:2]
    print(f"latentcodec: serving {args.model} on http://{host}:{port} (POST /encode, POST /decode, GET /health)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return EXIT_OK


def _add_image_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder")
    parser.add_argument("--limit", type=int, default=6, help="the first N images (default 6)")
    parser.add_argument("--all", action="store_true", help="every image in the folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentcodec", description="Latent-diffusion image codec.")
    parser.add_argument("--model", default="taef2", help="autoencoder id (default taef2)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser("encode", help="encode images to .lcz streams")
    enc.add_argument("inputs", nargs="+", type=Path)
    enc.add_argument("-o", "--output", type=Path, help="output file (one input) or folder")
    enc.add_argument("--mode", default="uniform", choices=["scalar8", "uniform", "palette"])
    enc.add_argument("-q", "--quality", type=float, help="0..100: sets the mode's step or palette size")
    enc.add_argument("--step", type=float, help="uniform step in latent units (overrides quality)")
    enc.add_argument("--palette-size", type=int, help="palette entries (overrides quality)")
    enc.add_argument("--no-dither", action="store_true", help="palette mode without error diffusion")
    enc.add_argument("--scale", type=float, default=1.0, help="encode at this fraction of the size (0, 1]")
    enc.add_argument("--alpha", default="keep", choices=["keep", "drop"])
    enc.add_argument("--level", type=int, default=19, help="zstd level 1..22")
    enc.add_argument("--target-bpp", type=float, help="choose step and scale to hit this many bits per pixel")
    enc.add_argument("--target-psnr", type=float, help="the smallest stream whose decoded PSNR reaches this (dB)")
    enc.add_argument("--effort", type=int, default=0, help="latent refinement steps through the decoder (uniform)")
    enc.add_argument(
        "--denoiser",
        default="auto",
        help="denoiser to run before decoding: auto (the model's at its best strength, if it helps), none, or an id",
    )
    enc.add_argument(
        "--denoiser-strength",
        type=float,
        help="with a named --denoiser: fraction of the measured noise level to denoise (default: the denoiser's)",
    )
    enc.set_defaults(run=cmd_encode)

    dec = sub.add_parser("decode", help="decode .lcz streams to images")
    dec.add_argument("inputs", nargs="+", type=Path)
    dec.add_argument("-o", "--output", type=Path, help="output file (one input) or folder")
    dec.add_argument("--format", default="png", help="file suffix when writing to a folder (default png)")
    dec.add_argument("--no-denoise", action="store_true", help="skip the denoiser a stream asks for")
    dec.set_defaults(run=cmd_decode)

    inf = sub.add_parser("info", help="print stream headers")
    inf.add_argument("inputs", nargs="+", type=Path)
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(run=cmd_info)

    ben = sub.add_parser("bench", help="round-trip a folder of images and print bpp / PSNR per mode")
    ben.add_argument("folder")
    ben.add_argument("--modes", default="scalar8,uniform,palette")
    ben.add_argument("-q", "--quality", type=float)
    ben.add_argument("--limit", type=int, help="only the first N images")
    ben.add_argument("--json", help="write per-image results here")
    ben.set_defaults(run=cmd_bench)

    rdp = sub.add_parser("rd", help="rate-distortion sweep against JPEG, WebP and AVIF, with BD-rates and plots")
    _add_image_set(rdp)
    rdp.add_argument("--targets", type=float, nargs="+", help="add a rate-controlled curve at these bpp")
    rdp.add_argument("--effort", type=int, help="add latent-uniform with this many refinement steps")
    rdp.add_argument("--plain", action="store_true", help="add each latent curve without the denoiser (-plain)")
    rdp.add_argument("--codecs", help="comma-separated subset, e.g. jpeg,webp,latent-uniform-half")
    rdp.add_argument("--json", help="write every point, the curves and the BD-rates here")
    rdp.add_argument("--plot", help="write RD curves (PNG) here")
    rdp.set_defaults(run=cmd_rd)

    srv = sub.add_parser("serve", help="HTTP service: POST /encode, POST /decode, GET /health")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--max-latency-ms", type=float, default=5.0, help="how long a request waits for a batch")
    srv.set_defaults(run=cmd_serve)

    thr = sub.add_parser("throughput", help="images/s and latency of the engine against the naive pipeline")
    thr.add_argument("--models", default="taef2,sd-vae", help="comma-separated; sd-vae = its architecture, random")
    thr.add_argument("--sizes", nargs="+", type=_size, default=[(512, 512), (768, 512)], metavar="WxH")
    thr.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    thr.add_argument("--calls", type=int, default=8, help="timed batches per engine setting")
    thr.add_argument("--baseline-images", type=int, default=8, help="timed images per baseline setting")
    thr.add_argument("--compile", action="store_true", help="run the engine's passes through torch.compile")
    thr.add_argument("--denoiser", help="streams name this denoiser, so decode runs it (auto: encode checks it)")
    thr.add_argument("--json", help="write every measurement here")
    thr.add_argument("--plot", help="write a PNG of images/s against batch size here")
    thr.set_defaults(run=cmd_throughput)

    dng = sub.add_parser("denoise-gain", help="PSNR and MS-SSIM of streams decoded with and without the denoiser")
    _add_image_set(dng)
    dng.add_argument("--json", help="write every record and the summary here")
    dng.set_defaults(run=cmd_denoise_gain)

    ent = sub.add_parser("entropy", help="bytes of zstd against other entropy coders on uniform latent symbols")
    ent.add_argument("folder")
    ent.add_argument("--dictionary-from", help="folder of images to train a zstd dictionary on (not the benchmark)")
    ent.add_argument("--limit", type=int, help="the first N images")
    ent.add_argument("--steps", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ent.set_defaults(run=cmd_entropy)

    trn = sub.add_parser("train-denoiser", help="train the latent denoiser (see engine/denoise/training.py)")
    trn.add_argument("args", nargs=argparse.REMAINDER, help="data folder, output file and training options")
    trn.set_defaults(run=cmd_train_denoiser)
    return parser


def cmd_denoise_gain(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from latentcodec.bench import denoise

    paths = _benchmark_images(args)
    with _progress(len(paths) * len(denoise.OPERATING_POINTS), "denoise-gain") as bar:
        records = denoise.run(_codec(args), paths, progress=bar.update)
    summary = denoise.summarize(records)
    print(denoise.format_table(summary))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"summary": summary, "records": [asdict(r) | {"kept": r.kept} for r in records]}, indent=1)
        )
    return EXIT_OK


def cmd_entropy(args: argparse.Namespace) -> int:
    from latentcodec.bench import entropy, roundtrip

    paths = roundtrip.image_files(Path(args.folder))[: args.limit]
    extra = roundtrip.image_files(Path(args.dictionary_from))[:12] if args.dictionary_from else []
    table = entropy.study(_codec(args), paths, extra, args.steps)
    for step, row in table.items():
        print(f"step {step}: " + ", ".join(f"{method} {size:.0f} B" for method, size in row.items()))
    return EXIT_OK


def cmd_train_denoiser(args: argparse.Namespace) -> int:
    from latentcodec.engine.denoise.training import main as train_main

    train_main(args.args)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"latentcodec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LatentCodecError as exc:
        print(f"latentcodec: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
