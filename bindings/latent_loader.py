"""Latent shards for PyTorch training: an ``IterableDataset`` that streams shards of latent streams and yields
batches of latent tensors, and a loader that runs it in DataLoader workers and hands batches over on a device.

A shard is a directory of ``.lcz`` latent streams (subfolders too: a dataset job's output) or a tar file of them
(WebDataset-style). Each DataLoader worker reads its own shards (``shards[worker::workers]``), so each shard is
read exactly once per epoch. Streams decode with :func:`latentcodec.decode_latents_batch` (exact ``LCZI`` streams
with :func:`decode_latents_lossless`); a batch holds consecutive latents of one shape and dtype, so a change of
shape closes a batch early.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from latentcodec.engine.latent_api import decode_latents_batch
from latentcodec.engine.latent_lossless import decode_latents_lossless, is_lossless

Batch = torch.Tensor | tuple[list[str], torch.Tensor]
SUFFIX = ".lcz"


def shard_streams(shard: str | Path) -> Iterator[tuple[str, bytes]]:
    """``(key, stream)`` of each ``.lcz`` in a shard (a directory and its subfolders, sorted; or a tar file, in its
    order)."""
    path = Path(shard)
    if path.is_dir():
        for member in sorted(path.rglob(f"*{SUFFIX}")):
            yield f"{path}/{member.relative_to(path).as_posix()}", member.read_bytes()
        return
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(SUFFIX):
                yield f"{path}/{member.name}", tar.extractfile(member).read()


def write_tar_shard(path: str | Path, streams: dict[str, bytes]) -> Path:
    """A tar shard of ``{name: stream}`` (``.lcz`` added to names without it)."""
    path = Path(path)
    with tarfile.open(path, "w") as tar:
        for name, data in streams.items():
            info = tarfile.TarInfo(name if name.endswith(SUFFIX) else name + SUFFIX)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class LatentShards(IterableDataset):
    """Batches ``[B, C, h, w]`` of the latents in ``shards`` (``with_keys``: ``(keys, batch)``), float streams as
    ``dtype``; ``device`` where they are decoded and yielded (keep the CPU in DataLoader workers)."""

    def __init__(
        self,
        shards: Sequence[str | Path],
        batch_size: int = 8,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        with_keys: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.shards, self.batch_size, self.device = [Path(s) for s in shards], batch_size, device
        self.dtype, self.with_keys = dtype, with_keys

    def my_shards(self) -> list[Path]:
        """This worker's shards: every ``workers``-th, from its id."""
        worker = get_worker_info()
        return self.shards if worker is None else self.shards[worker.id :: worker.num_workers]

    def __iter__(self) -> Iterator[Batch]:
        keys: list[str] = []
        latents: list[torch.Tensor] = []
        for key, tensor in self._latents():
            if latents and (tensor.shape != latents[0].shape or tensor.dtype != latents[0].dtype):
                yield self._batch(keys, latents)
                keys, latents = [], []
            keys.append(key)
            latents.append(tensor)
            if len(latents) == self.batch_size:
                yield self._batch(keys, latents)
                keys, latents = [], []
        if latents:
            yield self._batch(keys, latents)

    def _latents(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(key, latents)`` of this worker's streams, decoded ``batch_size`` at a time."""
        chunk: list[tuple[str, bytes]] = []
        for shard in self.my_shards():
            for item in shard_streams(shard):
                chunk.append(item)
                if len(chunk) == self.batch_size:
                    yield from zip([k for k, _ in chunk], self._decode([d for _, d in chunk]), strict=True)
                    chunk = []
        if chunk:
            yield from zip([k for k, _ in chunk], self._decode([d for _, d in chunk]), strict=True)

    def _decode(self, streams: list[bytes]) -> list[torch.Tensor]:
        exact = {
            i: decode_latents_lossless(data).to(self.device) for i, data in enumerate(streams) if is_lossless(data)
        }
        rest = [data for i, data in enumerate(streams) if i not in exact]
        decoded = iter(r.unwrap() for r in decode_latents_batch(rest, device=self.device, dtype=self.dtype))
        return [exact[i] if i in exact else next(decoded) for i in range(len(streams))]

    def _batch(self, keys: list[str], latents: list[torch.Tensor]) -> Batch:
        batch = torch.stack(latents)
        return (list(keys), batch) if self.with_keys else batch


def latent_loader(
    shards: Sequence[str | Path],
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    *,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    with_keys: bool = False,
) -> Iterator[Batch]:
    """Batches of ``shards``' latents on ``device``, decoded in ``num_workers`` DataLoader worker processes (spawned:
    no fork of the codec's threads) and moved to ``device`` here."""
    dataset = LatentShards(shards, batch_size, dtype=dtype, with_keys=with_keys)
    context = "spawn" if num_workers else None
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, multiprocessing_context=context)
    for item in loader:
        if with_keys:
            yield item[0], item[1].to(device, non_blocking=True)
        else:
            yield item.to(device, non_blocking=True)
