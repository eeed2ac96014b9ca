"""Finding, verifying and (optionally) downloading weight files."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from latentcodec.engine.errors import WeightsMismatchError, WeightsNotFoundError

WEIGHTS_ENV = "LATENTCODEC_WEIGHTS"
BUNDLED = Path(__file__).parent / "bundled"  # the project's own small trained weights, shipped in the package
CACHE_ENV = "LATENTCODEC_CACHE"
DOWNLOAD_ENV = "LATENTCODEC_DOWNLOAD"


@dataclass(frozen=True)
class WeightsFile:
    """One weights file of a model: where it lives upstream and what it must hash to."""

    model_id: str
    filename: str
    sha256: str
    url: str
    bundled: str = ""  # a file in the package's bundled/ folder (the project's own weights): the last place looked


def downloads_allowed() -> bool:
    """Whether weights may be fetched from the network without a source the caller named
    (``LATENTCODEC_DOWNLOAD=1``): streams never make the codec download anything otherwise."""
    return os.environ.get(DOWNLOAD_ENV) == "1"


def on_this_machine(source: str) -> bool:
    """Whether a diffusers source (a folder, or a hub id in the Hugging Face cache) is here already: checked
    without importing diffusers, so a stream naming a model that is not installed fails in microseconds."""
    if Path(source).is_dir():
        return True
    hub = (
        os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache/huggingface") / "hub"
    )
    return (Path(hub) / f"models--{source.replace('/', '--')}").is_dir()


def require_local(source: str, what: str, how: str = "name its source") -> None:
    """Raise WeightsNotFoundError unless ``source`` is on this machine (what may not be downloaded must be);
    ``how`` tells the caller how to name another source."""
    if not on_this_machine(source):
        raise WeightsNotFoundError(
            f"{what} is not on this machine ({source}); {how}, or set {DOWNLOAD_ENV}=1 to fetch it"
        )


def cache_dir() -> Path:
    """Where downloaded weights are kept (``$LATENTCODEC_CACHE`` or ``~/.cache/latentcodec``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "latentcodec")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _candidates(weights: WeightsFile) -> list[Path]:
    roots = [Path(os.environ[WEIGHTS_ENV])] if os.environ.get(WEIGHTS_ENV) else []
    roots.append(cache_dir())
    paths = [root / weights.model_id / weights.filename for root in roots]
    return [*paths, BUNDLED / weights.bundled] if weights.bundled else paths


def _download(weights: WeightsFile) -> Path:
    import torch.hub

    target = cache_dir() / weights.model_id / weights.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(weights.url, str(target), hash_prefix=weights.sha256, progress=True)
    return target


def resolve(weights: WeightsFile) -> Path:
    """Path of a verified local copy of ``weights``; downloads only when ``LATENTCODEC_DOWNLOAD=1``."""
    path = next((p for p in _candidates(weights) if p.is_file()), None)
    if path is None:
        if not weights.url:
            searched = ", ".join(str(p) for p in _candidates(weights))
            raise WeightsNotFoundError(
                f"weights for {weights.model_id!r} not found (looked in {searched}); set {WEIGHTS_ENV} to a folder "
                f"holding {weights.model_id}/{weights.filename} (they have no download address)"
            )
        if not downloads_allowed():
            searched = ", ".join(str(p) for p in _candidates(weights))
            raise WeightsNotFoundError(
                f"weights for model {weights.model_id!r} not found (looked in {searched}); set {WEIGHTS_ENV} "
                f"to a folder holding {weights.model_id}/{weights.filename}, or set {DOWNLOAD_ENV}=1 to fetch "
                f"{weights.url}"
            )
        path = _download(weights)
    actual = file_sha256(path)
    if actual != weights.sha256:
        raise WeightsMismatchError(f"{path} has sha256 {actual}, expected {weights.sha256}")
    return path
