"""Entropy stages of the latent symbols: ``zstd`` (one frame of byte planes) and ``context`` (an ANS stream under
a context model of int8 uniform symbols)."""
