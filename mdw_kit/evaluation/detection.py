"""Noise-detection metrics: how well per-pair clean probabilities or noise scores find the mismatched pairs.

Used by the noise report, the dual-track benchmark and the noise explorer alike.

Example:
    >>> detection_metrics([0.9, 0.2, 0.7, 0.6], [True, False, True, False])["auroc"]
    1.0
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def _np(x: ArrayLike | None, dtype=np.float64) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


def auroc(scores: ArrayLike, positive: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` flags (ties averaged).

    Returns NaN when one class is empty.

    Example:
        >>> auroc([0.9, 0.2, 0.8, 0.1], [True, False, True, False])
        1.0
    """
    s, y = _np(scores), _np(positive, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``s`` (ascending), ties given their average rank."""
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    return (np.bincount(inv, weights=ranks) / counts)[inv]


def percentile_rank(values: ArrayLike) -> np.ndarray:
    """Each value's rank among all of them, scaled to ``[0, 1]`` (0 the lowest; ties averaged).

    Example:
        >>> percentile_rank([3.0, 1.0, 2.0, 2.0]).tolist()
        [1.0, 0.0, 0.5, 0.5]
    """
    v = _np(values)
    if v is None or len(v) == 0:
        return np.zeros(0)
    return (_average_ranks(v) - 1) / max(len(v) - 1, 1)


def detection_metrics(p_clean: ArrayLike, true_clean: ArrayLike, threshold: float = 0.5,
                      noise_score: ArrayLike | None = None) -> dict[str, float]:
    """AUROC of the noise score against the truly noisy pairs; precision / recall / F1 of the flag.

    ``noise_score`` (higher = noisier) defaults to ``1 - p_clean``; ``auroc_p_clean`` is always the
    AUROC of ``1 - p_clean``. The flag is ``p_clean < threshold`` either way.

    Example:
        >>> m = detection_metrics([0.9, 0.2, 0.7, 0.6], [True, False, True, False])
        >>> m["auroc"], m["precision"], m["recall"]
        (1.0, 1.0, 0.5)
    """
    p, clean = _np(p_clean), _np(true_clean, bool)
    if len(p) != len(clean):
        raise ValueError(f"p_clean has {len(p)} pairs but true_clean has {len(clean)}")
    noisy, flag = ~clean, p < threshold
    tp = int((flag & noisy).sum())
    prec = tp / int(flag.sum()) if flag.any() else float("nan")
    rec = tp / int(noisy.sum()) if noisy.any() else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    kept = ~flag
    auroc_p = auroc(1.0 - p, noisy)
    score = None if noise_score is None else _np(noise_score)
    if score is not None and len(score) != len(p):
        raise ValueError(f"noise_score has {len(score)} pairs but p_clean has {len(p)}")
    return {"auroc": auroc_p if score is None else auroc(score, noisy), "auroc_p_clean": auroc_p,
            "precision": prec, "recall": rec, "f1": f1,
            "true_residual_noise": float(noisy[kept].mean()) if kept.any() else float("nan"),
            "true_noise_rate": float(noisy.mean()) if len(noisy) else 0.0}


__all__ = ["auroc", "detection_metrics", "percentile_rank"]
