"""``latentcodec`` command line: encode, decode, info and serve. Its encode flags are the encode options schema.

Global flags (``--model``, ``--device``, ``--batch-size``, ``--tile``, ``--source``) go before or after the
subcommand. Everything that can be checked is checked before any work: flags and options, output paths
(:mod:`latentcodec.bindings.cli_outputs`), the model id, inputs; only then is a model loaded. Each input is
reported as it is done (:mod:`latentcodec.bindings.cli_report`).

Exit status: 0 when every item succeeded, 1 when any item failed (an unreadable, missing or corrupt input, an
output that could not be written; the others are still written) or ``serve`` cannot listen, 2 for a usage error
(bad flags or options, an unknown model, outputs that would overwrite an input or each other or cannot be
written), nothing written. Outputs are written atomically (a temporary file renamed into place), so a failure
never leaves a partial file. Commands that need no model (``info``, ``--help``) never import torch.
Benchmarks and training are lab work: ``latentcodec-lab`` (:mod:`latentcodec.bench.cli`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from PIL import Image
from tqdm import tqdm

from latentcodec.bindings.cli_outputs import ALPHA_FORMATS, IMAGE_FORMATS, LATENT_FORMATS, image_format, plan_outputs
from latentcodec.bindings.cli_report import Done, Report
from latentcodec.engine.errors import InvalidInputError, LatentCodecError
from latentcodec.engine.format import DEFAULT_MODEL
from latentcodec.engine.info import StreamInfo, info

if TYPE_CHECKING:  # type hints only: each command imports what it runs (torch only where a model loads)
    from latentcodec.bindings.http_limits import ServiceLimits
    from latentcodec.engine.codec import Codec
    from latentcodec.engine.options import EncodeOptions

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SERVICE_ROUTES = "POST /encode, POST /decode, GET /health, GET /metrics, GET /openapi.json"
T = TypeVar("T")

# the global flags: (flag, argparse keywords); every subcommand accepts them too
GLOBAL_FLAGS: tuple[tuple[str, dict], ...] = (
    ("--model", {"default": DEFAULT_MODEL, "help": "autoencoder id"}),
    ("--device", {"help": "torch device (default: cuda if available, else cpu)"}),
    ("--batch-size", {"type": int, "default": 8, "help": "images per device batch"}),
    (
        "--tile",
        {
            "type": int,
            "help": "run the autoencoder on overlapping tiles of this many pixels a side (0: never; default: above "
            "a size chosen from memory)",
        },
    ),
    (
        "--source",
        {
            "help": "where sd-vae, taesd or flux2-vae load from: a hub id or folder (default: $LATENTCODEC_SD_VAE, "
            "$LATENTCODEC_TAESD or $LATENTCODEC_FLUX2_VAE, else the model's hub id, from this machine only)"
        },
    ),
)


class UserError(Exception):
    """A mistake on the command line: reported in one line, no traceback, exit status 2."""


class CommandFailed(Exception):
    """A command that could not do its work (``serve`` cannot listen): one line, exit status 1."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none worth showing (None, False, suppressed)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose help, and its subcommands', shows the defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` into ``path`` (its folders created) through a temporary file renamed into place: never a partial
    file."""
    path.parent.mkdir(parents=True, exist_ok=True)
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


def check_model(model_id: str) -> None:
    """UserError unless ``model_id`` is a registered model."""
    from latentcodec.engine.models import available_models

    if model_id not in available_models():
        raise UserError(f"unknown model {model_id!r}; known: {', '.join(available_models())}")


def make_codec(args: argparse.Namespace) -> Codec:
    """The codec the global flags ask for; UserError for an unknown ``--model``."""
    check_model(args.model)
    return codec_of(args, args.model)


def codec_of(args: argparse.Namespace, model: str) -> Codec:
    """A codec of ``model`` on the device, batch size, tiles and source the global flags ask for."""
    from latentcodec.engine.codec import Codec

    return Codec(model, device=args.device, batch_size=args.batch_size, tile=args.tile, source=args.source)


def progress_bar(total: int | None, what: str, unit: str = "img") -> tqdm:
    return tqdm(total=total, desc=what, unit=unit, disable=None, file=sys.stderr)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`EncodeOptions` field (``--palette-size``...), absent unless given."""
    from latentcodec.engine.options import EncodeOptions, parse_bool

    for option in fields(EncodeOptions):
        meta = option.metadata
        flags = [f"--{option.name.replace('_', '-')}", *([meta["short"]] if "short" in meta else [])]
        default = getattr(option.default, "label", option.default)
        shown = {"help": meta["help"] + ("" if default is None else f" (default: {default})")}
        if meta["parse"] is parse_bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, **shown)
        else:
            kind = str if "choices" in meta else meta["parse"]
            parser.add_argument(*flags, type=kind, choices=meta.get("choices"), default=argparse.SUPPRESS, **shown)


