"""Coreset baselines: pick M real pairs instead of distilling synthetic ones.

Every selector answers one verb, ``select(data, M, seed) -> indices`` (long
tensor of ``M`` distinct pair rows), where ``data`` is either a feature matrix
``[N, D]`` (one row per training pair) or a :class:`~mdw_kit.data.base.PairDataset`
(its pairs, all splits as given; pass the train split).

Embedding space (herding, k-center). We use the pair's **frozen text
embedding** (the caption through the frozen text encoder, L2-normalised) as the
default space: it is the space the distilled texts live in, it costs nothing
extra (the embeddings are cached for training anyway) and it is pretrained,
so the geometry is meaningful before any model is trained. A pretrained image
feature may be concatenated (:func:`pair_features` with ``image_features``);
both halves are L2-normalised and weighted equally, so neither modality
dominates by scale. Herding and k-center are deterministic: the seed is
accepted for the shared verb but does not change their choice.

Example:
    >>> import torch
    >>> feats = torch.randn(50, 8)
    >>> idx = make_coreset("kcenter").select(feats, 10, seed=0)
    >>> len(set(idx.tolist())) == 10
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from mdw_kit.data.base import DataError, PairDataset

CoresetInput = Union[torch.Tensor, np.ndarray, PairDataset]


def pair_features(text_emb: torch.Tensor, image_features: torch.Tensor | None = None) -> torch.Tensor:
    """The coreset embedding space: normalised text embedding, optionally joined with image features.

    Args:
        text_emb: ``[N, d]`` frozen text embeddings, one per pair.
        image_features: optional ``[N, e]`` pretrained image features of each pair's image.

    Example:
        >>> import torch
        >>> pair_features(torch.randn(4, 3), torch.randn(4, 5)).shape
        torch.Size([4, 8])
    """
    feats = F.normalize(torch.as_tensor(text_emb).float(), dim=-1)
    if image_features is None:
        return feats
    image_features = torch.as_tensor(image_features).float()
    if image_features.shape[0] != feats.shape[0]:
        raise DataError(f"image_features has {image_features.shape[0]} rows but text_emb has "
                        f"{feats.shape[0]}; pass one row per pair")
    both = torch.cat([feats, F.normalize(image_features, dim=-1)], dim=1)
    return both / 2 ** 0.5


def _features(data: CoresetInput) -> torch.Tensor:
    """Feature matrix of ``data``: as given, or the frozen text embeddings of a PairDataset's captions."""
    if isinstance(data, PairDataset):
        from mdw_kit.models import build_text_encoder, embed_captions
        return pair_features(embed_captions(build_text_encoder("minilm"), data.captions))
    feats = torch.as_tensor(np.asarray(data) if isinstance(data, np.ndarray) else data).float()
    if feats.ndim != 2:
        raise DataError(f"coreset features must be [N, D], got shape {tuple(feats.shape)}")
    return feats


def _count(data: CoresetInput) -> int:
    return len(data) if isinstance(data, PairDataset) else int(torch.as_tensor(
        np.asarray(data) if isinstance(data, np.ndarray) else data).shape[0])


def _check_budget(n: int, M: int) -> None:
    if M <= 0:
        raise ValueError(f"budget M must be positive, got {M}")
    if M > n:
        raise DataError(f"budget M={M} exceeds the {n} pairs available")


class Coreset:
    """Base class: ``select(data, M, seed) -> indices``."""

    name = "coreset"

    def select(self, data: CoresetInput, M: int, seed: int = 0) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class RandomCoreset(Coreset):
    """Uniform random pairs.

    Example:
        >>> RandomCoreset().select(torch.zeros(20, 2), 5, seed=1).shape
        torch.Size([5])
    """

    name = "random"

    def select(self, data: CoresetInput, M: int, seed: int = 0) -> torch.Tensor:
        n = _count(data)
        _check_budget(n, M)
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:M]


