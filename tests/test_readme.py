"""Every shell and Python example of README.md, run as a user would type it (issue 29).

The README stays the single source: this module reads it at test time, takes each fenced ```bash and ```python
block (the usage examples; the Layout tree, tables and the bitstream layout are not fenced as either) and runs it
in a fresh temporary folder that looks like the README's world: the folder is "the repo root", with
``../shared/models`` (a link to the real weights) and ``../shared/data/kodak`` (64x48 crops) beside it, plus the
inputs the examples name (``photo.png``, ``photos/``). Python blocks run in a subprocess (``sys.executable -c``),
shell blocks with ``bash -e`` and the venv's ``bin`` first on ``PATH``, both on the CPU.

What the test changes in a block is listed in SUBSTITUTIONS (README text -> test text, with the reason); what a
Python block uses without defining is in PRELUDE; what the README says a block prints or produces is checked by
EXPECTATIONS. Each entry must still match the README (``test_tables_match_the_readme``), so a README edit that
makes one stale fails loudly instead of silently testing less. An example that is wrong against the code is fixed
in the README, never papered over here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from shared_inputs import SHARED, kodak_path

README = Path(__file__).resolve().parents[1] / "README.md"
SIZE = (64, 48)  # every image the examples read: small, so each block runs in seconds on 2 CPU cores
TIMEOUT_S = 900  # per block; a block that hangs (a server that never answers) fails instead of stalling the run
SLOW = ("Scale out (Ray)",)  # sections whose blocks start local Ray clusters (about 30 s each and more)


@dataclass(frozen=True)
class Block:
    section: str  # the nearest heading above the block
    index: int  # its place among the section's runnable blocks
    language: str  # "bash" or "python"
    line: int  # README line of its first line of code
    text: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{slug}-{self.index}-{self.language}"


def readme_blocks(text: str) -> list[Block]:
    """The fenced ```bash and ```python blocks of ``text``, in order."""
    blocks: list[Block] = []
    section, fence, start, body = "", None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if fence is None:
            if line.startswith("```"):
                fence, start, body = line[3:].strip(), number + 1, []
            elif re.match(r"#{1,6} ", line):
                section = line.lstrip("#").strip()
            continue
        if line.strip() != "```":
            body.append(line)
            continue
        if fence in ("bash", "python"):
            index = sum(b.section == section for b in blocks)
            blocks.append(Block(section, index, fence, start, "\n".join(body) + "\n"))
        fence = None
    return blocks


@dataclass(frozen=True)
class Substitution:
    readme: str  # README text (a regular expression when ``regex``)
    test: str  # what the test runs instead
    reason: str
    regex: bool = False

    def apply(self, text: str) -> str:
        if self.regex:
            return re.sub(self.readme, self.test, text, flags=re.MULTILINE)
        return text.replace(self.readme, self.test)

    def matches(self, text: str) -> bool:
        return bool(re.search(self.readme, text, flags=re.MULTILINE)) if self.regex else self.readme in text


SKIPPED = ": skipped by tests/test_readme.py"
SUBSTITUTIONS = (
    Substitution(
        r"^python3 -m venv .*$",
        SKIPPED,
        "installing is what CI itself does before the tests; the test runs in that environment (sys.executable's)",
        regex=True,
    ),
    Substitution(
        r"^latentcodec [^\n]*s3://[^\n]*\\\n[^\n]*$",
        SKIPPED,
        "needs an S3 bucket, a running Ray cluster (--address auto) and GPUs; the two lines above it run locally",
        regex=True,
    ),
    Substitution("--device cuda", "--device cpu", "the tests run on the CPU (no GPU in CI)"),
    Substitution('device="cuda"', 'device="cpu"', "the tests run on the CPU (no GPU in CI)"),
    Substitution(
        "compile=True", "compile=False", "torch.compile takes minutes per pass on 2 CPU cores; it changes no stream"
    ),
    Substitution("--port 8080", "--port $PORT", "a free loopback port, so parallel runs never collide"),
    Substitution("localhost:8080", "localhost:$PORT", "the same free port"),
    Substitution(
        r"^(latentcodec [^\n]*\bserve\b[^\n]*)$",
        r"\1 & wait_for_server $!",
        "`serve` runs until stopped: the test starts it in the background, waits for /health, runs the curl lines"
        " against it and stops it on exit (wait_for_server in SHELL_PRELUDE)",
        regex=True,
    ),
)

# Sourced before each shell block (the README's reader has these from the set-up block or chose them).
SHELL_PRELUDE = """\
export SECRET=readme-test-token  # the token a user picks for `serve --token "$SECRET"`
wait_for_server() {  # $1: the backgrounded server's pid; stopped when the block exits, whatever happens
    trap "kill $1 2>/dev/null || true" EXIT
    for _ in $(seq 1200); do
        curl -sf "localhost:$PORT/health" >/dev/null && return 0
        kill -0 "$1" 2>/dev/null || { echo "the server exited" >&2; return 1; }
        sleep 0.25
    done
    echo "the server never answered /health" >&2
    return 1
}
"""

# Names the README's Python blocks use without defining them: (name, code, why). A line is added only to the blocks
# that mention its name.
PRELUDE = (
    (
        "rgb",
        "import numpy, torch\n"
        "rgb = torch.from_numpy(numpy.array(Image.open('photo.png').convert('RGB'))).permute(2, 0, 1).contiguous()",
        "a [3, H, W] uint8 tensor of photo.png",
    ),
    ("paths_or_images", "paths_or_images = ['photo.png', Image.open('photos/c.png')]", "a path and a Pillow image"),
    ("images", "images = [Image.open('photo.png'), Image.open('photos/c.png')]", "Pillow images"),
    (
        "batch",
        "import numpy, torch\n"
        "batch = torch.from_numpy(numpy.stack([numpy.array(Image.open(p).convert('RGB'))"
        " for p in ('photo.png', 'photos/c.png')])).permute(0, 3, 1, 2).contiguous()",
        "a [B, 3, H, W] uint8 tensor",
    ),
    (
        "x.lcz",
        "import latentcodec\nopen('x.lcz', 'wb').write(latentcodec.encode('photo.png', denoiser=None))",
        "the stream the shell examples write (`latentcodec encode ... -o x.lcz`)",
    ),
)


@dataclass(frozen=True)
class Expectation:
    readme: str  # README text of the block this applies to
    why: str  # what the README says
    files: tuple[str, ...] = ()  # written by the block: .lcz files must be streams, images of SIZE
    output: tuple[str, ...] = ()  # regular expressions its output (stdout and stderr) must match
    json_keys: tuple[str, ...] = ()  # every JSON line of its output holds these keys (and there is one)
    check: str = ""  # Python run after a Python block, in its namespace


EXPECTATIONS = (
    Expectation(
        "latentcodec-lab bench ../shared/data/kodak",
        "the second command encodes and decodes a Kodak image and prints bpp and PSNR",
        output=(r"\bbpp\b", r"\bPSNR\b"),
    ),
    Expectation(
        "latentcodec encode ../shared/data/kodak/kodim23.png -o x.lcz && latentcodec decode x.lcz -o y.png",
        "encode and decode print `IN -> OUT: WxH, BYTES bytes, BPP bpp, SECONDS s` per file",
        files=("x.lcz", "y.png"),
        output=(
            r"kodim23\.png -> x\.lcz: 64x48, \d+ bytes, [\d.]+ bpp, [\d.]+ s",
            r"x\.lcz -> y\.png: 64x48, \d+ bytes, [\d.]+ bpp, [\d.]+ s",
        ),
    ),
    Expectation("latentcodec info x.lcz", "info prints the header, sizes and bpp", output=(r"x\.lcz:", r"bpp")),
    Expectation(
        "latentcodec encode photos/*.png -o out/ --model taef2 --json",
        "`-o` ending in / is a folder; --json prints one object per file with these keys",
        files=("out/c.lcz",),
        json_keys=("input", "output", "width", "height", "bytes", "bpp", "seconds"),
    ),
    Expectation(
        "--data-binary @photo.png",
        "the service encodes photo.png to x.lcz and decodes it to y.png",
        files=("x.lcz", "y.png"),
    ),
    Expectation(
        "latentcodec dataset encode photos/ out/",
        "out/a/b.lcz for photos/a/b.png (a folder is read recursively), and DEST/manifest.jsonl",
        files=("out/a/b.lcz", "out/c.lcz", "out/manifest.jsonl"),
        output=(r"2 done",),
    ),
    Expectation(
        "latentcodec dataset decode out/ decoded/",
        "decoded/a/b.png",
        files=("decoded/a/b.png", "decoded/c.png", "decoded/manifest.jsonl"),
    ),
    Expectation(
        'report = encode_dataset("photos/", "out/"',
        "a Report with .done/.skipped/.failed/.ignored; one .lcz per input under the same relative path",
        files=("out/a/b.lcz", "out/c.lcz"),
        check="assert (report.done, report.skipped, report.failed, report.ignored) == (2, 0, 0, 0), report.records",
    ),
    Expectation(
        'image.save("y.lcz", mode="uniform", quality=70)',
        "what the comments of the Python API block promise",
        files=("y.lcz",),
        check="""\
