"""``latentcodec`` command line: encode, decode, info and serve. Its encode flags are the encode options schema.

Exit status: 0 when every item succeeded, 1 when any item failed (an unreadable, missing or corrupt input, an
output that could not be written; the others are still written), 2 for a usage error (bad flags or options,
outputs that would overwrite an input or each other), nothing written. Outputs are written atomically
(a temporary file renamed into place), so a failure never leaves a partial file.
Benchmarks and training are lab work: ``latentcodec-lab`` (:mod:`latentcodec.bench.cli`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from latentcodec.engine.errors import InvalidInputError, LatentCodecError
from latentcodec.engine.format import DEFAULT_MODEL

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """A mistake on the command line: reported in one line, no traceback."""


def _outputs(inputs: Sequence[Path], output: Path | None, suffix: str) -> list[Path]:
    """Where each input's result goes: ``-o`` names a file for one input, else a folder. Refuses outputs that
    would overwrite an input or each other."""
    if output is not None and len(inputs) == 1 and not output.is_dir():
        outputs = [output]
    elif output is not None and output.exists() and not output.is_dir():
        raise UserError(f"{output} is a file: with several inputs, -o names a folder")
    else:
        outputs = [(output or path.parent) / (path.stem + suffix) for path in inputs]
    sources = {path.resolve() for path in inputs}
    seen: dict[Path, Path] = {}
    for path, out in zip(inputs, outputs, strict=True):
        target = out.resolve()
        if target in sources:
            raise UserError(f"refusing to overwrite the input {out}")
        if target in seen:
            raise UserError(f"{seen[target]} and {path} would both be written to {out}")
        seen[target] = path
    if output is not None and len(inputs) > 1:
        output.mkdir(parents=True, exist_ok=True)
    return outputs


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file renamed into place: never a partial file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def make_codec(args: argparse.Namespace):
    """The codec the global flags ask for."""
    from latentcodec.engine.codec import Codec

    return Codec(args.model, device=args.device, batch_size=args.batch_size, tile=args.tile)


def progress_bar(total: int | None, what: str, unit: str = "img") -> tqdm:
    return tqdm(total=total, desc=what, unit=unit, disable=None, file=sys.stderr)


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


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`EncodeOptions` field (``--palette-size``...), absent unless given."""
    from latentcodec.engine.options import EncodeOptions, parse_bool

    for option in fields(EncodeOptions):
        meta = option.metadata
        flags = [f"--{option.name.replace('_', '-')}", *([meta["short"]] if "short" in meta else [])]
        if meta["parse"] is parse_bool:
            parser.add_argument(
                *flags, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=meta["help"]
            )
        else:
            kind = str if "choices" in meta else meta["parse"]
            parser.add_argument(
                *flags, type=kind, choices=meta.get("choices"), default=argparse.SUPPRESS, help=meta["help"]
            )


def options_from(args: argparse.Namespace):
    """The validated :class:`EncodeOptions` of the flags given."""
    from latentcodec.engine.options import EncodeOptions

    try:
        return EncodeOptions(**{name: getattr(args, name) for name in EncodeOptions.names() if hasattr(args, name)})
    except ValueError as exc:
        raise UserError(str(exc)) from None


def cmd_encode(args: argparse.Namespace) -> int:
    options = options_from(args)
    codec = make_codec(args)
    outputs = _outputs(args.inputs, args.output, ".lcz")
    with progress_bar(len(args.inputs), "encode") as bar:
        results = codec.encode_batch([str(p) for p in args.inputs], progress=bar.update, options=options)
    return _report(args.inputs, results, outputs, lambda data, out: write_atomically(out, data))


def cmd_decode(args: argparse.Namespace) -> int:
    from latentcodec.engine.api import decode_batch
    from latentcodec.engine.results import Result

    outputs = _outputs(args.inputs, args.output, "." + args.format)
    read = [_attempt_read(p) for p in args.inputs]
    readable = [i for i, r in enumerate(read) if r.ok]
    with progress_bar(len(readable), "decode") as bar:
        decoded = decode_batch(
            [read[i].value for i in readable],
            progress=bar.update,
            denoise=not args.no_denoise,
            max_pixels=args.max_pixels,
        )
    results: list[Result] = list(read)
    for index, result in zip(readable, decoded, strict=True):
        results[index] = result
    return _report(args.inputs, results, outputs, lambda image, out: write_atomically(out, _encoded(image, out)))


