"""The codec engine: models, latent coding, bitstream, entropy stage and the public API."""
