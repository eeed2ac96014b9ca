"""A checkout used as a working folder: Python started in the repo root puts the root on ``sys.path``, and no folder
there may then stand in for an installed distribution (``kernels``, ``tests``, ``bench``... are all names that
packages on PyPI use). Installs nothing: it checks whatever extras this environment has."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run_in_root(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_no_folder_of_the_root_is_a_regular_package():
    """Folders without ``__init__.py`` are namespace portions, which any installed package of that name outranks."""
    folders = [path.name for path in REPO.iterdir() if path.is_dir() and (path / "__init__.py").exists()]
    assert folders == [], f"{folders} would shadow installed packages of those names"


def test_installed_packages_win_over_the_roots_folders():
    installed = set(importlib.metadata.packages_distributions())
    clashes = sorted(path.name for path in REPO.iterdir() if path.is_dir() and path.name in installed)
    if not clashes:
        pytest.skip("no installed distribution shares a name with a folder of the root")
    code = "import importlib, sys\n" + "".join(
        f"print(importlib.import_module({name!r}).__spec__.origin)\n" for name in clashes
    )
    origins = _run_in_root(code).split()
    for name, origin in zip(clashes, origins, strict=True):
        assert origin != "None" and REPO / name not in Path(origin).resolve().parents, f"{name} came from {origin}"


def test_the_default_pipeline_runs_from_the_repo_root():
    """The default encode and decode (and with the shipped denoiser named), and diffusers building a model (it
    imports ``kernels`` when the Hugging Face package of that name is installed), from a ``python -c`` started in
    the checkout."""
    code = (
        "import importlib, importlib.metadata, importlib.util, latentcodec; from PIL import Image\n"
        "image = Image.new('RGB', (48, 32), (30, 140, 220))\n"
        "assert latentcodec.decode(latentcodec.encode(image, target_bpp=0.5)).size == (48, 32)\n"
        "data = latentcodec.encode(image, step=2.0, denoiser='latent-denoiser')\n"
        "assert latentcodec.info(data).denoiser == 'latent-denoiser'\n"
        "assert latentcodec.decode(data).size == (48, 32)\n"
        "if importlib.util.find_spec('diffusers'):\n"
        "    from diffusers import UNet2DModel\n"
        "    UNet2DModel(block_out_channels=(8, 8), norm_num_groups=4, down_block_types=('DownBlock2D',) * 2,"
        " up_block_types=('UpBlock2D',) * 2)\n"
        "installed = 'kernels' in importlib.metadata.packages_distributions()\n"
        "print(importlib.import_module('kernels').__spec__.origin if installed else '-')\n"
    )
    origin = _run_in_root(code).strip().splitlines()[-1]
    assert origin == "-" or REPO / "kernels" not in Path(origin).resolve().parents, f"import kernels found {origin}"