import concurrent.futures
import PIL.Image
assert isinstance(data, bytes) and isinstance(small, bytes)
assert isinstance(image, PIL.Image.Image) and image.size == (64, 48)
assert len(results) == len(paths_or_images) and all(r.ok for r in results)
assert len(streams) == len(results)
assert all(t.shape == (3, 48, 64) and 0 <= float(t.min()) and float(t.max()) <= 1 for t in tensors)
assert isinstance(future, concurrent.futures.Future)
assert latentcodec.decode("x.lcz").size == (64, 48)  # "or decode('x.lcz'): a path"
assert latentcodec.info("x.lcz").bpp > 0  # "header, sizes, bpp, of bytes or a path"
import torch
if not torch.cuda.is_available():  # "DeviceError without CUDA"
    try:
        latentcodec.Codec("taef2-q2", device="cuda")
        raise AssertionError("Codec(device='cuda') without CUDA did not raise DeviceError")
    except latentcodec.DeviceError:
        pass
open("bad.lcz", "wb").write(open("x.lcz", "rb").read()[:-1] + b"?")  # "a corrupt stream: UnidentifiedImageError"
try:
    Image.open("bad.lcz")
    raise AssertionError("a corrupt stream opened")
except PIL.UnidentifiedImageError as exc:
    assert "checksum" in str(exc).lower(), exc
