"""Dataset jobs on a local Ray cluster (2 CPUs, one per test session): files and Parquet, bad inputs, a killed
worker, and resuming; outputs byte-equal to one process's ``Codec.encode_batch``; inputs that would share an output
refused; the CLI's terminal free of Ray's chatter."""

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

ray = pytest.importorskip("ray")
from shared_inputs import kodak_path  # noqa: E402

from latentcodec.bindings import ray as lray  # noqa: E402

OPTIONS = {"mode": "uniform", "step": 2.0, "denoiser": None}  # workers do not see the tests' stand-in denoiser


@pytest.fixture(scope="session")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Six small crops in two subfolders, and one corrupt "image"."""
    root = tmp_path_factory.mktemp("images")
    for index in range(6):
        image = Image.open(kodak_path(index + 1)).convert("RGB").crop((0, 0, 64 + 8 * index, 48))
        sub = root / ("a" if index % 2 else "b")
        sub.mkdir(exist_ok=True)
        image.save(sub / f"img{index}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png"))


@pytest.fixture(scope="module")
def expected(folder) -> dict[str, bytes]:
    from latentcodec import DEFAULT_MODEL, Codec

    paths = _images(folder)
    results = Codec(DEFAULT_MODEL, device="cpu").encode_batch([p.read_bytes() for p in paths], **OPTIONS)
    return {p.relative_to(folder).as_posix(): r.value for p, r in zip(paths, results, strict=True) if r.ok}


def _outputs(dest: Path) -> dict[str, bytes]:
    return {p.relative_to(dest).with_suffix(".png").as_posix(): p.read_bytes() for p in dest.rglob("*.lcz")}


def test_encode_files_decode_and_resume(cluster, folder, expected, tmp_path):
    report = lray.encode_dataset(folder, tmp_path / "enc", workers=2, **OPTIONS)
    assert (report.done, report.failed, report.skipped) == (6, 1, 0)
    assert _outputs(tmp_path / "enc") == expected  # byte for byte, one output each
    failed = [r for r in report.records if r["status"] == "failed"]
    assert failed[0]["path"] == "b/broken.png" and "image" in failed[0]["error"].lower()
    manifest = (tmp_path / "enc" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 7
    assert not list((tmp_path / "enc").rglob("*.tmp"))

    decoded = lray.decode_dataset(tmp_path / "enc", tmp_path / "dec", workers=1)
    assert decoded.done == 6 and decoded.failed == 0 and decoded.ignored == 0  # the encode's manifest is no input
    encoded = {r["output"]: r for r in report.records}
    assert {r["path"]: r["bpp"] for r in decoded.records} == {k: encoded[k]["bpp"] for k in encoded if k}
    for key in expected:
        original, output = Image.open(folder / key), Image.open(tmp_path / "dec" / key)
        assert output.size == original.size

    # resume after an interrupted run: one output never written, one cut short; the rest are checked and kept
    (tmp_path / "enc" / "a" / "img1.lcz").unlink()
    cut = tmp_path / "enc" / "b" / "img2.lcz"
    cut.write_bytes(cut.read_bytes()[:-5])
    kept = (tmp_path / "enc" / "a" / "img3.lcz").stat().st_mtime_ns
    again = lray.encode_dataset(folder, tmp_path / "enc", **OPTIONS)
    assert (again.done, again.skipped, again.failed) == (2, 4, 1)
    assert _outputs(tmp_path / "enc") == expected
    assert (tmp_path / "enc" / "a" / "img3.lcz").stat().st_mtime_ns == kept


def test_parquet_output_and_parquet_input(cluster, folder, expected, tmp_path):
    report = lray.encode_dataset(folder, tmp_path / "pq", format="parquet", **OPTIONS)
    table = lray.parquet_rows(tmp_path / "pq")
    rows = {r["path"]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == 7 and report.failed == 1
    assert {k: r["stream"] for k, r in rows.items() if r["error"] is None} == expected
    assert rows["b/broken.png"]["stream"] is None and rows["b/broken.png"]["error"]

    source = tmp_path / "streams.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, source)
    decoded = lray.decode_dataset(source, tmp_path / "dec", format="parquet")
    images = {r["path"]: r for r in lray.parquet_rows(tmp_path / "dec").to_pylist()}
    assert decoded.done == 6 and decoded.failed == 1  # the broken input's empty stream fails again, as a row
    assert all(images[k]["image"].startswith(b"\x89PNG") for k in expected)


def _worker_pids() -> list[int]:
    """Processes of the dataset actors (Ray titles them after the actor class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"CodecWorker" in title:
                pids.append(int(entry.name))
    return pids


def test_killed_worker_loses_nothing_and_writes_nothing_twice(cluster, folder, expected, tmp_path):
    dest = tmp_path / "enc"
    killed = []

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


def test_cli_dataset_commands(cluster, folder, expected, tmp_path, capsys):
    from latentcodec.bindings.cli import main

    flags = ["--mode", "uniform", "--step", "2", "--denoiser", "none", "--workers", "2"]
    assert main(["dataset", "encode", str(folder), str(tmp_path / "enc"), *flags]) == 1  # one input failed
    assert "6 done, 0 already done, 1 failed" in capsys.readouterr().out
    assert _outputs(tmp_path / "enc") == expected
    assert main(["dataset", "decode", str(tmp_path / "enc"), str(tmp_path / "dec"), "--format", "parquet"]) == 0
    assert lray.parquet_rows(tmp_path / "dec").num_rows == 6


def test_inputs_from_a_glob_a_list_and_webdataset_shards(cluster, folder, expected, tmp_path):
    import tarfile

    from latentcodec.bindings.dataset_store import list_inputs

    pngs = list_inputs(str(folder / "*" / "img*.png"), {".png"})
    assert pngs.keys == sorted(k for k in expected)  # keys relative to the files' common folder
    listed = list_inputs([str(folder / "a" / "img1.png"), str(folder / "a" / "img3.png")], {".png"})
    assert listed.keys == ["img1.png", "img3.png"]

    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for key in ("a/img1.png", "b/img2.png"):
            tar.add(folder / key, arcname=f"{key.replace('/', '_')[:-4]}.png")
    report = lray.encode_dataset(str(shard), tmp_path / "enc", **OPTIONS)
    assert report.done == 2 and report.failed == 0
    assert (tmp_path / "enc" / "a_img1.lcz").read_bytes() == expected["a/img1.png"]


def _crop(index: int, size: tuple[int, int] = (40, 32)) -> bytes:
    image = Image.open(kodak_path(index)).convert("RGB").crop((0, 0, *size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_inputs_sharing_an_output_are_refused_before_any_work(cluster, tmp_path, capsys):
    from latentcodec.bindings.cli import main

    source, dest = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    (source / "a.png").write_bytes(_crop(1))
    Image.open(source / "a.png").save(source / "a.jpg")
    with pytest.raises(lray.CollidingInputsError, match=r"a\.jpg and a\.png -> a\.lcz"):
        lray.encode_dataset(source, dest, **OPTIONS)
    assert main(["dataset", "encode", str(source), str(dest), "--mode", "uniform", "--step", "2"]) == 2
    assert "a.jpg and a.png -> a.lcz" in capsys.readouterr().err
    with pytest.raises(lray.CollidingInputsError, match=r"a\.png and a\.png"):  # one row per input in Parquet too
        lray.encode_dataset([source / "a.png", source / "a.png"], dest, format="parquet", **OPTIONS)
    assert not dest.exists()


@pytest.mark.parametrize("format", ["files", "parquet"])
def test_resume_redoes_changed_inputs_and_reports_other_files(cluster, tmp_path, format):
    from latentcodec import DEFAULT_MODEL, Codec

    source, dest = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    (source / "x.png").write_bytes(_crop(1))
    (source / "y.png").write_bytes(_crop(2))
    (source / "notes.txt").write_text("not an image")
    first = lray.encode_dataset(source, dest, format=format, **OPTIONS)
    assert (first.done, first.skipped, first.failed, first.ignored) == (2, 0, 0, 1)
    records = {r["path"]: r for r in lray.read_manifest(dest)}
    assert records["notes.txt"]["status"] == "ignored" and "not an image" in records["notes.txt"]["error"]
    assert records["y.png"]["sha256"] == hashlib.sha256((source / "y.png").read_bytes()).hexdigest()

    (source / "y.png").write_bytes(_crop(3))  # same name, other picture: its output must not be credited to it
    again = lray.encode_dataset(source, dest, format=format, **OPTIONS)
    statuses = {r["path"]: r["status"] for r in again.records}
    assert statuses == {"x.png": "skipped", "y.png": "done", "notes.txt": "ignored"}
    skipped = next(r for r in again.records if r["path"] == "x.png")
    assert skipped == {**records["x.png"], "status": "skipped"}
    fresh = Codec(DEFAULT_MODEL, device="cpu").encode((source / "y.png").read_bytes(), **OPTIONS)
    if format == "files":
        assert (dest / "y.lcz").read_bytes() == fresh
    else:
        rows = lray.parquet_rows(dest).to_pylist()
        assert sorted(r["path"] for r in rows) == ["x.png", "y.png"]  # the stale row of y.png is gone
        assert next(r["stream"] for r in rows if r["path"] == "y.png") == fresh


def test_cli_shows_no_ray_chatter(tmp_path):
    source, dest = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    (source / "a.png").write_bytes(_crop(1, (16, 16)))
    (source / "readme.md").write_text("not an image")
    command = "import sys; from latentcodec.bindings.cli import main; sys.exit(main(sys.argv[1:]))"
    flags = ["--mode", "uniform", "--step", "2", "--denoiser", "none"]
    run = subprocess.run(
        [sys.executable, "-c", command, "dataset", "encode", str(source), f"{dest}/", *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines() == [
        f"1 done, 0 already done, 0 failed, 1 ignored (manifest: {dest}/manifest.jsonl)",
        "latentcodec: readme.md: ignored: not an image (.md)",
    ]
    assert not run.stderr.strip(), run.stderr  # no deprecations, token notices, core_worker lines, Ray Data bars
