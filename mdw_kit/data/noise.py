"""Known noise: permute a share of the training captions so no chosen pair keeps its own.

:func:`inject_noise` picks ``round(rate * n_train)`` training pairs (seeded),
shuffles them and gives each the caption of the next one in that order (a
cyclic shift: a derangement, so every chosen pair carries a caption that is not
its own). Those pairs get ``clean = False`` and ``source_caption`` = the pair
whose original caption they now carry; val and test pairs are never touched.

No chosen pair receives a caption whose text equals its own (where texts
repeat, the shift is repaired by seeded swaps), so every pair marked noisy
carries another text. Where an image has several captions, a chosen pair may
receive another caption of its own image (another of its five); it still counts
as injected noise (``clean = False``), and ``noise_record`` keeps the exact
permutation, so such cases can be found.

Example:
    >>> from mdw_kit.data import load_source
    >>> ds = inject_noise(load_source("shapes", num_images=30, seed=0), rate=0.4, seed=7)
    >>> ds.meta["noise"]["count"], int((~ds.clean).sum())
    (10, 10)
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from .base import DataError, PairDataset


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
        raise DataError(f"noise rate must be a number in [0, 1), got {rate!r}")
    return float(rate)


def noisy_permutation(train_pairs: np.ndarray, count: int, seed: int,
                      captions: list[str] | None = None) -> dict[int, int]:
    """``{pair: source pair}`` for ``count`` of ``train_pairs``: a seeded cyclic shift (no fixed points).

    With ``captions`` (indexed by pair), no pair receives a caption whose text equals its own.

    Example:
        >>> perm = noisy_permutation(np.arange(10), 4, seed=0)
        >>> len(perm), all(k != v for k, v in perm.items()), sorted(perm) == sorted(perm.values())
        (4, True, True)
        >>> caps = ["dog", "dog", "dog", "cat", "cat", "bird"]
        >>> perm = noisy_permutation(np.arange(6), 6, seed=1, captions=caps)
        >>> any(caps[p] == caps[q] for p, q in perm.items())
        False
    """
    if count == 1:
        raise DataError("a noise rate that selects exactly 1 training pair cannot swap captions; "
                        "use a rate giving 0 or at least 2 pairs")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(train_pairs)[:count]
    if captions is not None:
        chosen = _separate_equal_texts(chosen, [captions[int(p)] for p in chosen], rng)
    return {int(p): int(q) for p, q in zip(chosen, np.roll(chosen, -1))}


def _separate_equal_texts(order: np.ndarray, texts: list[str], rng: np.random.Generator) -> np.ndarray:
    """Reorder the cycle ``order`` so that no two neighbours (cyclically) share a text.

    Seeded swaps repair the few clashes of a random order and keep the rest of it; where they do
    not converge, the cycle is rebuilt by dealing the texts out largest group first.
    """
    n = len(order)
    top = max(Counter(texts).values())
    if top > n // 2:
        text = Counter(texts).most_common(1)[0][0]
        raise DataError(f"noise injection: {top} of the {n} chosen training pairs carry the text {text!r}, too "
                        "many to give each another text; lower the noise rate or de-duplicate captions")
    order, texts = order.copy(), list(texts)
    for _ in range(20 * n):
        clash = [i for i in range(n) if texts[i] == texts[(i + 1) % n]]
        if not clash:
            return order
        i, j = (clash[0] + 1) % n, int(rng.integers(n))
        order[[i, j]], (texts[i], texts[j]) = order[[j, i]], (texts[j], texts[i])
    return _deal_out(order, texts)


def _deal_out(order: np.ndarray, texts: list[str]) -> np.ndarray:
    """Items grouped by text (largest group first) placed at even positions, then odd ones."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t, []).append(int(order[i]))
    flat = [p for g in sorted(groups.values(), key=len, reverse=True) for p in g]
    out = np.empty(len(flat), dtype=order.dtype)
    slots = list(range(0, len(flat), 2)) + list(range(1, len(flat), 2))
    out[slots] = flat
    return out


