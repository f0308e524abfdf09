"""Options that keep synthetic images natural while they learn.

- :func:`augment`: differentiable augmentation of the synthetic images inside the matching, as
  DSA does: each iteration every image is shifted, scaled, rotated and colour-jittered by a random
  amount before the student sees it, and the gradient flows back through the transform, so a
  pixel pattern only helps if it helps under all of them (high-frequency patterns that fit one
  exact view do not). No flips: captions name left and right.
- :func:`total_variation`: mean absolute difference of neighbouring pixels; added to the matching
  loss with a weight, it penalises speckle.
- A low-frequency parametrisation is what ``DistillConfig.pixel_grad_blur`` already gives: with
  pixels ``x = G u`` for a blur ``G``, an SGD step on ``u`` moves ``x`` by a blurred gradient.

Measured (``benchmarks/bench_mechanisms.py``, ``shapes`` at 64 px, 50% noise, EfficientNet-Lite0
frozen, 100 pairs, 100 iterations, seeds 0 and 1; ``benchmarks/results/mechanisms_{plain,dsa}.json``):
augmentation at strength 1 did not keep the images readable and cost retrieval: mean pixel change
0.21 against 0.19 for plain matching, top-5 caption recognition by a model trained on the clean
pairs 0.20 / 0.22 against 0.58 / 0.56 (0.84 / 0.82 for the starting images), test R-sum 389 / 391
against 458 / 466. So it stays off by default; the TV penalty and the gradient blur were not
measured in this regime.

Strength 0 is plain matching: :func:`augment` returns its input object and the distiller skips the
penalty, so the results are the same bit for bit.

Example:
    >>> import torch
    >>> x = torch.rand(2, 3, 16, 16)
    >>> augment(x, 0.0) is x
    True
    >>> y = augment(x, 1.0, torch.Generator().manual_seed(0))
    >>> y.shape == x.shape and not torch.equal(x, y)
    True
    >>> float(total_variation(torch.ones(1, 3, 8, 8)))
    0.0
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Largest change of each transform at strength 1 (uniform in [-max, max]).
SHIFT = 0.125  # share of the image side
SCALE = 0.15  # relative zoom
ROTATE = 15.0  # degrees
BRIGHTNESS = 0.15  # added to [0, 1] pixels
CONTRAST = 0.3  # relative
SATURATION = 0.3  # relative


def _uniform(n: int, bound: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return ((torch.rand(n, generator=generator) * 2 - 1) * bound).to(device)


def _geometry(x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    angle = _uniform(n, math.radians(ROTATE) * strength, generator, dev)
    scale = 1.0 + _uniform(n, SCALE * strength, generator, dev)
    shift = torch.stack([_uniform(n, 2 * SHIFT * strength, generator, dev) for _ in range(2)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _colour(x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    view = (n, 1, 1, 1)
    x = x + _uniform(n, BRIGHTNESS * strength, generator, dev).view(view)
    grey = x.mean(dim=1, keepdim=True)
    x = grey + (x - grey) * (1.0 + _uniform(n, SATURATION * strength, generator, dev).view(view))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * (1.0 + _uniform(n, CONTRAST * strength, generator, dev).view(view))


def augment(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable random shift / scale / rotation / colour jitter of ``[N, 3, H, W]`` images.

    ``strength`` scales every transform's range (1: the ranges in this module's constants);
    ``strength == 0`` returns ``images`` itself. Random numbers come from ``generator`` (CPU).
    """
    if strength < 0:
        raise ValueError(f"augmentation strength must be >= 0, got {strength}")
    if strength == 0:
        return images
    return _colour(_geometry(images, strength, generator), strength, generator)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically neighbouring pixels (a scalar)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return dx + dy
