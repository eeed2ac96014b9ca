"""Latent caches by dataset jobs on a local Ray cluster: images in, latent streams out, exactly once (a killed
worker loses nothing and writes nothing twice), resumable, and readable by the DataLoader helper."""

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray")
from shared_inputs import kodak_path  # noqa: E402

import latentcodec  # noqa: E402
from latentcodec.bindings import ray as lray  # noqa: E402
from latentcodec.bindings.cli import main  # noqa: E402
from latentcodec.bindings.latent_loader import LatentShards  # noqa: E402

OPTIONS = {"latents": True, "step": 0.1}


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Four small crops in two subfolders, and one corrupt "image"."""
    root = tmp_path_factory.mktemp("images")
    for index in range(4):
        image = Image.open(kodak_path(index + 1)).convert("RGB").crop((0, 0, 64 + 8 * index, 48))
        sub = root / ("a" if index % 2 else "b")
        sub.mkdir(exist_ok=True)
        image.save(sub / f"img{index}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


@pytest.fixture(scope="module")
def expected(folder) -> dict[str, bytes]:
    """The streams one process makes: the encoder pass, then the latent stream."""
    codec = latentcodec.Codec(latentcodec.DEFAULT_MODEL, device="cpu")
    streams = {}
    for path in sorted(folder.rglob("img*.png")):
        rgb = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
        streams[path.relative_to(folder).as_posix()] = codec.encode_latents_batch(
            codec.latents_of(rgb[None]), step=0.1
        )[0].value
    return streams


def _outputs(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).with_suffix(".png").as_posix(): p.read_bytes() for p in dest.rglob("*.lcz")}


def _worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"CodecWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_latent_cache_job_resumes_and_loads(cluster, folder, expected, tmp_path):
    report = lray.encode_dataset(folder, tmp_path / "enc", workers=1, **OPTIONS)
    assert (report.done, report.failed, report.skipped) == (4, 1, 0)
    assert _outputs(tmp_path / "enc") == expected
    assert all(latentcodec.info(data).width for data in expected.values())
    (tmp_path / "enc" / "a" / "img1.lcz").unlink()
    again = lray.encode_dataset(folder, tmp_path / "enc", **OPTIONS)
    assert (again.done, again.skipped, again.failed) == (1, 3, 1)
    assert _outputs(tmp_path / "enc") == expected
    loaded = Counter(k for keys, _ in LatentShards([tmp_path / "enc"], 2, with_keys=True) for k in keys)
    assert len(loaded) == 4 and set(loaded.values()) == {1}


def test_killed_worker_loses_nothing_and_writes_nothing_twice(cluster, folder, expected, tmp_path):
    dest, killed = tmp_path / "enc", []

    def kill_once_outputs_appear():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if list(dest.rglob("*.lcz")) and (pids := _worker_pids()):
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_once_outputs_appear)
    killer.start()
    report = lray.encode_dataset(folder, dest, workers=1, batch_size=1, **OPTIONS)
    killer.join()
    assert killed, "no worker was killed mid-run"
    assert _outputs(dest) == expected
    assert sorted(r["path"] for r in report.records) == sorted([*expected, "b/broken.png"])
    assert not list(dest.rglob("*.tmp"))


def test_cli_refuses_image_options_and_target_rmse_without_latents(tmp_path, capsys):
    assert main(["dataset", "encode", str(tmp_path), str(tmp_path / "o"), "--latents", "--denoiser", "none"]) == 2
    assert main(["dataset", "encode", str(tmp_path), str(tmp_path / "o"), "--target-rmse", "0.1"]) == 2


def test_cli_latent_cache(cluster, folder, expected, tmp_path, capsys):
    assert main(["dataset", "encode", str(folder), str(tmp_path / "o"), "--latents", "--step", "0.1"]) == 1  # broken
    assert _outputs(tmp_path / "o") == expected
    assert "4 done" in capsys.readouterr().out


def test_latent_files_in(cluster, tmp_path):
    from safetensors.torch import save_file

    source = tmp_path / "src"
    source.mkdir()
    first, second = torch.randn(32, 6, 8).clamp(-4, 4), torch.randn(1, 32, 4, 4).clamp(-4, 4)
    save_file({"latents": first}, source / "x.safetensors")
    np.save(source / "y.npy", second.numpy())
    np.save(source / "z.npy", np.zeros((3, 4, 4), np.float32))  # wrong channels: fails alone
    (source / "w.safetensors").write_bytes(b"garbage")
    report = lray.encode_dataset(source, tmp_path / "out", **OPTIONS)
    assert (report.done, report.failed) == (2, 2)
    failed = {r["path"]: r["error"] for r in report.records if r["status"] == "failed"}
    assert "channels" in failed["z.npy"] and "cannot read" in failed["w.safetensors"]
    for name, latents in (("x", first), ("y", second[0])):
        data = (tmp_path / "out" / f"{name}.lcz").read_bytes()
        assert data == latentcodec.encode_latents(latents, step=0.1)
        assert (latentcodec.decode_latents(data) - latents).abs().max() <= 0.05 + 1e-6
