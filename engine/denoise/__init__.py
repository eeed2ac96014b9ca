"""Latent denoisers: networks that clean quantization noise from latents before the VAE decoder."""
