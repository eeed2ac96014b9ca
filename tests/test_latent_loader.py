"""Latent shards for training: batches of latents from directories and tar files of latent streams, each shard
read once per epoch across DataLoader workers."""

from collections import Counter
from pathlib import Path

import pytest
import torch

import latentcodec
from latentcodec.bindings.latent_loader import LatentShards, latent_loader, shard_streams, write_tar_shard


def _latent(seed: int, h: int = 4, w: int = 4) -> torch.Tensor:
    return torch.randn(32, h, w, generator=torch.Generator().manual_seed(seed)).clamp(-3, 3)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, torch.Tensor]]:
    """Two tar shards and two directory shards of 5 streams each, with the latents each stream decodes to."""
    root, paths, expected = tmp_path_factory.mktemp("shards"), [], {}
    for s in range(4):
        streams = {f"{s}-{i}": latentcodec.encode_latents(_latent(10 * s + i), step=0.05) for i in range(5)}
        if s % 2:
            path = root / f"shard{s}"
            path.mkdir()
            for name, data in streams.items():
                (path / f"{name}.lcz").write_bytes(data)
        else:
            path = write_tar_shard(root / f"shard{s}.tar", streams)
        paths.append(path)
        expected |= {f"{path}/{name}.lcz": latentcodec.decode_latents(data) for name, data in streams.items()}
    return paths, expected


def test_one_process_yields_every_latent_once_in_batches(shards) -> None:
    paths, expected = shards
    seen = {}
    for keys, batch in LatentShards(paths, 3, with_keys=True):
        assert batch.shape[0] <= 3 and batch.shape[1:] == (32, 4, 4) and batch.dtype == torch.float32
        seen |= dict(zip(keys, batch, strict=True))
    assert seen.keys() == expected.keys()
    assert all(torch.equal(seen[key], expected[key]) for key in expected)


def test_two_workers_read_each_shard_once_per_epoch(shards) -> None:
    paths, expected = shards
    for _ in range(2):  # two epochs
        keys = Counter(k for ks, _ in latent_loader(paths, 4, "cpu", num_workers=2, with_keys=True) for k in ks)
        assert keys == Counter(expected.keys())


def test_shapes_and_exact_streams_batch_apart(tmp_path: Path) -> None:
    codes = (torch.arange(32 * 16) % 251).reshape(32, 4, 4).to(torch.uint8)
    streams = {
        "a": latentcodec.encode_latents(_latent(1), step=0.1),
        "b": latentcodec.encode_latents(_latent(2, 8, 4), step=0.1),
        "c": latentcodec.encode_latents_lossless(codes),
    }
    shard = write_tar_shard(tmp_path / "mixed.tar", streams)
    assert [key.rsplit("/", 1)[1] for key, _ in shard_streams(shard)] == ["a.lcz", "b.lcz", "c.lcz"]
    batches = list(latent_loader([shard], 8, "cpu", dtype=torch.float16))
    assert [(tuple(b.shape), b.dtype) for b in batches] == [
        ((1, 32, 4, 4), torch.float16),
        ((1, 32, 8, 4), torch.float16),
        ((1, 32, 4, 4), torch.uint8),
    ]
    assert torch.equal(batches[2][0], codes)


def test_bad_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        LatentShards([], 0)
