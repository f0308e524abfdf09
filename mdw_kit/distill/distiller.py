"""The MDW distillation loop (stages 2-4): initialise, match trajectories, modulate pixels.

Each iteration samples an expert trajectory and a start epoch ``t`` (``t <
max_start_epoch``, ``t + segment_epochs <= E``), computes the matching loss of
``syn_steps`` student steps (:func:`~mdw_kit.distill.matching.match_loss`),
backpropagates to images, texts, ``P~`` and ``eta``, modulates the pixel
gradient with the CEO region maps (:mod:`mdw_kit.distill.ceo`; recomputed every
``ceo_every`` iterations) and steps the optimisers. Pixels use SGD with momentum
(as MTT / LoRS) on the gradient divided by its mean absolute value: the step is
proportional to the (modulated) gradient, so CEO's "mean pixel step unchanged,
discriminative regions move more" holds (Adam would undo a per-pixel scaling),
and ``lr_img`` does not depend on the loss scale. Texts, ``P~`` logits and
``log eta`` use Adam (scale-free whatever the text encoder's embedding norm).
Pixels are clamped to ``[0, 1]`` after each step (``clamp_pixels``).

Safety: a non-finite loss or gradient, non-finite parameters, or a non-finite /
non-positive learning rate is caught, logged (``log.txt`` and the ``event`` of
the iteration's stats), and recovered from by reverting to the last good state
and halving the image and text step sizes; after ``max_recoveries`` the run
stops with :class:`FloatingPointError`. Nothing bad is silently continued.

Selection on validation (``select_every > 0``, off by default; :mod:`mdw_kit.distill.selection`): the set is scored at the
start, every ``select_every`` iterations and at the end by the best validation R-sum of fresh
models trained on it (:meth:`Distiller.validation_rsum`), and the best check is returned (the
start included). The scores are in the history (``"val/R-sum"``), the summary and the set's
``meta["selection"]``; the best copy travels with the checkpoint, so a resumed run selects as
an uninterrupted one.

Resume (:mod:`mdw_kit.distill.checkpoint`): with a ``run_dir``, ``checkpoints/distill.safetensors`` (distilled set,
optimiser state, RNG state, CEO maps; JSON header with iteration, step sizes and
history) is written atomically every ``checkpoint_every`` iterations; a new
:class:`Distiller` on the same folder continues from it, so a kill loses at most
one interval and the result equals an uninterrupted run. The final set is saved
to ``artifacts/distilled/`` (see :meth:`DistilledSet.save`), with region maps
every ``save_maps_every`` iterations for the region viewer.

Example:
    >>> import torch
    >>> from mdw_kit.models import build_model
    >>> from mdw_kit.models.retrieval import get_flat
    >>> m = build_model("convnet3", text_dim=16, image_size=32)
    >>> s = get_flat(m); traj = torch.stack([s + 0.01 * i * torch.randn_like(s) for i in range(4)])
    >>> cfg = DistillConfig(num_pairs=8, iterations=2, syn_steps=2, segment_epochs=1, max_start_epoch=2,
    ...                     batch_syn=4, lr_init=0.01, progress=False)
    >>> syn = Distiller(cfg, [traj], m, torch.rand(20, 3, 32, 32), torch.randn(20, 16)).run()
    >>> syn.num_pairs
    8
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from mdw_kit.distill.augment import augment, total_variation
from mdw_kit.distill.ceo import DEFAULT_CLIP, gaussian_blur, modulate_pixel_grad, region_maps
from mdw_kit.distill.correspondence import FORMS, OFF_SHARE, make_correspondence, similarity_prior
from mdw_kit.distill.init import pair_embeddings, select_initial_pairs
from mdw_kit.distill.matching import MODES, calibrate_lr, match_loss, sample_batches, tower_groups
from mdw_kit.distill.synthetic import LR_GROUPS, DistilledSet
from mdw_kit.config import ConfigMixin
from mdw_kit.models.retrieval import set_flat
from mdw_kit.distill.checkpoint import CheckpointResume
from mdw_kit.distill.selection import ValidationSelection
from mdw_kit.runs import ArtifactError, RunDir
from mdw_kit.utils import pick_device, progress

log = logging.getLogger(__name__)
ARTIFACT = "artifacts/distilled"
# Config fields a resumed run may change (they do not alter the result of the iterations done).


@dataclass
class DistillConfig(ConfigMixin):
    """Settings of one distillation run.

    Attributes:
        num_pairs: ``M``, the budget of synthetic pairs.
        iterations: outer iterations. A larger set needs more: in the default regime at 50% noise
            (``benchmarks/results/tune_noise50_mdw_M200_iterations300.json``) 200 pairs scored
            validation R-sum 119.2 with 300 iterations against 112.6 with the preset's 150, and 500
            pairs 124.0 with 600 against 111.5 (``tune_noise50_mdw_M500_iterations600.json``).
        iterations_per_100_pairs: when > 0, sets ``iterations`` to this many per 100 pairs of the
            budget (rounded up), but at least ``min_iterations``, so one setting serves every
            budget; the default preset uses 150 with a floor of 300 (300 / 300 / 750 iterations at
            100 / 200 / 500 pairs). 0 keeps ``iterations``. An explicit ``iterations`` override of
            a preset drops the preset's per-100 setting and its floor (:func:`merge_iterations`).
        min_iterations: the floor of ``iterations_per_100_pairs`` (0: none). Small sets need more
            iterations than the per-100 rule gives: at 100 pairs, 300 iterations instead of 150
            scored validation R-sum 107.6 against 101.0 over 5 distillation seeds
            (``benchmarks/results/iterations300_5seeds_noise50_M100.json``).
        syn_steps: ``N`` student steps per iteration.
        segment_epochs: ``D``, the length in expert epochs of the matched trajectory segment
            (``theta_t`` to ``theta_{t+D}``); not a training epoch count (saved configs that call
            it ``expert_epochs`` still load).
        max_start_epoch: start epochs are drawn from ``[0, max_start_epoch)``. Early epochs
            carry most of what a small set can teach; 5 with ``lr_img`` 0.01 scored R-sum 52.5
            against 49.4 for 8 with 0.005 (openmoji clean, 100 pairs, 150 iterations, one run).
        batch_syn: synthetic pairs per student step.
        lr_img: SGD step size of the pixels (momentum ``momentum``). With ``normalize_pixel_grad``
            the pixel gradient is first divided by its mean absolute value, so ``lr_img`` is the
            mean absolute pixel change of a step (before momentum), whatever the loss scale.
        lr_txt, lr_corr, lr_lr: Adam step sizes of the texts, ``P~`` logits and ``log eta``.
        lr_init: initial student rate ``eta`` (``None``: calibrated on the buffer, see
            :func:`~mdw_kit.distill.matching.calibrate_lr`).
        corr, corr_rank, corr_alpha: correspondence kind (``identity`` / ``full`` / ``lowrank``).
        corr_form, corr_off_share: how logits become ``P~`` (``"exp"``: positive masses the loss
            normalises, a softmax; ``"sigmoid"``: probabilities) and, for ``"exp"``, the share of a
            row's normalised mass off the diagonal at the start (see
            :mod:`mdw_kit.distill.correspondence`). The matching lowers that share from where it
            starts; with ``lr_corr`` 0.2 it also learns more structure. One seed, 60 iterations,
            100 pairs of ``shapes`` (64 px, 50% noise, EfficientNet-Lite0 frozen): start share 0.02 /
            ``lr_corr`` 0.05 ended at 1.2% off the diagonal, scenes sharing an object 1.20x those
            sharing none; 0.1 / 0.05: 4.7%, 1.18x; 0.1 / 0.2: 6.6%, 2.33x (lower matching loss,
            0.845 against 0.874); the old sigmoid form (3.3% at the start): 2.5%, 1.18x.
        corr_prior_scale: start ``P~`` from the experts' correspondence (0 = off: the off-diagonal
            share is spread evenly). The logits of the starting images against the starting texts,
            averaged over the last epoch of every expert trajectory and multiplied by this, become
            a fixed prior of the logits (:func:`~mdw_kit.distill.correspondence.similarity_prior`):
            each row keeps its ``corr_off_share`` off the diagonal but gives it to the texts the
            experts match with the image. Needs ``corr`` ``full`` or ``lowrank`` and form ``exp``.
            The method ``mdw`` (and its ablations with a learnable ``P~``) sets
            :data:`~mdw_kit.distill.methods.MDW_PRIOR`; a bare ``DistillConfig`` has none.
        ceo_beta, ceo_k, ceo_every, ceo_clip, ceo_method: CEO strength (0 = off), top-k texts per
            image, map refresh interval, clip of the pixel weights, map method (see
            :func:`~mdw_kit.distill.ceo.region_maps`).
        ceo_stage: the feature map the Grad-CAM maps read (``"auto"``: the tower's default; see
            :mod:`mdw_kit.distill.feature_maps`).
        mode: ``"unroll"`` or ``"constant_memory"``.
        init, clean_threshold: stage-2 selection method and clean-probability threshold.
        clamp_pixels: clamp images to ``[0, 1]`` after each step.
        normalize_pixel_grad: scale-free pixel steps (see ``lr_img``).
        pixel_grad_blur: Gaussian blur (sd in pixels) of the pixel gradient before the step, so
            the pixels change in smooth patches instead of high-frequency patterns (0 = off).
        augment_strength: differentiable augmentation of the synthetic images inside the matching
            (DSA-style; :func:`mdw_kit.distill.augment.augment`), fresh each iteration (0 = off;
            strength 1 measured worse on readability and R-sum, see that module).
        tv_weight: weight of the total-variation penalty of the images added to the matching loss
            (:func:`mdw_kit.distill.augment.total_variation`; 0 = off).
        select_every: choose the returned set on validation data: every this many iterations (and
            at the start and the end) train ``select_seeds`` fresh models for ``select_epochs``
            epochs on the current set, score their best validation R-sum, and at the end return
            the set of the best check (the start included, so distillation never returns a set
            that validates worse than the real pairs it started from). 0 (the default) = off,
            return the last set. Needs ``val`` in :class:`Distiller`. ``select_epochs`` defaults to
            the evaluation protocol's 150 epochs: real starting pairs reach their best validation
            epoch late (60-100 at 500 pairs), distilled sets early (about 10), so shorter checks
            favour the distilled sets.
        select_start_pairs: at every check also score a second candidate, the current
            correspondence and student rates on the *starting* pixels and texts, so the returned
            set may keep what was learned about how to train on the pairs while dropping learned
            pixels and texts that do not generalise (doubles the cost of a check). Measured
            (openmoji strict split, 50% noise, 500 pairs, 3 seeds): 83.5 against 71.1 for the
            last set, which plain selection also kept (``benchmarks/results/``
            ``distill_noise50_budget500_select_val{,_start_pairs}.json``). Off by default.
        seed: seeds initial selection, sampling and batches.
        checkpoint_every, save_maps_every: intervals (iterations); 0 disables.
        max_recoveries: how many NaN recoveries before giving up.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...; progress: show a progress bar.

    Example:
        >>> DistillConfig.from_dict(DistillConfig(num_pairs=10).to_dict()).num_pairs
        10
    """

    num_pairs: int = 100
    iterations: int = 500
    iterations_per_100_pairs: int = 0
    min_iterations: int = 0
    syn_steps: int = 10
    segment_epochs: int = 2
    max_start_epoch: int = 5
    batch_syn: int = 50
    lr_img: float = 0.01
    lr_txt: float = 0.002
    lr_corr: float = 0.2
    lr_lr: float = 0.01
    lr_init: float | None = None
    momentum: float = 0.5
    corr: str = "full"
    corr_rank: int = 10
    corr_alpha: float = 1.0
    corr_form: str = "exp"
    corr_off_share: float = OFF_SHARE
    corr_prior_scale: float = 0.0
    ceo_beta: float = 0.5
    ceo_k: int = 3
    ceo_every: int = 10
    ceo_clip: tuple[float, float] = DEFAULT_CLIP
    ceo_method: str = "auto"
    ceo_stage: str | int = "auto"
    mode: str = "unroll"
    init: str = "random"
    clean_threshold: float = 0.5
    clamp_pixels: bool = True
    normalize_pixel_grad: bool = True
    pixel_grad_blur: float = 0.0
    augment_strength: float = 0.0
    tv_weight: float = 0.0
    select_every: int = 0
    select_epochs: int = 150
    select_seeds: int = 1
    select_start_pairs: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    save_maps_every: int = 50
    max_recoveries: int = 10
    device: str = "auto"
    progress: bool = True

    _renamed = {"expert_epochs": "segment_epochs"}  # configs saved under the old name still load

    def __post_init__(self) -> None:
        self.ceo_clip = tuple(float(c) for c in self.ceo_clip)
        if self.iterations_per_100_pairs < 0:
            raise ValueError("DistillConfig.iterations_per_100_pairs must be >= 0 (0 keeps iterations), "
                             f"got {self.iterations_per_100_pairs}")
        if self.min_iterations < 0:
            raise ValueError(f"DistillConfig.min_iterations must be >= 0 (0: no floor), got {self.min_iterations}")
        if self.iterations_per_100_pairs > 0:
            self.iterations = max(1, self.min_iterations,
                                  math.ceil(self.num_pairs * self.iterations_per_100_pairs / 100))
        if self.mode not in MODES:
            raise ValueError(f"DistillConfig.mode must be one of {MODES}, got {self.mode!r}")
        bad = [n for n in ("num_pairs", "iterations", "syn_steps", "segment_epochs", "max_start_epoch",
                           "batch_syn", "ceo_k", "ceo_every", "select_epochs", "select_seeds")
               if getattr(self, n) < 1]
        if self.select_every < 0:
            bad.append("select_every")
        bad += [n for n in ("lr_img", "lr_txt", "lr_corr", "lr_lr") if not getattr(self, n) > 0]
        bad += [n for n in ("pixel_grad_blur", "augment_strength", "tv_weight") if not getattr(self, n) >= 0]
        if self.corr_form not in FORMS or not 0 < self.corr_off_share < 1:
            bad.append("corr_form/corr_off_share")
        if not (math.isfinite(self.corr_prior_scale) and self.corr_prior_scale >= 0):
            bad.append("corr_prior_scale")
        elif self.corr_prior_scale > 0 and (self.corr == "identity" or self.corr_form != "exp"):
            raise ValueError(f"DistillConfig.corr_prior_scale > 0 needs corr 'full' or 'lowrank' and corr_form "
                             f"'exp', got corr {self.corr!r}, corr_form {self.corr_form!r}")
        if self.lr_init is not None and not self.lr_init > 0:
            bad.append("lr_init")
        if self.batch_syn < 2 or self.ceo_beta < 0 or not 0 <= self.ceo_clip[0] <= 1 <= self.ceo_clip[1]:
            bad.append("batch_syn/ceo_beta/ceo_clip")
        if bad:
            raise ValueError(f"DistillConfig: invalid values for {bad}: {self.to_dict()}")


class TrajectoryList:
    """A buffer stand-in over in-memory trajectories ``[E + 1, P]`` (tests, notebooks).

    Example:
        >>> import torch
        >>> TrajectoryList([torch.zeros(3, 5)]).num_epochs
        2
    """

    def __init__(self, trajectories: Sequence[torch.Tensor], model_config: dict | None = None):
        if not trajectories:
            raise ValueError("need at least one trajectory")
        self._t = [t.float() for t in trajectories]
        if len({tuple(t.shape) for t in self._t}) != 1 or self._t[0].ndim != 2:
            raise ValueError(f"trajectories must all be [E + 1, P]; got {[list(t.shape) for t in self._t]}")
        self.index = {"model_config": model_config}

    @property
    def num_trajectories(self) -> int:
        return len(self._t)

    @property
    def num_epochs(self) -> int:
        return int(self._t[0].shape[0] - 1)

    def trajectory(self, i: int) -> torch.Tensor:
        return self._t[i]


def merge_iterations(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base`` (DistillConfig fields), where an explicit ``iterations`` in
    ``over`` also drops ``base``'s ``iterations_per_100_pairs`` and ``min_iterations``: a count
    asked for is the count run.

    Example:
        >>> merge_iterations({"iterations_per_100_pairs": 150, "min_iterations": 300, "lr_img": 0.003},
        ...                  {"iterations": 40})
        {'lr_img': 0.003, 'iterations': 40}
    """
    out = {**base, **over}
    if "iterations" in over and "iterations_per_100_pairs" not in over:
        out.pop("iterations_per_100_pairs", None)
        if "min_iterations" not in over:
            out.pop("min_iterations", None)
    return out