def add_report_flags(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--quiet``: how a command reports each input (:mod:`latentcodec.bindings.cli_report`)."""
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--json", dest="style", action="store_const", const="json", help="one JSON object per input")
    style.add_argument("--quiet", dest="style", action="store_const", const="quiet", help="print nothing but errors")


def options_from(args: argparse.Namespace) -> EncodeOptions:
    """The validated :class:`EncodeOptions` of the flags given."""
    from latentcodec.engine.options import EncodeOptions

    try:
        return EncodeOptions(**{name: getattr(args, name) for name in EncodeOptions.names() if hasattr(args, name)})
    except ValueError as exc:
        raise UserError(str(exc)) from None


def outputs_of(args: argparse.Namespace, suffix: str, file_suffixes: Collection[str]) -> list[Path]:
    """Where each input's result goes (:func:`plan_outputs`); UserError for a mistake."""
    try:
        return plan_outputs(args.inputs, args.output, suffix, file_suffixes)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` in runs of ``size`` (the last shorter)."""
    return [items[start : start + size] for start in range(0, len(items), max(1, size))]


def cmd_encode(args: argparse.Namespace) -> int:
    if args.latents:
        from latentcodec.bindings.cli_latents import cmd_encode_latents

        return cmd_encode_latents(args)
    if hasattr(args, "target_rmse") or args.latent_space:
        raise UserError("--target-rmse and --latent-space code latent files: they need --latents")
    options = options_from(args)
    outputs = outputs_of(args, ".lcz", {".lcz"})
    check_model(args.model)
    with Report(args.style, len(args.inputs), "encode") as report:
        jobs = [(path, out) for path, out in zip(args.inputs, outputs, strict=True) if _present(path, report)]
        if jobs:
            _encode_all(codec_of(args, args.model), jobs, options, args.batch_size, report)
        return EXIT_OK if report.finish() else EXIT_FAILED


def _encode_all(
    codec: Codec, jobs: list[tuple[Path, Path]], options: EncodeOptions, batch_size: int, report: Report
) -> None:
    """Encode ``jobs`` (input, output) batch by batch, reporting each."""
    for batch in batches(jobs, batch_size):
        started = time.perf_counter()
        results = codec.encode_batch([str(path) for path, _ in batch], options=options, progress=report.advance)
        seconds = (time.perf_counter() - started) / len(batch)
        for (path, out), result in zip(batch, results, strict=True):
            if not result.ok:
                report.failed(path, result.error)
                continue
            _deliver(report, path, out, result.unwrap, info(result.value), seconds)


def _deliver(
    report: Report, path: Path, out: Path, render: Callable[[], bytes], stream: StreamInfo, seconds: float
) -> None:
    """Write ``render()`` to ``out`` and report ``path`` done, or failed to be written."""
    try:
        write_atomically(out, render())
    except (OSError, ValueError) as exc:
        report.failed(path, f"cannot write {out}: {exc}")
    else:
        report.done(Done.of(path, out, stream, seconds))


def _present(path: Path, report: Report) -> bool:
    """Whether ``path`` is a readable file; if not, the input is reported failed at once, before any model loads."""
    if path.is_file() and os.access(path, os.R_OK):
        return True
    report.rejected(path, f"no such file: {path}" if not path.exists() else f"cannot read {path}")
    return False


@dataclass(frozen=True)
class DecodeJob:
    """A stream to decode, read and its header parsed, and where its image goes in which format."""

    path: Path
    output: Path
    pil_format: str
    data: bytes
    stream: StreamInfo


def cmd_decode(args: argparse.Namespace) -> int:
    if args.latents:
        from latentcodec.bindings.cli_latents import cmd_decode_latents

        return cmd_decode_latents(args)
    outputs = outputs_of(args, "." + (args.format or "png"), IMAGE_FORMATS)
    formats = [_image_format(out) for out in outputs]
    with Report(args.style, len(args.inputs), "decode") as report:
        jobs = [_decode_job(*job, report) for job in zip(args.inputs, outputs, formats, strict=True)]
        jobs = [job for job in jobs if job is not None]
        for job in jobs:
            _check_alpha(job)
        for model in sorted({_model_of(job, args) for job in jobs}):
            _decode_all(args, model, [job for job in jobs if _model_of(job, args) == model], report)
        return EXIT_OK if report.finish() else EXIT_FAILED


def _model_of(job: DecodeJob, args: argparse.Namespace) -> str:
    """The model that decodes a stream: its own; a latent stream's, ``--model`` (a model of its latent space)."""
    return job.stream.model or args.model


def _image_format(path: Path) -> str:
    try:
        return image_format(path)
    except ValueError as exc:
        raise UserError(f"{exc} (or end -o with / to name a folder)") from None


def _decode_job(path: Path, output: Path, pil_format: str, report: Report) -> DecodeJob | None:
    """The input read and its header parsed, or None once its failure is reported (before any model loads)."""
    try:
        data = _read(path)
        return DecodeJob(path, output, pil_format, data, info(data))
    except LatentCodecError as exc:
        report.rejected(path, exc)
        return None


def _check_alpha(job: DecodeJob) -> None:
    """UserError if the stream has an alpha plane that its output's format cannot hold."""
    if job.stream.alpha and job.pil_format not in ALPHA_FORMATS:
        keep = ", ".join(sorted(suffix for suffix, name in IMAGE_FORMATS.items() if name in ALPHA_FORMATS))
        raise UserError(f"{job.path} has an alpha plane, which {job.pil_format} cannot hold: decode it to {keep}")


def _decode_all(args: argparse.Namespace, model: str, jobs: list[DecodeJob], report: Report) -> None:
    """Decode ``jobs`` (streams of ``model``) batch by batch, reporting each; a model that cannot load fails them."""
    try:
        codec = codec_of(args, model)
    except LatentCodecError as exc:
        for job in jobs:
            report.rejected(job.path, exc)
        return
    for batch in batches(jobs, args.batch_size):
        started = time.perf_counter()
        results = codec.decode_batch(
            [job.data for job in batch],
            progress=report.advance,
            denoise=not args.no_denoise,
            max_pixels=args.max_pixels,
        )
        seconds = (time.perf_counter() - started) / len(batch)
        for job, result in zip(batch, results, strict=True):
            if not result.ok:
                report.failed(job.path, result.error)
                continue
            render = partial(_encoded, result.value, job.pil_format)
            _deliver(report, job.path, job.output, render, job.stream, seconds)


def _encoded(image: Image.Image, format: str) -> bytes:
    """``image`` in the Pillow ``format``."""
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def cmd_info(args: argparse.Namespace) -> int:
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
    if args.ray:
        return _serve_on_ray(args)
    from latentcodec.bindings.http_server import CodecServer

    limits, address = _service_limits(args), (args.host, args.port)
    _check_address(address)
    check_model(args.model)
    codec = codec_of(args, args.model)
    try:
        server = CodecServer(address, codec, max_latency_ms=args.max_latency_ms, limits=limits)
    except OSError as exc:
        raise _cannot_listen(address, exc) from None
    host, port = server.server_address[:2]
    print(f"latentcodec: serving {args.model} on http://{host}:{port} ({SERVICE_ROUTES})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return EXIT_OK


def _serve_on_ray(args: argparse.Namespace) -> int:
    """``serve --ray``: the same app on Ray Serve (:mod:`latentcodec.bindings.ray_serve`) until SIGINT or SIGTERM."""
    limits = _service_limits(args)
    check_model(args.model)
    if args.address is None:  # a local cluster: its proxy listens here
        _check_address((args.host, args.port))
    if args.min_replicas is not None and args.max_replicas is not None and args.min_replicas > args.max_replicas:
        raise UserError(f"--min-replicas {args.min_replicas} is over --max-replicas {args.max_replicas}")
    try:
        from latentcodec.bindings import ray_serve
    except ImportError as exc:
        raise UserError(f"serve --ray needs Ray Serve: pip install 'latentcodec[serve]' ({exc})") from None
    config = ray_serve.ReplicaConfig(
        args.model, args.device, args.batch_size, args.tile, args.source, args.max_latency_ms, limits
    )
    bounds = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas}
    try:
        with ray_serve.deployed(config, args.host, args.port, address=args.address, **bounds):
            where = f"http://{args.host}:{args.port}"
            print(f"latentcodec: serving {args.model} on Ray Serve at {where} ({SERVICE_ROUTES})", flush=True)
            return 128 + _wait_for_signal()
    except ValueError as exc:  # replica bounds the cluster cannot meet
        raise UserError(str(exc)) from None


def _wait_for_signal() -> int:
    """Block until SIGINT or SIGTERM arrives; its number."""
    received: list[int] = []
    arrived = threading.Event()

    def note(number: int, _frame: object) -> None:
        received.append(number)
        arrived.set()

    previous = {number: signal.signal(number, note) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        arrived.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return received[0]


def _service_limits(args: argparse.Namespace) -> ServiceLimits:
    from latentcodec.bindings.http_limits import TOKEN_ENV, ServiceLimits

    return ServiceLimits(
        max_body=args.max_body,
        max_pixels=args.max_pixels,
        max_effort=args.max_effort,
        allow_target_psnr=args.allow_target_psnr,
        max_connections=args.max_connections,
        max_pending=args.max_pending,
        timeout_s=args.timeout,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
    )


def _check_address(address: tuple[str, int]) -> None:
    """CommandFailed if nothing can listen on ``address`` (a port in use, a host not of this machine)."""
    try:
        with socket.socket() as probe:  # as the server binds: IPv4, reusing addresses nothing listens on
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise _cannot_listen(address, exc) from None


def _cannot_listen(address: tuple[str, int], exc: OSError) -> CommandFailed:
    return CommandFailed(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}")


def _service_defaults() -> ServiceLimits:
    from latentcodec.bindings.http_limits import ServiceLimits

    return ServiceLimits()


def codec_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser with the global codec flags (``--model``, ``--device``...) and its subcommands; call
    :func:`share_global_flags` once they are all added."""
    parser = Parser(prog=prog, description=description)
    _add_global_flags(parser, shared=False)
    return parser, parser.add_subparsers(dest="command", required=True)


def share_global_flags(parser: argparse.ArgumentParser) -> None:
    """Let every subcommand (and theirs) accept the global flags too: copies that set a value only when given."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subcommand in action.choices.values():
                _add_global_flags(subcommand, shared=True)
                share_global_flags(subcommand)


def _add_global_flags(parser: argparse.ArgumentParser, shared: bool) -> None:
    """The global flags on ``parser``; ``shared`` copies default to SUPPRESS (so they never clobber a value given
    before the subcommand) and say the default in their help. A subcommand's own flag of the same name wins."""
    for flag, options in GLOBAL_FLAGS:
        if flag in parser._option_string_actions:
            continue
        if shared:
            default = options.get("default")
            help = options["help"] + ("" if default is None else f" (default: {default})")
            options = {**options, "default": argparse.SUPPRESS, "help": help}
        parser.add_argument(flag, **options)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = codec_parser("latentcodec", "Latent-diffusion image codec.")
    output_help = "output file (one input) or folder (several inputs, an existing folder, or a path ending in /)"

    enc = sub.add_parser("encode", help="encode images to .lcz streams")
    enc.add_argument("inputs", nargs="+", type=Path)
    enc.add_argument("-o", "--output", help=output_help)
    enc.add_argument("--latents", action="store_true", help="inputs are latent files (.safetensors, .npy) to code")
    enc.add_argument("--latent-space", help="the latent space of --latents inputs (default: --model's)")
    add_report_flags(enc)
    add_option_arguments(enc)
    enc.add_argument(
        "--target-rmse",
        type=float,
        default=argparse.SUPPRESS,
        help="with --latents (uniform mode): the coarsest step whose RMS latent error is at most this",
    )
    enc.set_defaults(run=cmd_encode)

    dec = sub.add_parser("decode", help="decode .lcz streams to images")
    dec.add_argument("inputs", nargs="+", type=Path)
    dec.add_argument("-o", "--output", help=output_help + "; a file's suffix names its format")
    suffixes = sorted(suffix[1:] for suffix in [*IMAGE_FORMATS, *LATENT_FORMATS])
    dec.add_argument(
        "--format", choices=suffixes, help="format of outputs named after inputs (default: png; --latents: safetensors)"
    )
    dec.add_argument("--latents", action="store_true", help="write each stream's latents (.safetensors, .npy)")
    dec.add_argument("--no-denoise", action="store_true", help="skip the denoiser a stream asks for")
    dec.add_argument("--max-pixels", type=int, help="refuse streams declaring more pixels (untrusted input)")
    add_report_flags(dec)
    dec.set_defaults(run=cmd_decode)

    inf = sub.add_parser("info", help="print stream headers")
    inf.add_argument("inputs", nargs="+", type=Path)
    inf.add_argument("--json", action="store_true", help="one JSON object per stream")
    inf.set_defaults(run=cmd_info)

    srv = sub.add_parser("serve", help="HTTP service (uvicorn): POST /encode, POST /decode, GET /health, /metrics")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--max-latency-ms", type=float, default=5.0, help="how long a request waits for a batch")
    defaults = _service_defaults()
    srv.add_argument("--max-body", type=int, default=defaults.max_body, help="bytes of a request body")
    srv.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="pixels of an image or a stream")
    srv.add_argument("--max-effort", type=int, default=defaults.max_effort, help="refinement steps an encode may ask")
    srv.add_argument("--allow-target-psnr", action="store_true", help="allow target_psnr searches (costly)")
    srv.add_argument("--max-connections", type=int, default=defaults.max_connections, help="open connections")
    srv.add_argument("--max-pending", type=int, default=defaults.max_pending, help="queued requests before 503")
    srv.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds a socket may stay silent")
    srv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $LATENTCODEC_TOKEN)")
    on_ray = srv.add_argument_group("on Ray Serve (pip install 'latentcodec[serve]')")
    on_ray.add_argument("--ray", action="store_true", help="deploy on Ray Serve: one replica per GPU (else per CPU)")
    on_ray.add_argument("--address", help="join this Ray cluster ('auto': the running one; default: start one)")
    on_ray.add_argument("--min-replicas", type=int, help="autoscaling floor (default: --max-replicas)")
    on_ray.add_argument("--max-replicas", type=int, help="autoscaling ceiling (default: the cluster's GPUs, or CPUs)")
    srv.set_defaults(run=cmd_serve)
    from latentcodec.bindings.dataset_cli import add_dataset_parser

    add_dataset_parser(sub)
    share_global_flags(parser)
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
    except (LatentCodecError, CommandFailed) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
