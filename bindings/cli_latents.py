"""``latentcodec encode --latents`` and ``decode --latents``: latent files (safetensors, npy) <-> latent streams.

A latent file holds one latent ``[C, h, w]`` (or ``[1, C, h, w]``): a ``.npy`` array, or a ``.safetensors`` file
with one tensor (or several, one of them named ``latents``); its shape is read from the file's header before any
value is. Decoded latents are written as float32, under the key ``latents`` in safetensors files; ``decode
--latents`` gives an image stream's coded latents too. Outputs and reports follow the image commands' rules.
"""

from __future__ import annotations

import argparse
import io
import math
import time
from functools import partial
from pathlib import Path

from latentcodec.bindings.cli import (
    EXIT_FAILED,
    EXIT_OK,
    UserError,
    _decode_job,
    _deliver,
    _present,
    batches,
    check_model,
    outputs_of,
)
from latentcodec.bindings.cli_outputs import LATENT_FORMATS
from latentcodec.bindings.cli_report import Report
from latentcodec.engine.errors import InvalidInputError, InvalidLatentsError, LatentCodecError
from latentcodec.engine.format import MAX_PIXELS
from latentcodec.engine.info import info

LATENT_KEY = "latents"


def latent_format(path: Path) -> str:
    """``"safetensors"`` or ``"npy"`` from ``path``'s suffix; UserError for others."""
    try:
        return LATENT_FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(LATENT_FORMATS)
        raise UserError(f"cannot tell the latent format of {path}: its suffix must be one of {known}") from None


def cmd_encode_latents(args: argparse.Namespace) -> int:
    from latentcodec.engine.latent_api import latent_streams_on
    from latentcodec.engine.latent_spaces import latent_space, space_of_model

    options = _latent_options(args)
    formats = [latent_format(path) for path in args.inputs]
    outputs = outputs_of(args, ".lcz", {".lcz"})
    check_model(args.model)
    try:
        space = latent_space(args.latent_space) if args.latent_space else space_of_model(args.model)
    except LatentCodecError as exc:
        raise UserError(str(exc)) from None
    limit = space.channels * MAX_PIXELS // space.downsample**2  # values in the largest latent of the space
    with Report(args.style, len(args.inputs), "encode") as report:
        jobs = [job for job in zip(args.inputs, formats, outputs, strict=True) if _present(job[0], report)]
        streams = latent_streams_on(args.device)
        for batch in batches(jobs, args.batch_size):
            started, read = time.perf_counter(), []
            for path, format, out in batch:
                try:
                    read.append((path, out, _read_latents(path, format, limit)))
                except LatentCodecError as exc:
                    report.rejected(path, exc)
            results = streams.encode([latents for *_, latents in read], space, options, report.advance)
            seconds = (time.perf_counter() - started) / max(1, len(batch))
            for (path, out, _), result in zip(read, results, strict=True):
                if result.ok:
                    _deliver(report, path, out, result.unwrap, info(result.value), seconds)
                else:
                    report.failed(path, result.error)
        return EXIT_OK if report.finish() else EXIT_FAILED


def cmd_decode_latents(args: argparse.Namespace) -> int:
    import torch

    from latentcodec.engine.latent_api import latent_streams_on

    outputs = outputs_of(args, "." + (args.format or "safetensors"), LATENT_FORMATS)
    formats = [latent_format(out) for out in outputs]
    with Report(args.style, len(args.inputs), "decode") as report:
        jobs = [_decode_job(*job, report) for job in zip(args.inputs, outputs, formats, strict=True)]
        jobs = [job for job in jobs if job is not None]
        streams = latent_streams_on(args.device)
        for batch in batches(jobs, args.batch_size):
            started = time.perf_counter()
            results = streams.decode([job.data for job in batch], torch.float32, report.advance)
            seconds = (time.perf_counter() - started) / len(batch)
            for job, result in zip(batch, results, strict=True):
                if not result.ok:
                    report.failed(job.path, result.error)
                    continue
                render = partial(latent_file, result.value, job.pil_format)
                _deliver(report, job.path, job.output, render, job.stream, seconds)
        return EXIT_OK if report.finish() else EXIT_FAILED


def _latent_options(args: argparse.Namespace):
    """The :class:`LatentOptions` of the flags given; UserError for image-only flags or bad values."""
    from latentcodec.engine.latent_options import LatentOptions
    from latentcodec.engine.options import EncodeOptions

    names = [*EncodeOptions.names(), "target_rmse"]
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    image_only = sorted(set(given) - set(LatentOptions.names()))
    if image_only:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in image_only)
        raise UserError(f"{flags}: image options, which latent streams do not take")
    try:
        return LatentOptions(**given)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _read_latents(path: Path, format: str, limit: int):
    """The latent tensor in ``path``; refused from its header alone when it holds more than ``limit`` values."""
    try:
        if format == "npy":
            return _read_npy(path, limit)
        return _read_safetensors(path, limit)
    except LatentCodecError:
        raise
    except Exception as exc:  # numpy and safetensors raise anything on hostile files
        raise InvalidInputError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def _check_shape(path: Path, shape: list[int], limit: int) -> None:
    if len(shape) not in (3, 4) or math.prod(shape) > limit:
        raise InvalidLatentsError(f"{path} holds a {list(shape)} array: one latent is [C, h, w] within the size limit")


def _read_npy(path: Path, limit: int):
    import numpy as np
    import torch

    array = np.load(path, mmap_mode="r", allow_pickle=False)
    _check_shape(path, list(array.shape), limit)
    return torch.from_numpy(np.array(array))


def _read_safetensors(path: Path, limit: int):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as file:
        keys = list(file.keys())
        key = keys[0] if len(keys) == 1 else LATENT_KEY if LATENT_KEY in keys else None
        if key is None:
            raise InvalidLatentsError(f"{path} holds tensors {keys}: one, or one named {LATENT_KEY!r}")
        _check_shape(path, list(file.get_slice(key).get_shape()), limit)
        return file.get_tensor(key)


def latent_file(latents, format: str) -> bytes:
    """``latents`` as the bytes of a float32 ``.safetensors`` (key ``latents``) or ``.npy`` file."""
    import numpy as np
    from safetensors.torch import save

    values = latents.detach().float().cpu().contiguous()
    if format == "safetensors":
        return save({LATENT_KEY: values})
    buffer = io.BytesIO()
    np.save(buffer, values.numpy(), allow_pickle=False)
    return buffer.getvalue()