def inject_noise(ds: PairDataset, rate: float, seed: int = 0) -> PairDataset:
    """A copy of ``ds`` with ``round(rate * n_train)`` training captions deranged (see module doc).

    ``rate`` must lie in ``[0, 1)``; ``rate=0`` gives an equal dataset with ``noise_known=True``.
    The input must not carry injected noise already.

    Example:
        >>> from mdw_kit.data import load_source
        >>> clean = load_source("shapes", num_images=20, seed=0)
        >>> noisy = inject_noise(clean, rate=0.5, seed=1)
        >>> bool((noisy.source_caption != torch.arange(len(noisy))).eq(~noisy.clean).all())
        True
    """
    rate = _check_rate(rate)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise DataError(f"noise seed must be an integer, got {seed!r}")
    if not bool(ds.clean.all()) or not torch.equal(ds.source_caption, torch.arange(len(ds))):
        raise DataError("the dataset already carries injected noise; inject into the clean dataset")
    train = np.flatnonzero(ds.pair_split == "train")
    count = round(rate * len(train))
    perm = noisy_permutation(train, count, int(seed), ds.captions) if count else {}
    source = torch.arange(len(ds))
    for p, q in perm.items():
        source[p] = q
    return _with_sources(ds, source, {"rate": rate, "seed": int(seed), "count": count})


def _with_sources(ds: PairDataset, source: torch.Tensor, noise: dict[str, Any]) -> PairDataset:
    """``ds`` whose pair ``p`` carries the caption of pair ``source[p]``."""
    return PairDataset(images=ds.images, image_ids=list(ds.image_ids), image_split=ds.image_split.copy(),
                       captions=[ds.captions[int(q)] for q in source], pair_image=ds.pair_image.clone(),
                       clean=source == torch.arange(len(ds)), source_caption=source.clone(), noise_known=True,
                       boxes=ds.boxes, meta={**ds.meta, "noise": noise})


def noise_record(ds: PairDataset) -> dict[str, Any]:
    """A JSON-able record of the injected noise of ``ds``: rate, seed, count, noisy pairs, permutation.

    Take it from the whole dataset that :func:`inject_noise` returned, so :func:`apply_noise_record`
    can replay it. On a subset (``ds.split("train")``) ``noisy_pairs`` index the subset while
    ``source_caption`` keeps the whole dataset's pair indices; ``parent_pairs`` then says so.

    Example:
        >>> from mdw_kit.data import load_source
        >>> rec = noise_record(inject_noise(load_source("shapes", num_images=20, seed=0), 0.25, seed=2))
        >>> rec["count"] == len(rec["noisy_pairs"])
        True
    """
    if not ds.noise_known or "noise" not in ds.meta:
        raise DataError("the dataset has no injected noise to record (use inject_noise)")
    return {**{k: ds.meta["noise"][k] for k in ("rate", "seed", "count")},
            "num_pairs": len(ds),
            "parent_pairs": ds.meta.get("parent_pairs"),
            "noisy_pairs": torch.nonzero(~ds.clean).flatten().tolist(),
            "source_caption": ds.source_caption.tolist()}


def apply_noise_record(ds: PairDataset, record: dict[str, Any]) -> PairDataset:
    """Re-apply a saved :func:`noise_record` to the clean dataset it was made from.

    Example:
        >>> from mdw_kit.data import load_source
        >>> clean = load_source("shapes", num_images=20, seed=0)
        >>> noisy = inject_noise(clean, 0.5, seed=3)
        >>> apply_noise_record(clean, noise_record(noisy)).captions == noisy.captions
        True
    """
    try:
        source = torch.as_tensor(record["source_caption"], dtype=torch.long)
        noise = {k: record[k] for k in ("rate", "seed", "count")}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"malformed noise record: {e!r}; expected keys rate, seed, count, source_caption") from e
    if record.get("parent_pairs") is not None:
        raise DataError(f"the noise record was taken from a subset of a {record['parent_pairs']}-pair dataset; "
                        "record the whole noisy dataset to replay it")
    if len(source) != len(ds):
        raise DataError(f"noise record covers {len(source)} pairs but the dataset has {len(ds)}")
    if not bool(ds.clean.all()):
        raise DataError("apply the noise record to the clean dataset")
    if sorted(source.tolist()) != list(range(len(ds))):
        raise DataError("noise record field 'source_caption' is not a permutation of the pairs")
    moved = np.flatnonzero((source != torch.arange(len(ds))).numpy())
    if len(moved) and set(ds.pair_split[moved].tolist()) != {"train"}:
        raise DataError("noise record moves captions outside the train split")
    return _with_sources(ds, source, noise)
