"""Stage 2: choose the M real pairs the distilled set starts from.

Pairs are drawn from those with a high consensus clean probability (stage 1):

- ``"random"`` (the default): uniform among the clean candidates, so the start follows the
  density of the data.
- ``"kcenter"``: greedy k-center (farthest point first) on unit-norm embeddings, spread out
  in a pretrained embedding space.
- ``"balanced"``: k-means with ``M`` clusters, then one random member per cluster.

The default is chosen by measurement (``benchmarks/bench_distill.py``, 100 pairs at 50% noise,
3 seeds): the spread-out starts distilled worse on both openmoji splits. k-center picks the
outliers of the embedding, atypical emoji, and the low-density fringe is where the mismatched
pairs the detector lets through lie (4-10% of a k-center start, 1-2% of a random one).

The embedding is :func:`pair_embeddings`: the frozen text embedding concatenated
with a cheap image embedding (an ``8 x 8`` thumbnail), each unit-normalised.

When fewer than ``M`` pairs reach ``clean_threshold``, the ``M`` pairs with the
highest clean probability are the candidates instead (a warning says so).

Example:
    >>> import torch
    >>> emb = torch.randn(50, 8)
    >>> p = torch.rand(50)
    >>> idx = select_initial_pairs(p, emb, 5, method="kcenter", seed=0)
    >>> len(idx), bool((p[idx] >= 0.5).all())
    (5, True)
"""
from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F

METHODS = ("kcenter", "balanced", "random")
log = logging.getLogger(__name__)


def pair_embeddings(images: torch.Tensor, text_emb: torch.Tensor, thumb: int = 8,
                    image_weight: float = 1.0) -> torch.Tensor:
    """Concatenate unit-norm text embeddings with unit-norm ``thumb x thumb`` image thumbnails.

    Example:
        >>> import torch
        >>> pair_embeddings(torch.rand(4, 3, 32, 32), torch.randn(4, 16)).shape
        torch.Size([4, 208])
    """
    imgs = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    small = F.adaptive_avg_pool2d(imgs, thumb).flatten(1)
    small = F.normalize(small - small.mean(dim=1, keepdim=True), dim=1)
    return torch.cat([F.normalize(text_emb.float(), dim=1), image_weight * small], dim=1)


def clean_candidates(p_clean: torch.Tensor | None, n: int, M: int, clean_threshold: float = 0.5) -> torch.Tensor:
    """Indices of pairs with ``p_clean >= clean_threshold``; the top ``M`` by ``p_clean`` if too few.

    Example:
        >>> import torch
        >>> clean_candidates(torch.tensor([0.9, 0.2, 0.7]), 3, 2).tolist()
        [0, 2]
    """
    if p_clean is None:
        return torch.arange(n)
    p = torch.as_tensor(p_clean, dtype=torch.float32).flatten()
    if len(p) != n:
        raise ValueError(f"p_clean has {len(p)} values but there are {n} pairs")
    cand = torch.nonzero(p >= clean_threshold).flatten()
    if len(cand) < M:
        msg = (f"only {len(cand)} pairs have clean probability >= {clean_threshold}; "
               f"starting from the {M} pairs with the highest clean probability instead")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
        cand = torch.argsort(p, descending=True, stable=True)[:M]
    return cand


def kcenter_greedy(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-center: start at a random point, then repeatedly add the point farthest from the chosen.

    Example:
        >>> import torch
        >>> kcenter_greedy(torch.tensor([[0.], [0.1], [5.]]), 2, torch.Generator().manual_seed(0)).sort().values
        tensor([0, 2])
    """
    first = int(torch.randint(len(x), (1,), generator=generator))
    chosen = [first]
    dist = torch.cdist(x, x[first:first + 1]).squeeze(1)
    for _ in range(k - 1):
        nxt = int(torch.argmax(dist))
        chosen.append(nxt)
        dist = torch.minimum(dist, torch.cdist(x, x[nxt:nxt + 1]).squeeze(1))
    return torch.tensor(chosen, dtype=torch.long)


def balanced_random(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 15) -> torch.Tensor:
    """k-means (k-means++ seeding) into ``k`` clusters, then one random member of each cluster.

    Empty clusters (rare) are filled with random unchosen points so exactly ``k`` come back.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.], [0.1], [5.], [5.1]])
        >>> sorted(i // 2 for i in balanced_random(x, 2, torch.Generator().manual_seed(0)).tolist())
        [0, 1]
    """
    centers = x[kcenter_greedy(x, k, generator)].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centers).argmin(dim=1)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                centers[c] = members.mean(dim=0)
    assign = torch.cdist(x, centers).argmin(dim=1)
    chosen = []
    for c in range(k):
        members = torch.nonzero(assign == c).flatten()
        if len(members):
            chosen.append(int(members[torch.randint(len(members), (1,), generator=generator)]))
    rest = torch.tensor(sorted(set(range(len(x))) - set(chosen)), dtype=torch.long)
    fill = rest[torch.randperm(len(rest), generator=generator)[:k - len(chosen)]]
    return torch.cat([torch.tensor(chosen, dtype=torch.long), fill])


def select_initial_pairs(p_clean: torch.Tensor | None, embeddings: torch.Tensor, M: int,
                         method: str = "random", clean_threshold: float = 0.5, seed: int = 0) -> torch.Tensor:
    """Indices (into the pairs) of the ``M`` starting pairs; see the module docstring.

    Args:
        p_clean: ``[N]`` consensus clean probabilities, or ``None`` to treat every pair as clean.
        embeddings: ``[N, e]`` pair embeddings (e.g. :func:`pair_embeddings`).
        M: how many pairs.
        method: ``"kcenter"``, ``"balanced"`` or ``"random"``.
        clean_threshold: minimum clean probability of a candidate.
        seed: seeds every random choice.
    """
    if method not in METHODS:
        raise ValueError(f"unknown init method {method!r}; use one of {METHODS}")
    n = len(embeddings)
    if not 1 <= M <= n:
        raise ValueError(f"cannot draw M={M} starting pairs from {n} pairs")
    cand = clean_candidates(p_clean, n, M, clean_threshold)
    g = torch.Generator().manual_seed(int(seed))
    if method == "random" or len(cand) == M:
        pick = torch.randperm(len(cand), generator=g)[:M]
    else:
        x = F.normalize(embeddings[cand].float(), dim=1)
        pick = kcenter_greedy(x, M, g) if method == "kcenter" else balanced_random(x, M, g)
    return cand[pick].sort().values
