"""Evaluation in one package.

- :mod:`~mdw_kit.evaluation.metrics`: TR/IR@K and R-sum (multi-caption aware, repeated texts as
  one candidate), embedding and scoring a split, tables;
- :mod:`~mdw_kit.evaluation.protocol`: the train-on-a-set protocol (fresh models per seed, the
  epoch chosen on validation, test once): :class:`EvalConfig`, :func:`evaluate_distilled`,
  :func:`fit_and_evaluate`;
- :mod:`~mdw_kit.evaluation.detection`: noise-detection metrics (AUROC, precision / recall of the flag);
- :mod:`~mdw_kit.evaluation.pointing`: the pointing game of region maps.

Names are loaded on first use (``from mdw_kit.evaluation import EvalConfig``), so the training
loop can import the metrics without importing the protocol that trains.

Example:
    >>> from mdw_kit.evaluation import retrieval_metrics, EvalConfig
    >>> import torch
    >>> retrieval_metrics(torch.eye(2), torch.arange(2))["R-sum"], EvalConfig().epochs
    (600.0, 150)
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "metrics": ["retrieval_metrics", "caption_groups", "embed_split", "embed_arrays", "evaluate_model",
                "evaluate_arrays", "evaluate_val", "evaluate_ensemble", "summarize", "format_table"],
    "protocol": ["EvalConfig", "evaluate_distilled", "fit_and_evaluate", "group_optimizer", "METRIC_KEYS"],
    "detection": ["auroc", "detection_metrics", "percentile_rank"],
    "pointing": ["resize_map", "named_labels", "map_peak", "pointing_game_hits", "pointing_game", "box_area_share",
                 "distilled_pointing_game"],
}
_MODULE = {name: mod for mod, names in _WHERE.items() for name in names}


def __getattr__(name: str) -> Any:
    if name in _MODULE:
        return getattr(importlib.import_module(f"mdw_kit.evaluation.{_MODULE[name]}"), name)
    raise AttributeError(f"module 'mdw_kit.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(_MODULE) + list(_WHERE))


__all__ = sorted(_MODULE)
