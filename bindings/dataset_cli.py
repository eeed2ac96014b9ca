"""``latentcodec dataset encode|decode SRC DEST``: dataset jobs on Ray (:mod:`latentcodec.bindings.ray`)."""

from __future__ import annotations

import argparse
import logging

from latentcodec.bindings.cli import EXIT_FAILED, EXIT_OK, UserError, add_option_arguments, options_from, progress_bar


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
        else:
            parser.add_argument("--no-denoise", action="store_true", help="skip the denoiser streams ask for")
        parser.set_defaults(run=cmd_dataset)


def cmd_dataset(args: argparse.Namespace) -> int:
    try:
        from latentcodec.bindings import ray as dataset_jobs
    except ImportError as exc:
        raise UserError(f"dataset jobs need Ray: pip install 'latentcodec[ray]' ({exc})") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the progress bar below says how far it is
    dataset_jobs.ray.data.DataContext.get_current().enable_progress_bars = False
    common = {
        "format": args.format,
        "address": args.address,
        "workers": args.workers,
        "gpus_per_worker": args.gpus_per_worker,
        "model": args.model,
        "device": args.device,
        "batch_size": args.batch_size,
        "tile": args.tile,
    }
    with progress_bar(None, f"dataset {args.direction}") as bar:
        if args.direction == "encode":
            options = options_from(args).as_dict()
            report = dataset_jobs.encode_dataset(args.source, args.dest, progress=bar.update, **common, **options)
        else:
            report = dataset_jobs.decode_dataset(
                args.source, args.dest, progress=bar.update, denoise=not args.no_denoise, **common
            )
    print(
        f"{report.done} done, {report.skipped} already done, {report.failed} failed "
        f"(manifest: {args.dest}/manifest.jsonl)"
    )
    for record in report.records:
        if record["status"] == "failed":
            print(f"latentcodec: {record['path']}: {record['error']}")
    return EXIT_FAILED if report.failed else EXIT_OK
