"""Palette fitting (k-means in latent space) and Floyd-Steinberg error diffusion over the latent grid."""

from __future__ import annotations

import torch

from latentcodec.kernels import ops as kernels


def _squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ centroids.T + centroids.pow(2).sum(1)).clamp_min_(0)


def fit_palette(vectors: torch.Tensor, size: int, iterations: int = 12, seed: int = 0) -> torch.Tensor:
    """``size`` centroids ``[K, C]`` of ``vectors`` ``[N, C]`` by k-means++ and Lloyd iterations.

    Deterministic for a given seed; K is ``min(size, N)``.
    """
    vectors = vectors.float()
    n = vectors.shape[0]
    size = min(size, n)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = vectors[first : first + 1]
    nearest = _squared_distances(vectors, centroids)[:, 0]
    for _ in range(1, size):  # k-means++ seeding
        weights = nearest.cpu().double()
        pick = int(torch.multinomial(weights, 1, generator=generator)) if weights.sum() > 0 else 0
        centroids = torch.cat([centroids, vectors[pick : pick + 1]])
        nearest = torch.minimum(nearest, _squared_distances(vectors, centroids[-1:])[:, 0])
    for _ in range(iterations):
        assignment = _squared_distances(vectors, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        counts = torch.bincount(assignment, minlength=size).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids


def nearest_indices(latents: torch.Tensor, palettes: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Indices ``[B, H, W]`` of the nearest palette entry per latent pixel, no dithering."""
    b, c, h, w = latents.shape
    pixels = latents.permute(0, 2, 3, 1).reshape(b, h * w, c)
    return kernels.palette_nearest(pixels, palettes, backend).reshape(b, h, w)


# (dy, dx, weight) of Floyd-Steinberg error diffusion.
_DIFFUSION = ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16))


def dither_indices(latents: torch.Tensor, palettes: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Floyd-Steinberg dithered palette indices ``[B, H, W]`` for latents ``[B, C, H, W]``.

    Pixels are visited in anti-diagonal wavefronts (``x + 2y = t``): every pixel's error sources lie on
    earlier wavefronts, so this equals raster-order diffusion while running ``W + 2H`` vectorised steps.
    """
    b, c, h, w = latents.shape
    work = latents.permute(0, 2, 3, 1).to(torch.float32, copy=True).contiguous()  # [B, H, W, C] + diffused error
    indices = torch.empty((b, h, w), dtype=torch.int32, device=latents.device)
    batch = torch.arange(b, device=latents.device)[:, None]
    for t in range(w + 2 * (h - 1)):
        ys = torch.arange(max(0, (t - w + 2) // 2), min(h - 1, t // 2) + 1, device=latents.device)
        xs = t - 2 * ys
        values = work[:, ys, xs]  # [B, n, C]
        chosen = kernels.palette_nearest(values, palettes, backend)
        indices[:, ys, xs] = chosen
        error = values - torch.gather(palettes, 1, chosen.long()[:, :, None].expand(-1, -1, c))
        for dy, dx, weight in _DIFFUSION:
            ty, tx = ys + dy, xs + dx
            keep = (ty < h) & (tx >= 0) & (tx < w)
            if keep.any():
                target = (batch, ty[keep][None, :], tx[keep][None, :])
                work.index_put_(target, error[:, keep] * weight, accumulate=True)
    return indices