def _as_buffer(buffer: Any) -> Any:
    if isinstance(buffer, (list, tuple)):
        return TrajectoryList(buffer)
    if not hasattr(buffer, "trajectory") or not hasattr(buffer, "num_trajectories"):
        raise TypeError("buffer must be an ExpertBuffer (trajectory(i), num_trajectories) or a list of "
                        f"[E + 1, P] tensors, got {type(buffer).__name__}")
    return buffer


def _as_model(model_cfg: Any, buffer: Any) -> nn.Module:
    if isinstance(model_cfg, nn.Module):
        return copy.deepcopy(model_cfg)
    from mdw_kit.models.towers import ModelConfig
    if model_cfg is None:
        model_cfg = getattr(buffer, "index", {}).get("model_config")
        if model_cfg is None:
            raise ValueError("no model_cfg given and the buffer's index has no 'model_config'")
    if isinstance(model_cfg, dict):
        model_cfg = ModelConfig.from_dict(model_cfg)
    return model_cfg.build()


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Distiller(CheckpointResume, ValidationSelection):
    """Runs MDW distillation; see the module docstring.

    Args:
        cfg: :class:`DistillConfig`.
        buffer: an :class:`~mdw_kit.experts.buffer.ExpertBuffer` or a list of trajectories.
        model_cfg: a ``ModelConfig`` (or its dict, or a built model); ``None``: the buffer's.
        real_images: ``[N, 3, H, W]`` training pixels (uint8, or float in ``[0, 1]``), one per pair.
        real_text: ``[N, d]`` frozen caption embeddings of the same pairs.
        p_clean: ``[N]`` consensus clean probabilities (default: the buffer's, else all clean).
        run_dir: folder for checkpoints, log and the final artifact (``None``: in memory only).
        callback: ``callback(iteration, stats)`` after each iteration (live widgets).
        val: ``(PairDataset split, text_emb)`` validation data for ``cfg.select_every``.
    """

    def __init__(self, cfg: DistillConfig, buffer: Any, model_cfg: Any, real_images: torch.Tensor,
                 real_text: torch.Tensor, p_clean: torch.Tensor | None = None,
                 run_dir: str | Path | RunDir | None = None,
                 callback: Callable[[int, dict], Any] | None = None, val: Any = None):
        self.cfg, self.callback, self.val = cfg, callback, val
        if cfg.select_every and val is None:
            raise ValueError("DistillConfig.select_every > 0 chooses the set on validation data: pass val="
                             "(split, text_emb) to Distiller (e.g. data.val_split())")
        self.buffer = _as_buffer(buffer)
        self.device = pick_device(cfg.device)
        self.model = _as_model(model_cfg, self.buffer).to(self.device)
        self.groups = tower_groups(self.model).to(self.device)
        self.run_dir = run_dir if isinstance(run_dir, RunDir) or run_dir is None else RunDir(run_dir)
        self._check_data(real_images, real_text)
        self.real_images, self.real_text = real_images, real_text
        if p_clean is None and hasattr(self.buffer, "consensus_p_clean"):
            try:
                p_clean = self.buffer.consensus_p_clean
            except ArtifactError:
                p_clean = None
        self.p_clean = p_clean
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.history: list[dict] = []
        self.iteration, self.recoveries = 0, 0
        self.ceo_maps: torch.Tensor | None = None
        self._maps_cache: tuple | None = None
        self.syn: DistilledSet | None = None
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self._good: dict | None = None
        self.selection: dict[str, Any] = {"scores": [], "best_iteration": None, "best_val": None}
        self._best: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------ checks
    def _check_data(self, images: torch.Tensor, text: torch.Tensor) -> None:
        E = self.num_epochs
        if self.cfg.segment_epochs > E:
            raise ValueError(f"segment_epochs={self.cfg.segment_epochs} exceeds the trajectories' {E} epochs")
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        if self.buffer.trajectory(0).shape[1] != n:
            raise ArtifactError(f"trajectories hold {self.buffer.trajectory(0).shape[1]} parameters; "
                                f"the model has {n} trainable ones: wrong model_cfg for this buffer?")
        if images.ndim != 4 or len(images) != len(text) or len(images) < self.cfg.num_pairs:
            raise ValueError(f"need real_images [N, 3, H, W] and real_text [N, d] with N >= num_pairs="
                             f"{self.cfg.num_pairs}; got {list(images.shape)} and {list(text.shape)}")

    @property
    def num_epochs(self) -> int:
        return int(self.buffer.trajectory(0).shape[0] - 1)

    # ------------------------------------------------------------ setup
    def initialise(self) -> DistilledSet:
        """Stage 2: pick the starting pairs, build the set, the optimisers and the student rates."""
        cfg = self.cfg
        emb = pair_embeddings(self.real_images, self.real_text)
        idx = select_initial_pairs(self.p_clean, emb, cfg.num_pairs, cfg.init, cfg.clean_threshold, cfg.seed)
        meta = {"config": cfg.to_dict(), "model_config": self._model_config_dict(),
                "init": cfg.init, "num_real_pairs": int(len(self.real_images))}
        syn = DistilledSet.from_pairs(self.real_images, self.real_text, idx, corr=cfg.corr, rank=cfg.corr_rank,
                                      alpha=cfg.corr_alpha, lr_init=cfg.lr_init or 0.01, meta=meta,
                                      corr_kw={"form": cfg.corr_form, "off_share": cfg.corr_off_share})
        self.syn = syn.to(self.device)
        if cfg.corr_prior_scale > 0:
            self.syn.corr = make_correspondence(
                cfg.corr, cfg.num_pairs, rank=cfg.corr_rank, alpha=cfg.corr_alpha, form=cfg.corr_form,
                off_share=cfg.corr_off_share, prior=similarity_prior(self.expert_scores(), cfg.corr_prior_scale)
            ).to(self.device)
        if cfg.lr_init is None:
            lrs = calibrate_lr(self.model, self.syn, self._calibration_cases(), cfg.syn_steps,
                               cfg.batch_syn, seed=cfg.seed)
            with torch.no_grad():
                self.syn.log_lr.copy_(torch.tensor(lrs).log())
            self.syn.meta["lr_calibrated"] = dict(zip(LR_GROUPS, lrs))
        self._make_optimisers()
        self._good = self._snapshot()
        return self.syn

    @torch.no_grad()
    def expert_scores(self, batch_size: int = 256) -> torch.Tensor:
        """Logits ``[M, M]`` of the current synthetic images (rows) against the synthetic texts,
        averaged over the last epoch of every expert trajectory: how the experts match them."""
        syn, total = self.syn, None
        text, model = syn.text.detach(), copy.deepcopy(self.model).eval()
        for i in range(self.buffer.num_trajectories):
            set_flat(model, self.buffer.trajectory(i)[-1].to(self.device))
            emb_t = model.encode_text(text)
            emb_i = torch.cat([model.encode_image(syn.images[k:k + batch_size].detach())
                               for k in range(0, syn.num_pairs, batch_size)])
            s = emb_i @ emb_t.T / model.temperature
            total = s if total is None else total + s
        return total / self.buffer.num_trajectories

    def _model_config_dict(self) -> dict | None:
        mc = getattr(self.model, "model_config", None)
        return mc.to_dict() if hasattr(mc, "to_dict") else mc

    def _calibration_cases(self, num: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.cfg.seed + 7919)
        return [self._pair(*self._draw_start(g))[:2] for _ in range(num)]

    def _make_optimisers(self) -> None:
        cfg, syn = self.cfg, self.syn
        self.opts = {"images": torch.optim.SGD([syn.images], lr=cfg.lr_img, momentum=cfg.momentum),
                     "text": torch.optim.Adam([syn.text], lr=cfg.lr_txt),
                     "lr": torch.optim.Adam([syn.log_lr], lr=cfg.lr_lr)}
        corr_params = list(syn.corr.parameters())
        if corr_params:
            self.opts["corr"] = torch.optim.Adam(corr_params, lr=cfg.lr_corr)

    # ------------------------------------------------------------ sampling
    def _draw_start(self, g: torch.Generator) -> tuple[int, int]:
        hi = max(1, min(self.cfg.max_start_epoch, self.num_epochs - self.cfg.segment_epochs + 1))
        i = int(torch.randint(self.buffer.num_trajectories, (1,), generator=g))
        return i, int(torch.randint(hi, (1,), generator=g))

    def _pair(self, i: int, t: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        traj = self.buffer.trajectory(i)
        return traj[t].to(self.device), traj[t + self.cfg.segment_epochs].to(self.device), i, t

    # ------------------------------------------------------------ main loop
    def run(self) -> DistilledSet:
        """Run (or resume) to ``cfg.iterations``; returns the distilled set (also saved in ``run_dir``)."""
        cfg = self.cfg
        if not self._resume():
            self.initialise()
            self._record_maps(0)
        self._good = self._snapshot()
        if cfg.select_every and not self.selection["scores"]:
            self._select(self.iteration)
        todo = range(self.iteration + 1, cfg.iterations + 1)
        for it in progress(todo, desc="distill", total=len(todo), enabled=None if cfg.progress else False):
            stats = self.step(it)
            if cfg.save_maps_every and it % cfg.save_maps_every == 0:
                self._record_maps(it)
            if cfg.select_every and (it % cfg.select_every == 0 or it == cfg.iterations):
                stats["val/R-sum"] = self.history[-1]["val/R-sum"] = self._select(it)
            if self.run_dir is not None and (it == cfg.iterations or
                                             (cfg.checkpoint_every and it % cfg.checkpoint_every == 0)):
                self.save_checkpoint()
            if self.callback is not None:
                self.callback(it, stats)
        if cfg.select_every:
            self._restore_best()
        if self.run_dir is not None:
            self.syn.save(self.run_dir / ARTIFACT)
            self.run_dir.update_metrics(distill=self.summary())
        return self.syn

    def step(self, it: int) -> dict:
        """One iteration: sample, match, backpropagate, CEO-modulate, step; returns its stats."""
        t0 = time.perf_counter()
        problem = self._check_state()
        if problem is not None:
            return self._finish(it, self._recover(problem, it), t0, {})
        start, target, ti, t = self._pair(*self._draw_start(self.gen))
        batches = sample_batches(self.syn.num_pairs, self.cfg.syn_steps, self.cfg.batch_syn, self.gen)
        if self.cfg.ceo_beta > 0 and (self.ceo_maps is None or (it - 1) % self.cfg.ceo_every == 0):
            self.ceo_maps = self._maps()
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        out = match_loss(self.model, self.syn, start, target, self.cfg.syn_steps, self.cfg.batch_syn,
                         self.cfg.mode, batches=batches, groups=self.groups, transform=self._transform(it))
        stats = {"trajectory": ti, "start_epoch": t, "loss": float(out.loss.detach()),
                 **{f"loss_{g}": v for g, v in out.parts.items()}}
        problem = None if math.isfinite(stats["loss"]) else f"non-finite matching loss {stats['loss']}"
        if problem is None:
            self._total_loss(out.loss, stats).backward()
            problem = self._apply_step(stats)
        event = self._recover(problem, it) if problem is not None else None
        if event is None:
            self._good = self._snapshot()
        return self._finish(it, event, t0, stats)

    def _transform(self, it: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """This iteration's image augmentation (``None`` when off); its own generator, seeded by
        the seed and the iteration, so the sampling stream and a resumed run are unchanged."""
        strength = self.cfg.augment_strength
        if strength == 0:
            return None
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + it)
        return lambda x: augment(x, strength, gen)

    def _total_loss(self, loss: torch.Tensor, stats: dict) -> torch.Tensor:
        """The matching loss plus the total-variation penalty (when ``tv_weight > 0``)."""
        if self.cfg.tv_weight == 0:
            return loss
        tv = total_variation(self.syn.images)
        stats["tv"] = float(tv.detach())
        return loss + self.cfg.tv_weight * tv

    def _apply_step(self, stats: dict) -> str | None:
        syn = self.syn
        stats.update({f"grad_{n}": float(p.grad.norm()) if p.grad is not None else 0.0
                      for n, p in (("images", syn.images), ("text", syn.text), ("lr", syn.log_lr))})
        stats["grad_corr"] = float(sum(p.grad.norm() ** 2 for p in syn.corr.parameters()
                                       if p.grad is not None) ** 0.5)
        bad = [k for k in ("grad_images", "grad_text", "grad_lr", "grad_corr") if not math.isfinite(stats[k])]
        if bad:
            return f"non-finite gradients ({', '.join(bad)})"
        if self.cfg.ceo_beta > 0:
            syn.images.grad = modulate_pixel_grad(syn.images.grad, self.ceo_maps.to(syn.images.device),
                                                  self.cfg.ceo_beta, self.cfg.ceo_clip)
        if self.cfg.pixel_grad_blur > 0:
            syn.images.grad = gaussian_blur(syn.images.grad, self.cfg.pixel_grad_blur)
        if self.cfg.normalize_pixel_grad:
            syn.images.grad /= syn.images.grad.abs().mean().clamp_min(1e-30)
        before = syn.images.detach().clone()
        for opt in self.opts.values():
            opt.step()
        stats["pixel_step"] = float((syn.images.detach() - before).abs().mean())
        if self.cfg.clamp_pixels:
            with torch.no_grad():
                syn.images.clamp_(0.0, 1.0)
        return self._check_state()

    def _check_state(self) -> str | None:
        lr = self.syn.lr().detach()
        if not bool(torch.isfinite(lr).all()) or not bool((lr > 0).all()):
            return f"student learning rate not positive and finite: {lr.tolist()}"
        for name, p in self.syn.named_parameters():
            if not bool(torch.isfinite(p).all()):
                return f"non-finite values in '{name}'"
        return None

    def _finish(self, it: int, event: str | None, t0: float, stats: dict) -> dict:
        self.iteration = it
        eta = self.syn.learning_rates()
        stats.update({"iteration": it, "eta_image": eta["image"], "eta_text": eta["text"],
                      "lr_img": self.opts["images"].param_groups[0]["lr"],
                      "lr_txt": self.opts["text"].param_groups[0]["lr"], "event": event,
                      "recoveries": self.recoveries, "time": time.perf_counter() - t0})
        self.history.append({k: _finite_or_none(v) if isinstance(v, float) else v for k, v in stats.items()})
        return stats

    # ------------------------------------------------------------ recovery
    def _snapshot(self) -> dict:
        return {"syn": {k: v.detach().clone() for k, v in self.syn.state_dict().items()},
                "opts": {n: copy.deepcopy(o.state_dict()) for n, o in self.opts.items()}}

    def _recover(self, problem: str, it: int) -> str:
        self.recoveries += 1
        self.syn.load_state_dict(self._good["syn"])
        for n, o in self.opts.items():
            o.load_state_dict(copy.deepcopy(self._good["opts"][n]))
        for n in ("images", "text"):
            for g in self.opts[n].param_groups:
                g["lr"] *= 0.5
        msg = (f"iteration {it}: {problem}; reverted to the last good state and halved the image/text "
               f"step sizes to {self.opts['images'].param_groups[0]['lr']:.4g} / "
               f"{self.opts['text'].param_groups[0]['lr']:.4g} (recovery {self.recoveries})")
        log.warning(msg)
        if self.run_dir is not None:
            self.run_dir.log(msg)
        if self.recoveries > self.cfg.max_recoveries:
            raise FloatingPointError(f"distillation gave up after {self.recoveries} recoveries; last: {msg}")
        return msg

    # ------------------------------------------------------------ maps
    def _map_flat(self) -> torch.Tensor:
        """Parameters the region maps are computed with: the last epoch of trajectory 0."""
        return self.buffer.trajectory(0)[-1].to(self.device)

    def _maps_key(self) -> tuple:
        """Identity and in-place version of everything the maps read: equal keys, equal maps."""
        return tuple((id(t), t._version) for t in (self.syn.images, self.syn.text, *self.syn.corr.parameters()))

    def _maps(self) -> torch.Tensor:
        """The region maps of the current set; reused while the set has not changed since (the maps
        saved after iteration ``i`` are the CEO maps of iteration ``i + 1`` when both fall due)."""
        key = self._maps_key()
        if self._maps_cache is not None and self._maps_cache[0] == key:
            return self._maps_cache[1]
        maps = self._compute_maps()
        self._maps_cache = (key, maps)
        return maps

    def _compute_maps(self) -> torch.Tensor:
        return region_maps(self.model, self._map_flat(), self.syn.images.detach(), self.syn.text.detach(),
                           self.syn.corr.matrix().detach(), k=self.cfg.ceo_k, method=self.cfg.ceo_method,
                           stage=self.cfg.ceo_stage)

    def _record_maps(self, it: int) -> None:
        if self.cfg.save_maps_every:
            self.syn.record_maps(it, self._maps().clone())  # its own storage: a checkpoint saves both

    # ------------------------------------------------------------ evaluation
    def evaluate_matching(self, num: int = 4, seed: int = 12345) -> float:
        """Mean matching loss (no gradient) over ``num`` fixed (trajectory, start, batches) draws.

        The same ``seed`` gives the same draws, so values before and after training compare.

        Example:
            >>> import torch
            >>> from mdw_kit.models import build_model
            >>> from mdw_kit.models.retrieval import get_flat
            >>> m = build_model("convnet3", text_dim=16, image_size=32)
            >>> s = get_flat(m); traj = torch.stack([s, s + 0.01 * torch.randn_like(s)])
            >>> cfg = DistillConfig(num_pairs=4, syn_steps=1, segment_epochs=1, batch_syn=4, lr_init=0.01)
            >>> d = Distiller(cfg, [traj], m, torch.rand(6, 3, 32, 32), torch.randn(6, 16))
            >>> d.evaluate_matching(num=1) > 0
            True
        """
        if self.syn is None:
            self.initialise()
        g, total = torch.Generator().manual_seed(seed), 0.0
        for _ in range(num):
            start, target, _, _ = self._pair(*self._draw_start(g))
            batches = sample_batches(self.syn.num_pairs, self.cfg.syn_steps, self.cfg.batch_syn, g)
            with torch.no_grad():
                out = match_loss(self.model, self.syn, start, target, self.cfg.syn_steps, self.cfg.batch_syn,
                                 "constant_memory", batches=batches, groups=self.groups)
            total += float(out.loss)
        return total / num

    def summary(self) -> dict[str, Any]:
        """Iterations done, recoveries, first / last losses and the learned student rates."""
        losses = [h["loss"] for h in self.history if h.get("loss") is not None]
        return {"iterations": self.iteration, "recoveries": self.recoveries,
                "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                "eta": self.syn.learning_rates() if self.syn is not None else None,
                **({"selected_iteration": self.selection["best_iteration"],
                    "selected_kind": self.selection.get("best_kind", "set"),
                    "val_rsum_by_iteration": self.selection["scores"],
                    "start_pairs_val_rsum_by_iteration": self.selection.get("start_pairs_scores", [])}
                   if self.cfg.select_every else {})}
