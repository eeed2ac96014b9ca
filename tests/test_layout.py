"""The layering the README's layout section describes: the stream format is a leaf, lab code is outside the engine."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "statement",
    [
        "import latentcodec.engine.bitstream",
        "import latentcodec; latentcodec.info",
        "from PIL import Image; import latentcodec; Image.registered_extensions()['.lcz']",
    ],
)
def test_reading_stream_headers_does_not_import_torch(statement):
    code = f"import sys; {statement}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO.parent)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_engine_never_imports_bindings_bench_or_training():
    for path in (REPO / "engine").rglob("*.py"):
        outside = {
            n
            for n in _imports(path)
            if n.startswith(("latentcodec.bindings", "latentcodec.bench", "latentcodec.training"))
        }
        assert not outside, f"{path.relative_to(REPO)} imports {outside}"


def test_engine_modules_stay_small():
    sizes = {path.relative_to(REPO): len(path.read_text().splitlines()) for path in (REPO / "engine").rglob("*.py")}
    assert max(sizes.values()) <= 250, {p: n for p, n in sizes.items() if n > 250}


def test_a_built_wheel_carries_the_projects_own_weights(tmp_path):
    """``pip install`` alone gives the whole pipeline: the trained networks are package data."""
    import zipfile

    command = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(tmp_path)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("latentcodec-*.whl"))).namelist())
    bundled = "latentcodec/engine/models/bundled/"
    shipped = {path.name for path in (REPO / "engine" / "models" / "bundled").glob("*.safetensors")}
    assert "upscaler_taef2.safetensors" in shipped and {bundled + name for name in shipped} <= names
    assert "latentcodec/engine/entropy/context_coder.py" in names  # every subpackage is listed in pyproject
    assert not any(name.startswith("latentcodec/bench/benchmarks/") for name in names)