try:  # "EncodeOptions keywords and model=; others raise ValueError"
    image.save("z.lcz", colours=3)
    raise AssertionError("an unknown save keyword was accepted")
except ValueError:
    pass
""",
    ),
)

# A Python block runs in the README's own file and line numbers (tracebacks point at the README), and may `await`
# at top level as in `python -m asyncio`, IPython or Jupyter (the RequestQueue example's asyncio line).
RUNNER = """\
import ast, asyncio, sys
scope = {"__name__": "__main__"}
def run(source, filename, first_line):
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = compile(source, filename, "exec", flags=flags | ast.PyCF_ONLY_AST)
    ast.increment_lineno(tree, first_line - 1)
    result = eval(compile(tree, filename, "exec", flags=flags), scope)
    if result is not None:
        asyncio.run(result)
run(sys.argv[1], "<prelude: tests/test_readme.py>", 1)
run(sys.argv[2], sys.argv[3], int(sys.argv[4]))
run(sys.argv[5], "<checks: tests/test_readme.py>", 1)
"""

BLOCKS = readme_blocks(README.read_text())


def test_readme_has_its_examples():
    """The extraction found the usage sections' blocks (a broken fence would silently drop them)."""
    sections = {b.section for b in BLOCKS}
    assert {"Set up and run", "Python API"} <= sections, sections
    assert {b.language for b in BLOCKS} == {"bash", "python"}


def test_tables_match_the_readme():
    """Every substitution, prelude name and expectation still meets the README text it was written for."""
    texts = [b.text for b in BLOCKS]
    stale = [s.readme for s in SUBSTITUTIONS if not any(s.matches(t) for t in texts)]
    python = [b.text for b in BLOCKS if b.language == "python"]
    stale += [name for name, _, _ in PRELUDE if not any(_mentions(t, name) for t in python)]
    stale += [e.readme for e in EXPECTATIONS if not any(e.readme in t for t in texts)]
    assert not stale, f"README text these tables refer to is gone (update tests/test_readme.py): {stale}"


