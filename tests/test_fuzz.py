"""A few thousand mutated streams per CI run (``latentcodec-lab fuzz`` runs more): each decodes or is refused."""

from latentcodec.bench import fuzz


def test_mutated_streams_decode_or_raise_library_errors(codec):
    report = fuzz.run(codec, 2500, seed=17)
    assert report.streams == 2500 and not report.failures, report.failures[:5]
    assert report.decoded + sum(report.refused.values()) == 2500
    assert report.refused["ChecksumError"] > 0 and len(report.refused) >= 4  # the mutations reach deep fields
    assert report.slowest_s < 5, str(report)