def _attempt_read(path: Path):
    from latentcodec.engine.results import Result

    try:
        return Result(_read(path))
    except LatentCodecError as exc:
        return Result(error=exc)


def _encoded(image, path: Path) -> bytes:
    """``image`` in the format its path's suffix names."""
    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions().get(path.suffix.lower()) or "PNG")
    return buffer.getvalue()


def cmd_info(args: argparse.Namespace) -> int:
    from latentcodec.engine.info import info

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


def cmd_serve(args: argparse.Namespace) -> int:
    from latentcodec.bindings.http_service import TOKEN_ENV, CodecServer, ServiceLimits

    limits = ServiceLimits(
        max_body=args.max_body,
        max_pixels=args.max_pixels,
        max_effort=args.max_effort,
        allow_target_psnr=args.allow_target_psnr,
        max_connections=args.max_connections,
        max_pending=args.max_pending,
        timeout_s=args.timeout,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
    )
    server = CodecServer((args.host, args.port), make_codec(args), max_latency_ms=args.max_latency_ms, limits=limits)
    host, port = server.server_address[:2]
    print(f"latentcodec: serving {args.model} on http://{host}:{port} (POST /encode, POST /decode, GET /health)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return EXIT_OK


def _service_defaults():
    from latentcodec.bindings.http_service import ServiceLimits

    return ServiceLimits()


def codec_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser with the global codec flags (``--model``, ``--device``, ``--batch-size``) and its subcommands."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"autoencoder id (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        help="run the autoencoder on overlapping tiles of this many pixels a side (0: never; default: above a "
        "size chosen from memory)",
    )
    return parser, parser.add_subparsers(dest="command", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = codec_parser("latentcodec", "Latent-diffusion image codec.")

    enc = sub.add_parser("encode", help="encode images to .lcz streams")
    enc.add_argument("inputs", nargs="+", type=Path)
    enc.add_argument("-o", "--output", type=Path, help="output file (one input) or folder")
    add_option_arguments(enc)
    enc.set_defaults(run=cmd_encode)

    dec = sub.add_parser("decode", help="decode .lcz streams to images")
    dec.add_argument("inputs", nargs="+", type=Path)
    dec.add_argument("-o", "--output", type=Path, help="output file (one input) or folder")
    dec.add_argument("--format", default="png", help="file suffix when writing to a folder (default png)")
    dec.add_argument("--no-denoise", action="store_true", help="skip the denoiser a stream asks for")
    dec.add_argument("--max-pixels", type=int, help="refuse streams declaring more pixels (untrusted input)")
    dec.set_defaults(run=cmd_decode)

    inf = sub.add_parser("info", help="print stream headers")
    inf.add_argument("inputs", nargs="+", type=Path)
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(run=cmd_info)

    srv = sub.add_parser("serve", help="HTTP service: POST /encode, POST /decode, GET /health")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--max-latency-ms", type=float, default=5.0, help="how long a request waits for a batch")
    defaults = _service_defaults()
    srv.add_argument("--max-body", type=int, default=defaults.max_body, help="bytes of a request body")
    srv.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="pixels of a stream to decode")
    srv.add_argument("--max-effort", type=int, default=defaults.max_effort, help="refinement steps an encode may ask")
    srv.add_argument("--allow-target-psnr", action="store_true", help="allow target_psnr searches (costly)")
    srv.add_argument("--max-connections", type=int, default=defaults.max_connections, help="open connections")
    srv.add_argument("--max-pending", type=int, default=defaults.max_pending, help="queued requests before 503")
    srv.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds a socket may stay idle")
    srv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $LATENTCODEC_TOKEN)")
    srv.set_defaults(run=cmd_serve)
    from latentcodec.bindings.dataset_cli import add_dataset_parser

    add_dataset_parser(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run its command; mistakes and codec errors are one line on stderr."""
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except UserError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LatentCodecError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