def _mentions(text: str, name: str) -> bool:
    """Whether ``text`` uses ``name`` as a whole name (``images`` is not in ``paths_or_images``)."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text) is not None


def test_inline_commands_name_real_flags():
    """The commands quoted inline in the prose (`latentcodec-lab rd ... --all`: too slow to run here) use only
    subcommands and flags the command line has. Brackets mark optional parts; `encode|decode` alternatives."""
    import argparse

    from latentcodec.bench.cli import build_parser as lab_parser
    from latentcodec.bindings.cli import build_parser as cli_parser

    prose = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.MULTILINE | re.DOTALL).replace("\n", " ")
    spans = [s for s in re.findall(r"`([^`]+)`", prose) if re.match(r"(latentcodec|latentcodec-lab) ", s)]
    assert len(spans) > 10, spans
    wrong = []
    for span in spans:
        words = span.replace("[", " ").replace("]", " ").split()
        parser = lab_parser() if words[0] == "latentcodec-lab" else cli_parser()
        values = 0  # words still to skip: the values of the flag before them
        for word in words[1:]:
            commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if any(a.nargs == argparse.REMAINDER for a in parser._actions):
                break  # train-*: the rest goes to the training script's own parser
            if word.startswith("-") and not re.match(r"-[\d.]", word):
                action = parser._option_string_actions.get(word)
                if action is None:
                    wrong.append(f"{span}: {word}")
                nargs = None if action is None else action.nargs
                values = nargs if isinstance(nargs, int) else 1 if nargs in (None, "?") else 99
            elif values:
                values -= 1
            elif commands:
                name = word.split("|")[0]
                if name not in commands[0].choices:
                    wrong.append(f"{span}: no subcommand {name}")
                    break
                parser = commands[0].choices[name]
    assert not wrong, wrong


def _params():
    for block in BLOCKS:
        marks = [pytest.mark.slow] if block.section in SLOW else []
        yield pytest.param(block, id=block.id, marks=marks)


@pytest.fixture()
def world(tmp_path) -> Path:
    """A folder laid out as the README assumes (the repo root, ../shared beside it), with small inputs."""
    root = tmp_path / "repo"
    kodak = tmp_path / "shared" / "data" / "kodak"
    for folder in (root / "photos" / "a", kodak):
        folder.mkdir(parents=True)
    (tmp_path / "shared" / "models").symlink_to(SHARED / "models", target_is_directory=True)
    for index, name in ((1, "kodim01.png"), (23, "kodim23.png")):
        _crop(index).save(kodak / name)
    _crop(23).save(root / "photo.png")
    _crop(5).save(root / "photos" / "c.png")
    _crop(13).save(root / "photos" / "a" / "b.png")
    return root


def _crop(index: int) -> Image.Image:
    image = Image.open(kodak_path(index)).convert("RGB")
    left, top = (image.width - SIZE[0]) // 2, (image.height - SIZE[1]) // 2
    return image.crop((left, top, left + SIZE[0], top + SIZE[1]))


@pytest.mark.parametrize("block", list(_params()))
def test_readme_block(block: Block, world: Path):
    text = block.text
    for substitution in SUBSTITUTIONS:
        text = substitution.apply(text)
    expectations = [e for e in EXPECTATIONS if e.readme in block.text]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "LATENTCODEC_WEIGHTS": str(world.parent / "shared" / "models"),  # as the set-up block exports it
        "PORT": str(_free_port()),
    }
    if block.language == "bash":
        command = ["bash", "-e", "-c", SHELL_PRELUDE + text]
    else:
        used = [code for name, code, _ in PRELUDE if _mentions(block.text, name)]
        prelude = "\n".join(["from PIL import Image", *used])
        checks = "\n".join(e.check for e in expectations)
        command = [sys.executable, "-c", RUNNER, prelude, text, str(README), str(block.line), checks]
    out, err = _run(command, world, env)
    for expectation in expectations:
        for pattern in expectation.output:
            assert re.search(pattern, out + err), f"{expectation.why}: no {pattern!r} in\n{out}\n{err}"
        if expectation.json_keys:
            lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            assert lines, f"{expectation.why}: no JSON lines in\n{out}"
            for line in lines:
                assert set(expectation.json_keys) <= set(line), f"{expectation.why}: {line}"
        for name in expectation.files:
            _check_output(world / name, expectation.why)


def _run(command: list[str], cwd: Path, env: dict) -> tuple[str, str]:
    """Run ``command`` in its own process group (which is stopped afterwards, background servers included)."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"timed out after {TIMEOUT_S} s\n--- stdout\n{out}\n--- stderr\n{err}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"exit status {process.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    return out, err


def _check_output(path: Path, why: str) -> None:
    assert path.is_file(), f"{why}: {path.name} was not written"
    if path.suffix == ".lcz":
        assert path.read_bytes()[:4] == b"\x89LCZ", f"{why}: {path.name} is not a stream"
    elif path.suffix == ".png":
        with Image.open(path) as image:
            assert image.size == SIZE, f"{why}: {path.name} is {image.size}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
