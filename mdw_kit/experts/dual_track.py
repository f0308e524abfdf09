"""Stage 1: dual-track collaborative learning, noise-robust expert training.

Two tracks A and B (different seeds, so different initialisations and data
orders) train on the noisy real pairs. During ``warmup_epochs`` both see every
pair with plain symmetric InfoNCE. From then on, after every epoch each track
scores every pair by its own per-pair loss, a two-component Gaussian mixture
turns the losses into clean probabilities (:mod:`mdw_kit.experts.gmm`), and
each track trains the next epoch on its PEER's verdict (cross supervision), so
neither confirms its own mistakes: ``"weight"`` weights each pair's loss by the
peer's clean probability, ``"select"`` keeps only the pairs the peer calls
clean (``p > threshold``; the others stay in the batch as negatives only).
``naive=True`` is plain training on all pairs through the same code path: the
naive experts of the MTT-VL / LoRS baselines (the pairs are still scored, so a
naive run also has a noise report).

Every epoch of every track goes through :func:`mdw_kit.train.train_contrastive`
(one epoch per call, same optimizer), so a naive one-track run equals plain
training with the same seed, and the saved parameters ``theta_0 .. theta_E``
(:func:`~mdw_kit.models.retrieval.get_flat` after every epoch) are the expert
trajectories of the buffer.

Keeping detection sharp to the end. Plain co-divide loses detection as both
models slowly memorise the mismatched pairs they still see. Here a pair called
noisy gets (near) zero positive weight, so it is not memorised after warm-up;
the clean probabilities are fitted on an exponential moving average of each
pair's loss across epochs (``loss_ema``), which removes epoch-to-epoch jitter.

Defaults, measured on openmoji at 50% injected noise (ConvNet-3, 32 px, MiniLM,
linear head; ``benchmarks/bench_dual_track.py``): see :class:`DualTrackConfig`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
    >>> def make(seed):
    ...     return RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
    >>> x, t = torch.rand(32, 3, 8, 8), torch.randn(32, 8)
    >>> res = train_dual_track(make, x, t, DualTrackConfig(epochs=3, warmup_epochs=1, batch_size=8,
    ...                                                    progress=False))
    >>> res.trajectories["A"].shape[0], sorted(res.p_clean)
    (4, ['A', 'B'])
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import torch
from torch import nn

from mdw_kit.config import ConfigMixin, delegate
from mdw_kit.experts.gmm import fit_clean_probability
from mdw_kit.evaluation.detection import detection_metrics, percentile_rank
from mdw_kit.experts.report import NoiseReport, report_from_scores
from mdw_kit.models.retrieval import get_flat
from mdw_kit.train import TRAIN_KEYS, TrainConfig, make_optimizer, per_pair_losses, train_contrastive
from mdw_kit.utils import pick_device, progress, seed_everything

MODES = ("weight", "select")
EXPERT_TRAIN = {"epochs": 20, "batch_size": 128, "lr": 0.03, "optimizer": "sgd", "momentum": 0.0}
TRACKS = ("A", "B")


@dataclass(init=False)
class DualTrackConfig(ConfigMixin):
    """Settings of dual-track collaborative learning (and of its naive counterpart).

    Attributes:
        train: the :class:`~mdw_kit.train.TrainConfig` of each track's epochs (its ``seed`` is
            replaced by ``seed_a`` / ``seed_b``). Its keys may be given at the top level
            (``DualTrackConfig(epochs=10, lr=0.03)``) and read there (``cfg.epochs``): ``epochs``
            is ``E``, the total epochs per track (trajectories hold ``E + 1`` states).
        warmup_epochs: epochs on all pairs before cross supervision starts.
        threshold: clean-probability threshold of ``"select"`` mode and of the noisy flag.
        mode: ``"weight"`` or ``"select"`` (see the module docstring).
        seed_a, seed_b: seeds of tracks A and B (initialisation and data order).
        num_tracks: 2, or 1 for a single naive track.
        naive: plain training on all pairs (no cross supervision).
        The default training, plain SGD at 0.03 (batches of 128, 20 epochs, no momentum), was chosen by measurement
            (openmoji, 50% noise, one seed): its trajectories are what SGD students can follow
            (100 pairs distilled from Adam experts scored R-sum 27-33, from SGD experts 52-70,
            against 47 for their random starting pairs), and its consensus detection AUROC
            stayed at 0.925 from epoch 4 to 10 (SGD at 0.1: 0.87).
        lr_after_warmup: learning-rate factor applied once warm-up ends (1.0 keeps it).
        loss_average: what the mixture is fitted on: ``"mean"``, each pair's mean loss over all
            scored epochs so far (from the end of warm-up; it keeps detection from decaying as
            the models memorise); ``"ema"``, an exponential moving average with ``loss_ema``;
            ``"last"``, this epoch's losses only.
        loss_ema: weight of the previous average in the ``"ema"`` average.
        min_weight: floor of the per-pair weights (0 keeps them as they are): in ``"weight"`` mode
            of the peer's clean probabilities, in ``"select"`` mode the weight of the pairs not
            kept (so they are still learned a little).
            Detection against expert quality (openmoji, 50% noise, 12 epochs, 3 seeds,
            ``benchmarks/results/dual_track{,_weight_floor}.json``): ``mode="weight",
            min_weight=0.1`` gives a consensus AUROC of 0.954 against 0.938 for the default
            ``"select"``, since clean pairs without close relatives are then learned instead of
            being excluded for good, but its experts score test R-sum 85.2 against 92.3, as they
            absorb some noise. Over six seeds at 30 epochs
            (``dual_track_epochs30_{weight005,weight002,weight001,keep45}_6seeds.json``):
            ``mode="weight"`` with ``min_weight`` 0.05 / 0.02 / 0.01 gives AUROC 0.956 / 0.953 /
            0.952 and experts 96.9 / 101.0 / 103.1 (naive 62.6); ``keep_fraction=0.45`` gives
            AUROC 0.939 and experts 104.5 (naive 62.9). ``mode="weight", min_weight=0.01`` at 30
            epochs is the one setting measured to give both AUROC >= 0.95 and experts >= naive
            + 40. The default is the setting the distillation tables were made with.
        keep_fraction: ``"select"`` mode only. ``None`` keeps the pairs with ``p > threshold``;
            a number in ``(0, 1]`` keeps that share of the pairs with the lowest noise score of
            the peer (its averaged loss rank), whatever the mixture says; ``"auto"`` keeps the
            share the peer's mixture estimates to be clean (the mean of its ``p``). The mixture's
            posterior is steep, so ``p > 0.5`` keeps only about a third of the pairs at 50% noise
            and leaves clean pairs without close relatives out for good. Measured (openmoji, 50%
            noise, 20 epochs, 3 seeds, ``benchmarks/results/dual_track_epochs20{,_keep45}.json``):
            0.45 gives expert test R-sum 98.8 and consensus AUROC 0.942 (98.6 and 0.941 rerun with
            two threads), against 97.4 and 0.939 for the threshold; inside the seed spread, so the
            default stays the threshold.
        chance_gate: the no-noise check of the mixture (``None`` turns it off): the high-loss
            component counts as mismatched pairs only when its mean averaged loss reaches
            ``chance_gate`` times the chance loss (``log N`` for ``"global"`` scoring, ``log`` of
            the batch size for ``"batch"``), since a wrong caption is fitted no better than
            chance; below that every pair is kept as clean. Measured on openmoji
            (EfficientNet-Lite0 64 px, 10 epochs): the high component's mean at the last epoch is
            0.77 x chance on clean data, 0.96 x at 20% noise and 1.11 x at 50% noise; without the
            check the mixture calls 38% of the clean pairs noisy. On small sets trained long the
            models memorise wrong captions below chance (``shapes``, 160 training pairs at 40% noise: 0.77 x), so the
            check is off by default; the ``default`` preset sets 0.85 for its regime.
        scoring: ``"global"``: each pair's loss against all pairs (:func:`global_pair_losses`);
            ``"batch"``: in fixed seeded mini-batches (:func:`~mdw_kit.train.per_pair_losses`).
        score_batch_size: chunk / mini-batch size of the scoring.
        progress: show a progress bar over epochs.
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(**EXPERT_TRAIN))
    warmup_epochs: int = 2
    threshold: float = 0.5
    mode: str = "select"
    seed_a: int = 0
    seed_b: int = 1
    num_tracks: int = 2
    naive: bool = False
    lr_after_warmup: float = 1.0
    loss_average: str = "mean"
    loss_ema: float = 0.5
    min_weight: float = 0.0
    keep_fraction: float | str | None = None
    chance_gate: float | None = None
    scoring: str = "global"
    score_batch_size: int = 256
    progress: bool = True

    _flat, _flat_skip = "train", ("seed",)  # each track's seed is seed_a / seed_b
    __init__ = ConfigMixin.flat_init

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"DualTrackConfig.train must be a TrainConfig, got {type(self.train).__name__}")
        if self.loss_average not in ("mean", "ema", "last"):
            raise ValueError("DualTrackConfig.loss_average must be 'mean', 'ema' or 'last', "
                             f"got {self.loss_average!r}")
        if self.scoring not in ("global", "batch"):
            raise ValueError(f"DualTrackConfig.scoring must be 'global' or 'batch', got {self.scoring!r}")
        if self.mode not in MODES:
            raise ValueError(f"DualTrackConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.num_tracks not in (1, 2) or (self.num_tracks == 1 and not self.naive):
            raise ValueError("DualTrackConfig.num_tracks must be 2, or 1 with naive=True "
                             f"(got num_tracks={self.num_tracks}, naive={self.naive})")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"DualTrackConfig needs 0 <= warmup_epochs <= epochs, got "
                             f"warmup_epochs={self.warmup_epochs}, epochs={self.epochs}")
        if not 0.0 <= self.loss_ema < 1.0 or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"DualTrackConfig needs 0 <= loss_ema < 1 and 0 < threshold < 1, got "
                             f"loss_ema={self.loss_ema}, threshold={self.threshold}")
        if not 0.0 <= self.min_weight < 1.0:
            raise ValueError(f"DualTrackConfig.min_weight must be in [0, 1), got {self.min_weight}")
        kf = self.keep_fraction
        if kf is not None and kf != "auto" and not (isinstance(kf, (int, float)) and 0.0 < kf <= 1.0):
            raise ValueError(f"DualTrackConfig.keep_fraction must be None, 'auto' or in (0, 1], got {kf!r}")
        if kf is not None and self.mode != "select":
            raise ValueError(f"DualTrackConfig.keep_fraction applies to mode='select' only, got mode={self.mode!r}")
        if self.chance_gate is not None and not self.chance_gate > 0:
            raise ValueError(f"DualTrackConfig.chance_gate must be None or > 0, got {self.chance_gate!r}")
        if self.seed_a == self.seed_b and self.num_tracks == 2:
            raise ValueError(f"tracks A and B need different seeds, both are {self.seed_a}")

    @property
    def tracks(self) -> tuple[str, ...]:
        """Track names: ``("A", "B")`` or ``("A",)``."""
        return TRACKS[: self.num_tracks]

    def seed(self, track: str) -> int:
        """Seed of ``track``."""
        return self.seed_a if track == "A" else self.seed_b

    def train_config(self, track: str) -> TrainConfig:
        """The :class:`TrainConfig` each epoch of ``track`` runs with (``train`` with the track's seed)."""
        return replace(self.train, seed=self.seed(track))


