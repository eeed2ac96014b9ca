"""The encoder's streams stay byte for byte what they were when the fixture was written (refactors change no bits)."""

import json

import pytest
from shared_inputs import KODAK
from stream_fixtures import DENOISER_ENV, FIXTURE, stream_digests, write_seeded_denoiser


@pytest.fixture(scope="module")
def digests(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            DENOISER_ENV, str(write_seeded_denoiser(tmp_path_factory.mktemp("denoiser") / "seeded.safetensors"))
        )
        return stream_digests(KODAK)


def test_every_pinned_kodak_stream_is_unchanged(digests):
    pinned = json.loads(FIXTURE.read_text())
    assert set(digests) == set(pinned)
    changed = {
        name: (digests[name]["bytes"], pinned[name]["bytes"]) for name in pinned if digests[name] != pinned[name]
    }
    assert not changed, f"streams differ from the pinned ones (bytes now, pinned): {changed}"


def test_the_pinned_cases_cover_streams_with_and_without_a_denoiser():
    pinned = json.loads(FIXTURE.read_text())
    named = {entry["denoiser"] for entry in pinned.values()}
    assert named == {None, "latent-denoiser"}
