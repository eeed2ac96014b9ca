"""``latentcodec dataset encode|decode SRC DEST``: dataset jobs on Ray (:mod:`latentcodec.bindings.ray`).

Exit status: 0 when every input succeeded (files of a source folder that are not inputs are listed as ignored),
1 when any failed, 2 for a usage error (inputs that would share an output: nothing written). The terminal shows
our progress bar and summary, not Ray's chatter: its loggers stay quiet below errors, and what its C++ core
writes straight to the process's stderr goes to Ray's session logs only.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from latentcodec.bindings.cli import EXIT_FAILED, EXIT_OK, UserError, add_option_arguments, options_from, progress_bar
from latentcodec.bindings.dataset_store import MANIFEST, CollidingInputsError


def add_dataset_parser(sub: argparse._SubParsersAction) -> None:
    dataset = sub.add_parser(
        "dataset", help="encode or decode a dataset on a Ray cluster (pip install latentcodec[ray])"
    )
    directions = dataset.add_subparsers(dest="direction", required=True)
    for direction in ("encode", "decode"):
        parser = directions.add_parser(direction, help=f"{direction} every input of SRC into DEST")
        parser.add_argument("source", help="folder, glob, Parquet file or folder, WebDataset .tar; any pyarrow URI")
        parser.add_argument("dest", help="output folder (local or a pyarrow URI)")
        parser.add_argument("--address", help="join this Ray cluster ('auto': the running one; default: start one)")
        parser.add_argument("--workers", type=int, default=1, help="codec actors (default 1)")
        parser.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per actor (default 0: CPU)")
        parser.add_argument("--format", choices=("files", "parquet"), default="files", help="output layout")
        if direction == "encode":
            add_option_arguments(parser)
            parser.add_argument("--latents", action="store_true", help="write latent streams of --model's space")
            parser.add_argument("--target-rmse", type=float, default=argparse.SUPPRESS, help="with --latents: "
                                "the coarsest uniform step whose RMS latent error is at most this")  # fmt: skip
        else:
            parser.add_argument("--no-denoise", action="store_true", help="skip the denoiser streams ask for")
        parser.set_defaults(run=cmd_dataset)


def cmd_dataset(args: argparse.Namespace) -> int:
    try:
        from latentcodec.bindings import ray as dataset_jobs
    except ImportError as exc:
        raise UserError(f"dataset jobs need Ray: pip install 'latentcodec[ray]' ({exc})") from None
    options = _options(args)
    with _quiet_ray(dataset_jobs, args.address), progress_bar(None, f"dataset {args.direction}") as bar:
        try:
            run = dataset_jobs.encode_dataset if args.direction == "encode" else dataset_jobs.decode_dataset
            report = run(args.source, args.dest, progress=bar, **_job_args(args), **options)
        except CollidingInputsError as exc:
            raise UserError(str(exc)) from None
    _summarize(report, args.dest)
    return EXIT_FAILED if report.failed else EXIT_OK


def _options(args: argparse.Namespace) -> dict:
    """The job's keywords: encode options (latent options with ``--latents``), or the decode's."""
    if args.direction == "decode":
        return {"denoise": not args.no_denoise}
    if not args.latents:
        if hasattr(args, "target_rmse"):
            raise UserError("--target-rmse needs --latents")
        return options_from(args).as_dict()
    from latentcodec.bindings.cli_latents import _latent_options

    _latent_options(args)  # UserError for image options or bad values, before Ray starts
    return {"latents": True, **{name: getattr(args, name) for name in _LATENT_NAMES if hasattr(args, name)}}


_LATENT_NAMES = ("mode", "quality", "step", "palette_size", "dither", "entropy", "level", "target_rmse")


def _job_args(args: argparse.Namespace) -> dict:
    names = ("format", "address", "workers", "gpus_per_worker", "model", "device", "batch_size", "tile")
    return {name: getattr(args, name) for name in names}


@contextlib.contextmanager
def _quiet_ray(dataset_jobs, address: str | None) -> Iterator[None]:
    """Ray joined (or a local cluster started, and stopped after the job) without its chatter on the terminal."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled": ours shows
    dataset_jobs.ray.data.DataContext.get_current().enable_progress_bars = False
    with _native_stderr_muted():
        started = dataset_jobs.connect(address, logging_level=logging.ERROR)
        try:
            yield
        finally:
            if started:
                dataset_jobs.ray.shutdown()


@contextlib.contextmanager
def _native_stderr_muted() -> Iterator[None]:
    """Point file descriptor 2 at the null device (Ray's C++ core writes its errors there, and also into the
    session logs) while ``sys.stderr``, everything Python writes, stays on the terminal."""
    sys.stderr.flush()
    terminal = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        with open(terminal, "w", buffering=1, closefd=False) as stream, contextlib.redirect_stderr(stream):
            yield
    finally:
        os.dup2(terminal, 2)
        os.close(terminal)


def manifest_path(dest: str) -> str:
    """Where the manifest of ``dest`` is, spelt as the user gave ``dest`` (``out/`` -> ``out/manifest.jsonl``)."""
    return f"{dest.rstrip('/')}/{MANIFEST}"


def _summarize(report, dest: str) -> None:
    print(
        f"{report.done} done, {report.skipped} already done, {report.failed} failed, {report.ignored} ignored "
        f"(manifest: {manifest_path(dest)})"
    )
    for record in report.records:
        if record["status"] in ("failed", "ignored"):
            print(f"latentcodec: {record['path']}: {record['status']}: {record['error']}")
