"""Stages 2-4 of MDW: the distilled set, its correspondence, trajectory matching and CEO.

- :mod:`~mdw_kit.distill.synthetic`: :class:`DistilledSet` (images, texts, ``P~``, ``eta``; save / load).
- :mod:`~mdw_kit.distill.correspondence`: :class:`Correspondence` (identity / full / low-rank ``P~``).
- :mod:`~mdw_kit.distill.init`: stage 2, :func:`select_initial_pairs`.
- :mod:`~mdw_kit.distill.matching`: stage 3, :func:`match_loss` (unrolled or constant-memory gradients).
- :mod:`~mdw_kit.distill.ceo`: stage 4, :func:`region_maps` and :func:`modulate_pixel_grad`.
- :mod:`~mdw_kit.distill.distiller`: :class:`DistillConfig` and :class:`Distiller` (the loop), with
  :mod:`~mdw_kit.distill.checkpoint` (checkpoint and resume) and :mod:`~mdw_kit.distill.selection`
  (selection on validation).

Example:
    >>> from mdw_kit.distill import make_correspondence
    >>> make_correspondence("full", 3).matrix().shape
    torch.Size([3, 3])
"""
from mdw_kit.distill.ceo import modulate_pixel_grad, region_maps
from mdw_kit.distill.correspondence import Correspondence, make_correspondence
from mdw_kit.distill.distiller import DistillConfig, Distiller, TrajectoryList
from mdw_kit.distill.init import pair_embeddings, select_initial_pairs
from mdw_kit.distill.matching import MatchResult, calibrate_lr, match_loss, sample_batches, time_plain_steps
from mdw_kit.distill.synthetic import DistilledSet

__all__ = ["Correspondence", "make_correspondence", "DistilledSet", "select_initial_pairs", "pair_embeddings",
           "match_loss", "MatchResult", "sample_batches", "time_plain_steps", "calibrate_lr",
           "region_maps", "modulate_pixel_grad", "DistillConfig", "Distiller",
           "TrajectoryList"]