class HerdingCoreset(Coreset):
    """Greedy herding: each pick keeps the running mean of the chosen features closest to the data mean.

    Example:
        >>> pts = torch.tensor([[3., 0.], [-1., 0.], [-2., 0.], [0., 0.]])
        >>> HerdingCoreset().select(pts, 2).tolist()  # mean is 0: keep the running mean near it
        [3, 1]
    """

    name = "herding"

    def select(self, data: CoresetInput, M: int, seed: int = 0) -> torch.Tensor:
        feats = _features(data).double()
        n = feats.shape[0]
        _check_budget(n, M)
        mu = feats.mean(0)
        running = torch.zeros_like(mu)
        taken = torch.zeros(n, dtype=torch.bool)
        picks = []
        for k in range(1, M + 1):
            # candidate mean after adding x: (running + x) / k; distance to mu
            gap = ((running.unsqueeze(0) + feats) / k - mu).pow(2).sum(1)
            gap[taken] = float("inf")
            i = int(torch.argmin(gap))
            picks.append(i)
            taken[i] = True
            running += feats[i]
        return torch.tensor(picks, dtype=torch.long)


class KCenterCoreset(Coreset):
    """Greedy k-center (farthest point) from the pair nearest the data mean.

    Example:
        >>> pts = torch.tensor([[0., 0.], [0.1, 0.], [5., 5.], [-5., 5.]])
        >>> sorted(KCenterCoreset().select(pts, 3).tolist())
        [0, 2, 3]
    """

    name = "kcenter"

    def select(self, data: CoresetInput, M: int, seed: int = 0) -> torch.Tensor:
        feats = _features(data).double()
        n = feats.shape[0]
        _check_budget(n, M)
        first = int(torch.argmin((feats - feats.mean(0)).pow(2).sum(1)))
        return kcenter_greedy(feats, M, first)


def kcenter_greedy(feats: torch.Tensor, M: int, first: int) -> torch.Tensor:
    """Farthest-point selection of ``M`` rows of ``feats`` starting at row ``first``.

    Example:
        >>> kcenter_greedy(torch.tensor([[0.], [1.], [10.]]), 2, 0).tolist()
        [0, 2]
    """
    picks = [first]
    dist = (feats - feats[first]).pow(2).sum(1)
    for _ in range(M - 1):
        i = int(torch.argmax(dist))
        picks.append(i)
        dist = torch.minimum(dist, (feats - feats[i]).pow(2).sum(1))
    return torch.tensor(picks, dtype=torch.long)


@dataclass
class CleanRandomCoreset(Coreset):
    """Random pairs among those the noise report predicts clean (``p_clean >= threshold``).

    Where fewer than ``M`` pairs pass, all of them are kept and the rest of the
    budget is filled with the next most-probably-clean pairs (highest ``p_clean``).
    ``p_clean`` may be given here or to :meth:`select`.

    Example:
        >>> p = torch.tensor([0.9, 0.1, 0.8, 0.95, 0.2])
        >>> sorted(CleanRandomCoreset(p).select(torch.zeros(5, 1), 3).tolist())
        [0, 2, 3]
    """

    p_clean: torch.Tensor | None = None
    threshold: float = 0.5
    name: str = "clean_random"

    def select(self, data: CoresetInput, M: int, seed: int = 0,
               p_clean: torch.Tensor | None = None) -> torch.Tensor:
        n = _count(data)
        _check_budget(n, M)
        p = p_clean if p_clean is not None else self.p_clean
        if p is None:
            raise ValueError("CleanRandomCoreset needs p_clean (per-pair clean probability from the "
                             "noise report); pass it to the constructor or to select()")
        p = torch.as_tensor(p, dtype=torch.float64).reshape(-1)
        if p.numel() != n:
            raise DataError(f"p_clean has {p.numel()} entries but the data has {n} pairs")
        g = torch.Generator().manual_seed(seed)
        clean = torch.nonzero(p >= self.threshold).flatten()
        if len(clean) >= M:
            return clean[torch.randperm(len(clean), generator=g)[:M]]
        rest = torch.nonzero(p < self.threshold).flatten()
        rest = rest[torch.argsort(p[rest], descending=True, stable=True)]
        return torch.cat([clean[torch.randperm(len(clean), generator=g)], rest[:M - len(clean)]])


CORESETS: dict[str, type[Coreset]] = {
    "random": RandomCoreset,
    "herding": HerdingCoreset,
    "kcenter": KCenterCoreset,
    "clean_random": CleanRandomCoreset,
}


def make_coreset(name: str, **kwargs) -> Coreset:
    """The coreset selector called ``name`` (``random``, ``herding``, ``kcenter``, ``clean_random``).

    Example:
        >>> make_coreset("herding").name
        'herding'
    """
    if name not in CORESETS:
        raise ValueError(f"unknown coreset {name!r}; choose one of {sorted(CORESETS)}")
    return CORESETS[name](**kwargs)