delegate(DualTrackConfig, "train", [n for n in TRAIN_KEYS if n != "seed"])



@dataclass
class DualTrackResult:
    """What dual-track training leaves behind.

    Attributes:
        config: the :class:`DualTrackConfig`.
        trajectories: track -> float32 ``[E + 1, P]`` (``theta_0 .. theta_E``).
        states: track -> final ``state_dict`` (CPU).
        p_clean: track -> {epoch: ``[N]`` clean probability fitted after that epoch}; the first
            key is the end of warm-up, the last the end of training.
        gmm: track -> {epoch: mixture info}.
        losses: track -> {epoch: ``[N]`` per-pair losses scored after that epoch (before the EMA)}.
        noise_rank: track -> {epoch: ``[N]`` percentile rank in ``[0, 1]`` of the averaged loss the
            mixture was fitted on (1 = highest loss)}: the continuous noise score that AUROC uses.
        detection: one dict per scored epoch: ``{"epoch", "A": metrics, "B": ..., "consensus": ...}``
            (only when the ground truth was given).
        history: track -> per-epoch training stats (``epoch, loss, lr, time, val``).
        true_clean: ground-truth flags when given.
        wall_time_s: total seconds.
    """

    config: DualTrackConfig
    trajectories: dict[str, torch.Tensor]
    states: dict[str, dict[str, torch.Tensor]]
    p_clean: dict[str, dict[int, torch.Tensor]]
    gmm: dict[str, dict[int, dict]]
    losses: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    noise_rank: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    detection: list[dict[str, Any]] = field(default_factory=list)
    history: dict[str, list[dict]] = field(default_factory=dict)
    true_clean: torch.Tensor | None = None
    wall_time_s: float = 0.0

    @property
    def warmup_epoch(self) -> int:
        """The epoch whose clean probabilities are the end-of-warm-up ones."""
        return min(self.p_clean[TRACKS[0]])

    @property
    def final_epoch(self) -> int:
        return max(self.p_clean[TRACKS[0]])

    def p_clean_at(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """Clean probabilities per track after ``epoch`` (default: the last)."""
        epoch = self.final_epoch if epoch is None else epoch
        if epoch not in self.p_clean[TRACKS[0]]:
            raise KeyError(f"no clean probabilities after epoch {epoch}; scored epochs: "
                           f"{sorted(self.p_clean[TRACKS[0]])}")
        return {t: v[epoch] for t, v in self.p_clean.items()}

    def report(self, epoch: int | None = None, captions: list[str] | None = None,
               image_ids: list[str] | None = None, meta: dict | None = None) -> NoiseReport:
        """The :class:`NoiseReport` of the clean probabilities after ``epoch`` (default: the last)."""
        p = self.p_clean_at(epoch)
        r = self.noise_rank_at(epoch)
        return report_from_scores(p["A"], p.get("B"), self.config.threshold, self.true_clean, captions,
                                  image_ids, dict(meta or {}, epoch=epoch or self.final_epoch,
                                                  config=self.config.to_dict()),
                                  noise_rank_a=r.get("A"), noise_rank_b=r.get("B"))

    def noise_rank_at(self, epoch: int | None = None) -> dict[str, torch.Tensor]:
        """Loss ranks per track after ``epoch`` (default: the last); empty if not recorded."""
        epoch = self.final_epoch if epoch is None else epoch
        return {t: v[epoch] for t, v in self.noise_rank.items() if epoch in v}

    def best_val_epoch(self, track: str = "A", key: str = "R-sum") -> int | None:
        """Epoch of the highest validation ``key`` of ``track`` (earliest on ties), if validated."""
        scored = [(h["val"][key], -h["epoch"]) for h in self.history.get(track, []) if h.get("val")]
        return -max(scored)[1] if scored else None


# ------------------------------------------------------------------ internals
@contextlib.contextmanager
def _quiet_inner_progress() -> Iterator[None]:
    """Silence the per-call bar of ``train_contrastive`` (this module shows one over epochs)."""
    old = os.environ.get("MDW_NO_PROGRESS")
    os.environ["MDW_NO_PROGRESS"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MDW_NO_PROGRESS", None)
        else:
            os.environ["MDW_NO_PROGRESS"] = old


@dataclass
class _Track:
    name: str
    model: nn.Module
    tcfg: TrainConfig
    opt: torch.optim.Optimizer
    trajectory: list[torch.Tensor] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    loss_avg: torch.Tensor | None = None
    scored: int = 0


def _make_track(name: str, model_fn: Callable[[int], nn.Module], cfg: DualTrackConfig) -> _Track:
    """Seed, build and place a track's model; ``theta_0`` is its first trajectory entry."""
    tcfg = cfg.train_config(name)
    seed_everything(tcfg.seed)
    model = model_fn(tcfg.seed).to(pick_device(cfg.device))
    track = _Track(name, model, tcfg, make_optimizer(model, tcfg))
    track.trajectory.append(get_flat(model).cpu().float().clone())
    return track


def _keep_by_rank(rank: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``fraction`` of pairs with the lowest noise rank (ties broken by index)."""
    k = max(1, min(len(rank), int(round(fraction * len(rank)))))
    keep = torch.zeros(len(rank), dtype=torch.bool)
    keep[torch.argsort(rank, stable=True)[:k]] = True
    return keep


def _peer_weights(p_peer: torch.Tensor, cfg: DualTrackConfig, rank_peer: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair loss weights a track trains with, from its peer's clean probabilities.

    Select mode falls back to the soft weights (with a warning) when the peer keeps almost no
    pair (fewer than 2, or than 1% of them), which would stall training.
    """
    if cfg.mode == "select" and cfg.keep_fraction is not None and rank_peer is not None:
        frac = float(p_peer.float().mean()) if cfg.keep_fraction == "auto" else float(cfg.keep_fraction)
        return _keep_by_rank(rank_peer, frac).float().clamp(min=cfg.min_weight)
    if cfg.mode == "select":
        keep = p_peer > cfg.threshold
        if int(keep.sum()) >= max(2, len(keep) // 100):
            return keep.float().clamp(min=cfg.min_weight)
        warnings.warn(f"select mode: the peer track calls only {int(keep.sum())} of {len(keep)} pairs clean "
                      f"(p > threshold={cfg.threshold}); training this epoch with the soft weights instead. "
                      "Lower the threshold or lengthen the warm-up.", stacklevel=3)
    return p_peer.float().clamp(min=cfg.min_weight, max=1.0)


def _train_epoch(track: _Track, epoch: int, images: torch.Tensor, text: torch.Tensor,
                 weights: torch.Tensor | None, val: Any) -> dict:
    """One epoch of ``track`` through :func:`train_contrastive`; records its state."""
    tcfg = replace(track.tcfg, epochs=epoch)
    use_val = val if val is not None and (epoch % tcfg.eval_every == 0 or epoch == track.tcfg.epochs) \
        else None
    with _quiet_inner_progress():
        stats = train_contrastive(track.model, images, text, tcfg, weights=weights, val=use_val,
                                  start_epoch=epoch - 1, optimizer=track.opt)[0]
    track.trajectory.append(get_flat(track.model).cpu().float().clone())
    track.history.append(stats)
    return stats


@torch.no_grad()
def global_pair_losses(model: nn.Module, images: torch.Tensor, text: torch.Tensor,
                       groups: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
    """Each pair's symmetric InfoNCE loss against ALL pairs (not a mini-batch): a stable noise score.

    Image ``i``'s image-to-text term is a softmax over all ``N`` captions, caption ``i``'s
    text-to-image term one over all ``N`` images, computed in row chunks (memory
    ``batch_size x N``). ``groups[i]`` (e.g. the image index of pair ``i``) marks pairs that share
    an image: their other captions and duplicate images are left out of each other's negatives.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> m = RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> global_pair_losses(m, torch.rand(10, 3, 8, 8), torch.randn(10, 8), batch_size=4).shape
        torch.Size([10])
    """
    from mdw_kit.evaluation.metrics import embed_arrays  # local import: evaluate imports train

    img, txt = embed_arrays(model, images, text, batch_size)
    n, inv_tau = int(img.shape[0]), 1.0 / float(getattr(model, "temperature", 1.0))
    i2t, pos = torch.empty(n), torch.empty(n)
    col_lse = torch.full((n,), -math.inf)
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n))
        s = (img[rows] @ txt.T) * inv_tau
        pos[rows] = s[torch.arange(len(rows)), rows]
        if groups is not None:
            same = (groups[rows][:, None] == groups[None, :]) & (rows[:, None] != torch.arange(n)[None, :])
            s = s.masked_fill(same, -math.inf)
        i2t[rows] = torch.logsumexp(s, dim=1) - pos[rows]
        col_lse = torch.logaddexp(col_lse, torch.logsumexp(s, dim=0))
    return 0.5 * (i2t + (col_lse - pos))


def _score(track: _Track, images: torch.Tensor, text: torch.Tensor, cfg: DualTrackConfig,
           groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
    """Per-pair losses of ``track``, the mixture's clean probability fitted on their average across
    epochs, the mixture info, and the average's percentile rank (the continuous noise score)."""
    if cfg.scoring == "global":
        losses = global_pair_losses(track.model, images, text, groups, cfg.score_batch_size)
    else:
        losses = per_pair_losses(track.model, images, text, batch_size=cfg.score_batch_size)
    track.scored += 1
    if track.loss_avg is None or cfg.loss_average == "last" or cfg.naive:
        track.loss_avg = losses
    elif cfg.loss_average == "mean":
        track.loss_avg = track.loss_avg + (losses - track.loss_avg) / track.scored
    else:
        track.loss_avg = cfg.loss_ema * track.loss_avg + (1 - cfg.loss_ema) * losses
    n = len(losses)
    chance = math.log(max(2, n if cfg.scoring == "global" else min(cfg.score_batch_size, n)))
    p, info = fit_clean_probability(track.loss_avg, chance_loss=chance, chance_gate=cfg.chance_gate)
    return losses, p, info, torch.from_numpy(percentile_rank(track.loss_avg))


def _detection(epoch: int, p: dict[str, torch.Tensor], rank: dict[str, torch.Tensor], clean: torch.Tensor,
               threshold: float) -> dict:
    """Detection metrics per track and of the consensus; AUROC on the loss ranks."""
    out: dict[str, Any] = {"epoch": epoch}
    for t, v in p.items():
        out[t] = detection_metrics(v, clean, threshold, rank[t])
    out["consensus"] = detection_metrics(torch.stack(list(p.values())).mean(0), clean, threshold,
                                         torch.stack(list(rank.values())).mean(0))
    return out


def _check_inputs(images: torch.Tensor, text: torch.Tensor, clean: torch.Tensor | None) -> None:
    n = int(images.shape[0])
    if int(text.shape[0]) != n:
        raise ValueError(f"train_text has {int(text.shape[0])} rows but train_images has {n}")
    if clean is not None and int(clean.numel()) != n:
        raise ValueError(f"clean has {int(clean.numel())} flags but there are {n} training pairs")


def _scored(epoch: int, cfg: DualTrackConfig) -> bool:
    """Pairs are scored after every epoch from the end of warm-up; naive runs (which never use
    the scores for training) only at the end of warm-up and at the end."""
    first = max(cfg.warmup_epochs, 1)
    return epoch in (first, cfg.epochs) if cfg.naive else epoch >= first


def _score_tracks(tracks: list[_Track], epoch: int, images: torch.Tensor, text: torch.Tensor,
                  res: "DualTrackResult", current: dict[str, torch.Tensor],
                  groups: torch.Tensor | None, current_rank: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Score every pair with every track; record losses, probabilities, mixture fits, detection."""
    cfg = res.config
    ranks: dict[str, torch.Tensor] = {}
    for tr in tracks:
        res.losses[tr.name][epoch], current[tr.name], res.gmm[tr.name][epoch], ranks[tr.name] = \
            _score(tr, images, text, cfg, groups)
        res.p_clean[tr.name][epoch] = current[tr.name]
        res.noise_rank.setdefault(tr.name, {})[epoch] = ranks[tr.name]
        current_rank[tr.name] = ranks[tr.name]
    info: dict[str, Any] = {"epoch": epoch, "p_clean": dict(current),
                            "losses": {t: res.losses[t][epoch] for t in current},
                            "gmm": {t: res.gmm[t][epoch] for t in current}}
    if res.true_clean is not None:
        res.detection.append(_detection(epoch, current, ranks, res.true_clean, cfg.threshold))
        info["detection"] = res.detection[-1]
    return info


# ------------------------------------------------------------------ driver
def train_dual_track(model_fn: Callable[[int], nn.Module], train_images: torch.Tensor,
                     train_text: torch.Tensor, cfg: DualTrackConfig, clean: torch.Tensor | None = None,
                     val: Any = None, callback: Callable[[str, int, nn.Module, dict], Any] | None = None,
                     epoch_callback: Callable[[int, dict], Any] | None = None,
                     groups: torch.Tensor | None = None) -> DualTrackResult:
    """Train two cross-supervised tracks (or naive ones) and record their trajectories.

    Args:
        model_fn: ``model_fn(seed)`` builds a fresh model (called right after seeding everything).
        train_images: ``[N, 3, H, W]`` uint8 or float pixels of the training pairs.
        train_text: ``[N, d]`` frozen caption embeddings.
        cfg: :class:`DualTrackConfig`.
        clean: optional ``[N]`` ground-truth clean flags, used only for detection metrics.
        val: optional validation split for :func:`train_contrastive` (``(PairDataset, text_emb)``
            or ``(pixels, text_emb, pair_image)``); its metrics land in ``history``.
        callback: ``callback(track, epoch, model, stats)`` after every epoch of every track.
        epoch_callback: ``callback(epoch, info)`` after every epoch once both tracks are done;
            ``info`` has ``p_clean``, ``losses`` and ``gmm`` (when scored) and ``detection`` (when
            the ground truth is known).
        groups: optional ``[N]`` image index of every pair (pairs sharing an image, as in
            Flickr30k / COCO, are not each other's negatives when scoring).

    Returns:
        a :class:`DualTrackResult`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> make = lambda s: RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> r = train_dual_track(make, torch.rand(16, 3, 8, 8), torch.randn(16, 8),
        ...                      DualTrackConfig(epochs=2, warmup_epochs=1, batch_size=8, progress=False))
        >>> sorted(r.p_clean["A"])
        [1, 2]
    """
    _check_inputs(train_images, train_text, clean)
    clean = None if clean is None else torch.as_tensor(clean, dtype=torch.bool).reshape(-1)
    groups = None if groups is None else torch.as_tensor(groups, dtype=torch.long).reshape(-1)
    t0 = time.perf_counter()
    tracks = [_make_track(t, model_fn, cfg) for t in cfg.tracks]
    res = DualTrackResult(cfg, {}, {}, {t: {} for t in cfg.tracks}, {t: {} for t in cfg.tracks},
                          losses={t: {} for t in cfg.tracks}, true_clean=clean)
    current: dict[str, torch.Tensor] = {}
    current_rank: dict[str, torch.Tensor] = {}
    for epoch in progress(range(1, cfg.epochs + 1), desc="dual-track" if not cfg.naive else "naive",
                          total=cfg.epochs, enabled=None if cfg.progress else False):
        if epoch == cfg.warmup_epochs + 1 and cfg.lr_after_warmup != 1.0:
            for tr in tracks:
                for g in tr.opt.param_groups:
                    g["lr"] *= cfg.lr_after_warmup
        for i, tr in enumerate(tracks):
            peer = tracks[(i + 1) % len(tracks)].name
            w = None if cfg.naive or not current else _peer_weights(current[peer], cfg, current_rank.get(peer))
            stats = _train_epoch(tr, epoch, train_images, train_text, w, val)
            if callback is not None:
                callback(tr.name, epoch, tr.model, stats)
        info = _score_tracks(tracks, epoch, train_images, train_text, res, current, groups,
                             current_rank) \
            if _scored(epoch, cfg) else {"epoch": epoch}
        if epoch_callback is not None:
            epoch_callback(epoch, info)
    for tr in tracks:
        res.trajectories[tr.name] = torch.stack(tr.trajectory)
        res.states[tr.name] = {k: v.detach().cpu().clone() for k, v in tr.model.state_dict().items()}
        res.history[tr.name] = tr.history
    res.wall_time_s = time.perf_counter() - t0
    last = [res.gmm[t][max(res.gmm[t])] for t in cfg.tracks if res.gmm[t]]
    if last and not cfg.naive and all(g.get("noise_free") for g in last):
        logging.getLogger(__name__).warning(
            "dual-track: no mismatched pairs found (the high-loss pairs' mean loss %.2f is below %.2f x the "
            "chance loss %.2f), so every pair is kept as clean; DualTrackConfig.chance_gate=None turns "
            "this check off", max(g["raw_means"][1] for g in last), cfg.chance_gate, last[0]["chance_loss"])
    return res


def summarize_detection(res: DualTrackResult) -> dict[str, dict[str, float]]:
    """Detection metrics at the end of warm-up and at the end of training (ground truth needed).

    Example:
        >>> summarize_detection.__name__
        'summarize_detection'
    """
    if not res.detection:
        raise ValueError("no detection metrics: pass the ground-truth clean flags to train_dual_track")
    by_epoch = {d["epoch"]: d for d in res.detection}
    return {"warmup": by_epoch[res.warmup_epoch], "final": by_epoch[res.final_epoch]}


def _train_rows(ds: Any, text_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the training pairs and of the validation pairs of ``ds``."""
    import numpy as np
    if int(text_emb.shape[0]) != len(ds):
        raise ValueError(f"text_emb has {int(text_emb.shape[0])} rows but the dataset has {len(ds)} captions")
    split = ds.pair_split
    return (torch.as_tensor(np.flatnonzero(split == "train")), torch.as_tensor(np.flatnonzero(split == "val")))


def run_noise_report(run_dir: str | Path, ds: Any, text_emb: torch.Tensor, model_cfg: Any,
                     cfg: DualTrackConfig) -> NoiseReport:
    """Dual-track training on the training pairs of ``ds``; save and return its :class:`NoiseReport`.

    Args:
        run_dir: folder for ``noise_report.json`` / ``.safetensors`` / ``.csv`` and ``dual_track.json``
            (detection per epoch, mixture fits, training history) and ``p_clean_history.safetensors``.
        ds: a ``PairDataset`` (its ``train`` pairs are scored; ``val`` pairs, if any, are validated on).
        text_emb: ``[len(ds), d]`` caption embeddings of ``ds``.
        model_cfg: a ``ModelConfig`` (``.build()``).
        cfg: :class:`DualTrackConfig`.

    Example:
        >>> run_noise_report.__name__  # see tests/test_dual_track.py for a full run
        'run_noise_report'
    """
    from mdw_kit.runs import save_tensors, write_json
    tr, va = _train_rows(ds, text_emb)
    if len(tr) < 2:
        raise ValueError(f"the dataset has {len(tr)} training pairs; dual-track training needs at least 2")
    val = (ds.split("val"), text_emb[va]) if len(va) else None
    clean = ds.clean[tr] if ds.noise_known else None
    res = train_dual_track(lambda s: model_cfg.build(), ds.pair_inputs(tr), text_emb[tr], cfg, clean=clean,
                           val=val, groups=ds.pair_image[tr])
    rep = res.report(captions=[ds.captions[int(i)] for i in tr],
                     image_ids=[ds.image_ids[int(ds.pair_image[i])] for i in tr],
                     meta={"data_fingerprint": ds.fingerprint(), "noise": ds.meta.get("noise")})
    rep.save(run_dir)
    write_json(Path(run_dir) / "dual_track.json", {
        "config": cfg.to_dict(), "warmup_epoch": res.warmup_epoch, "final_epoch": res.final_epoch,
        "end_of_warmup": res.report(epoch=res.warmup_epoch).summary(), "final": rep.summary(),
        "detection_per_epoch": res.detection, "gmm": res.gmm, "history": res.history,
        "wall_time_s": res.wall_time_s})
    save_tensors(Path(run_dir) / "p_clean_history.safetensors",
                 {f"{t}/{e}": v for t, d in res.p_clean.items() for e, v in d.items()})
    return rep


__all__ = ["run_noise_report", "DualTrackConfig", "DualTrackResult", "train_dual_track", "summarize_detection", "global_pair_losses", "MODES"]
