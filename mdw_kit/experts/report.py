"""The noise report: per-pair clean probabilities from two tracks, a flag, and a dataset summary.

Shaped like cleanlab's Datalab issues: every pair has a score in ``[0, 1]``
(``p_clean``, the consensus of the two tracks' clean probabilities), a flag
(``is_noisy``: ``p_clean < threshold``) and the dataset gets a summary
(estimated noise rate, pairs kept, estimated residual noise among the kept).
Where the noise was injected and so is known, the summary adds the detection
AUROC, precision, recall and F1 and the true residual noise of the kept pairs:
the "certifiable" figure set next to its estimate.

Example:
    >>> import tempfile, torch
    >>> rep = report_from_scores(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([0.7, 0.9, 0.3]),
    ...                          true_clean=torch.tensor([True, True, False]))
    >>> rep.summary()["kept"], rep.summary()["auroc"]
    (2, 1.0)
    >>> d = tempfile.mkdtemp(); _ = rep.save(d)
    >>> NoiseReport.load(d).summary() == rep.summary()
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mdw_kit.evaluation.detection import _np, auroc, detection_metrics  # noqa: F401  (auroc, detection_metrics: re-exported)
from mdw_kit.runs import ArtifactError, load_tensors, read_json, save_tensors, write_json

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


@dataclass
class NoiseReport:
    """Per-pair clean probabilities of tracks A and B, their consensus and a dataset summary.

    Attributes:
        p_clean_a, p_clean_b: ``[N]`` clean probabilities of each track (equal for one track).
        threshold: a pair is flagged noisy when its consensus ``p_clean < threshold``.
        true_clean: ``[N]`` ground truth where the noise was injected, else None.
        captions, image_ids: optional per-pair text for the table.
        meta: free-form provenance (data fingerprint, epochs, config).
        noise_rank_a, noise_rank_b: optional ``[N]`` percentile rank in ``[0, 1]`` of each track's
            (averaged) per-pair loss, 1 the highest. Where given, :attr:`noise_score` is their mean:
            a ranking that does not saturate as the mixture posterior does (many pairs get a clean
            probability of exactly 0 or 1), so AUROC and "sort by noisiness" use it.
    """

    p_clean_a: np.ndarray
    p_clean_b: np.ndarray
    threshold: float = 0.5
    true_clean: np.ndarray | None = None
    captions: list[str] | None = None
    image_ids: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    noise_rank_a: np.ndarray | None = None
    noise_rank_b: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.p_clean_a, self.p_clean_b = _np(self.p_clean_a), _np(self.p_clean_b)
        self.true_clean = _np(self.true_clean, bool)
        self.noise_rank_a, self.noise_rank_b = _np(self.noise_rank_a), _np(self.noise_rank_b)
        if (self.noise_rank_a is None) != (self.noise_rank_b is None):
            raise ValueError("NoiseReport needs both noise_rank_a and noise_rank_b, or neither")
        n = len(self.p_clean_a)
        for name, v in (("p_clean_b", self.p_clean_b), ("true_clean", self.true_clean),
                        ("captions", self.captions), ("image_ids", self.image_ids),
                        ("noise_rank_a", self.noise_rank_a), ("noise_rank_b", self.noise_rank_b)):
            if v is not None and len(v) != n:
                raise ValueError(f"NoiseReport field '{name}' has {len(v)} rows; p_clean_a has {n}")

    # ------------------------------------------------------------- per pair
    @property
    def p_clean(self) -> np.ndarray:
        """Consensus clean probability (mean of the two tracks)."""
        return 0.5 * (self.p_clean_a + self.p_clean_b)

    @property
    def noise_score(self) -> np.ndarray:
        """Per-pair noisiness, higher = noisier: the mean loss rank of the tracks where known, else
        ``1 - p_clean``."""
        if self.noise_rank_a is not None:
            return 0.5 * (self.noise_rank_a + self.noise_rank_b)
        return 1.0 - self.p_clean

    @property
    def is_noisy(self) -> np.ndarray:
        """Flag: consensus clean probability below the threshold."""
        return self.p_clean < self.threshold

    @property
    def kept(self) -> np.ndarray:
        """Pairs not flagged."""
        return ~self.is_noisy

    def __len__(self) -> int:
        return len(self.p_clean_a)

    def to_dataframe(self):
        """One row per pair: ``pair, p_clean_A, p_clean_B, p_clean, noise_score, is_noisy[, true_clean]``."""
        import pandas as pd
        cols: dict[str, Any] = {"pair": np.arange(len(self)), "p_clean_A": self.p_clean_a,
                                "p_clean_B": self.p_clean_b, "p_clean": self.p_clean,
                                "noise_score": self.noise_score, "is_noisy": self.is_noisy}
        if self.true_clean is not None:
            cols["true_clean"] = self.true_clean
        if self.noise_rank_a is not None:
            cols["noise_rank_A"], cols["noise_rank_B"] = self.noise_rank_a, self.noise_rank_b
        if self.image_ids is not None:
            cols["image_id"] = self.image_ids
        if self.captions is not None:
            cols["caption"] = self.captions
        return pd.DataFrame(cols)

    # ------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """Dataset-level figures; detection figures only where the ground truth is known."""
        p, kept = self.p_clean, self.kept
        out: dict[str, Any] = {
            "num_pairs": len(self), "threshold": self.threshold,
            "estimated_noise_rate": float(self.is_noisy.mean()) if len(self) else 0.0,
            "mean_noise_score": float((1 - p).mean()) if len(self) else 0.0,
            "kept": int(kept.sum()),
            "estimated_residual_noise": float((1 - p[kept]).mean()) if kept.any() else float("nan"),
            "track_agreement": float(((self.p_clean_a < self.threshold) ==
                                      (self.p_clean_b < self.threshold)).mean()) if len(self) else 1.0,
            "noise_known": self.true_clean is not None}
        if self.true_clean is not None:
            out.update(detection_metrics(p, self.true_clean, self.threshold, self.noise_score))
            ranked = self.noise_rank_a is not None
            out["auroc_A"] = auroc(self.noise_rank_a if ranked else 1 - self.p_clean_a, ~self.true_clean)
            out["auroc_B"] = auroc(self.noise_rank_b if ranked else 1 - self.p_clean_b, ~self.true_clean)
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}

    # ---------------------------------------------------------- persistence
    def save(self, run_dir: str | Path) -> Path:
        """Write ``noise_report.json`` (summary + meta), ``noise_report.safetensors`` and a CSV table."""
        run_dir = Path(run_dir)
        tensors = {"p_clean_A": torch.from_numpy(self.p_clean_a.astype(np.float64)),
                   "p_clean_B": torch.from_numpy(self.p_clean_b.astype(np.float64))}
        if self.true_clean is not None:
            tensors["true_clean"] = torch.from_numpy(self.true_clean.astype(np.uint8))
        if self.noise_rank_a is not None:
            tensors["noise_rank_A"] = torch.from_numpy(self.noise_rank_a.astype(np.float64))
            tensors["noise_rank_B"] = torch.from_numpy(self.noise_rank_b.astype(np.float64))
        save_tensors(run_dir / "noise_report.safetensors", tensors, {"threshold": self.threshold})
        write_json(run_dir / "noise_report.json", {
            "summary": self.summary(), "threshold": self.threshold, "meta": self.meta,
            "captions": self.captions, "image_ids": self.image_ids,
            "files": {"tensors": "noise_report.safetensors", "table": "noise_report.csv"}})
        self.to_dataframe().to_csv(run_dir / "noise_report.csv", index=False)
        return run_dir / "noise_report.json"

    @classmethod
    def load(cls, run_dir: str | Path) -> "NoiseReport":
        """Read a report written by :meth:`save`; a missing or corrupt file is an ArtifactError."""
        run_dir = Path(run_dir)
        doc = read_json(run_dir / "noise_report.json")
        tensors, _ = load_tensors(run_dir / "noise_report.safetensors")
        for key in ("p_clean_A", "p_clean_B"):
            if key not in tensors:
                raise ArtifactError(f"{run_dir / 'noise_report.safetensors'}: tensor '{key}' is missing")
        tc = tensors.get("true_clean")
        return cls(tensors["p_clean_A"].numpy(), tensors["p_clean_B"].numpy(), float(doc["threshold"]),
                   None if tc is None else tc.numpy().astype(bool), doc.get("captions"),
                   doc.get("image_ids"), doc.get("meta") or {},
                   _np(tensors.get("noise_rank_A")), _np(tensors.get("noise_rank_B")))


def report_from_scores(p_clean_a: ArrayLike, p_clean_b: ArrayLike | None = None, threshold: float = 0.5,
                       true_clean: ArrayLike | None = None, captions: list[str] | None = None,
                       image_ids: list[str] | None = None, meta: dict[str, Any] | None = None,
                       noise_rank_a: ArrayLike | None = None, noise_rank_b: ArrayLike | None = None) -> NoiseReport:
    """Build a :class:`NoiseReport`; with one track, ``p_clean_b`` defaults to ``p_clean_a`` (and
    ``noise_rank_b`` to ``noise_rank_a``).

    Example:
        >>> report_from_scores([0.9, 0.1]).summary()["estimated_noise_rate"]
        0.5
    """
    a = _np(p_clean_a)
    b = a.copy() if p_clean_b is None else _np(p_clean_b)
    ra = _np(noise_rank_a)
    rb = (None if ra is None else ra.copy()) if noise_rank_b is None else _np(noise_rank_b)
    return NoiseReport(a, b, float(threshold), _np(true_clean, bool), captions, image_ids, dict(meta or {}),
                       ra, rb)
