"""The evaluation protocol: train fresh models on a set, choose each epoch on val, test once.

:func:`fit_and_evaluate` does it for any pairs and a :class:`~mdw_kit.train.TrainConfig`;
:func:`evaluate_distilled` for a distilled set (or a coreset of real pairs) under an :class:`EvalConfig`.

For a :class:`~mdw_kit.distill.synthetic.DistilledSet`, each seed trains a fresh
model on the synthetic images and texts with the set's soft targets ``P~`` and
its learned student rates ``eta`` (SGD, one rate per tower group: image tower +
projection, text head; the same steps the distillation unrolled), in
mini-batches of the distillation's ``batch_syn``. For real pairs (a coreset,
or the full data of a reference run) training uses identity targets and the
default optimiser of :class:`EvalConfig` (Adam, ``lr=1e-3``: the rate the
experts and the full-data runs train with). Every seed keeps the epoch of best
validation R-sum (never the test split) and is then tested once; the result
holds test TR/IR@1/5/10 and R-sum as mean and sample sd over seeds.

Example:
    >>> import torch
    >>> from mdw_kit.models import ModelConfig
    >>> mc = ModelConfig(tower="convnet3", text_dim=8, image_size=32, tower_kw={"width": 4})
    >>> x, t = torch.rand(12, 3, 32, 32), torch.randn(12, 8)
    >>> split = (x[:6], t[:6], torch.arange(6))
    >>> r = evaluate_distilled((x, t), mc, split, split, seeds=(0,), epochs=2)
    >>> sorted(r["mean"])[:3], r["trainer"]
    (['IR@1', 'IR@10', 'IR@5'], 'adam')
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from mdw_kit.config import ConfigMixin, delegate
from mdw_kit.evaluation.metrics import Split, evaluate_val, summarize
from mdw_kit.train import TRAIN_KEYS, TrainConfig, train_contrastive

METRIC_KEYS = ("TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "R-sum")


EVAL_TRAIN = {"epochs": 150, "batch_size": 128, "lr": 1e-3, "optimizer": "adam", "momentum": 0.9, "eval_every": 10}


@dataclass(init=False)
class EvalConfig(ConfigMixin):
    """How distilled sets and coresets are evaluated.

    Attributes:
        train: the :class:`~mdw_kit.train.TrainConfig` of each fresh model (its ``seed`` is the
            evaluation seed). Its keys may be given and read at the top level
            (``EvalConfig(epochs=100).epochs``):

            - ``epochs``: training epochs on the small set (each is ``ceil(M / batch)`` steps);
            - ``eval_every``: validate every this many epochs (and after the last);
            - ``lr``, ``optimizer``: optimiser for real pairs and for distilled sets with
              ``use_learned_lr=False`` (Adam, 1e-3: at 3e-4 it tied, at 3e-3 it was worse on a
              clean-random coreset);
            - ``momentum``: SGD momentum when training with the learned rates (0 = the plain steps
              distillation unrolled). 0.9 by measurement (openmoji, 100 distilled pairs, 2 seeds,
              SGD experts): R-sum 71 at 0.9 against 52-54 at 0 and 0.5, with the best epoch at
              20-40 instead of 150-200;
            - ``batch_size``: the mini-batch of real pairs (128);
            - ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``.
        batch_size: mini-batch of a distilled set; ``None`` = the distillation's ``batch_syn`` (read
            from the set's meta), else ``train.batch_size``; never more than the set. When set, it
            is the batch of real pairs too.
        use_soft_targets, use_learned_lr: train a distilled set with ``P~`` / ``eta``.
        full_epochs: epochs of the full-data reference runs (``full_noisy``, ``clean_oracle`` in
            :mod:`mdw_kit.distill.methods`), validated every epoch.

    Example:
        >>> EvalConfig.from_dict(EvalConfig(epochs=5).to_dict()).epochs
        5
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(**EVAL_TRAIN))
    batch_size: int | None = None
    use_soft_targets: bool = True
    use_learned_lr: bool = True
    full_epochs: int = 20

    _flat, _flat_skip = "train", ("seed",)  # each evaluation seed trains its own model
    __init__ = ConfigMixin.flat_init

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"EvalConfig.train must be a TrainConfig, got {type(self.train).__name__}")
        if min(self.train.epochs, self.full_epochs) < 1 or (self.batch_size is not None and self.batch_size < 2):
            raise ValueError("EvalConfig needs epochs, full_epochs >= 1 and batch_size >= 2 "
                             f"or None; got {self.to_dict()}")
        if not 0.0 <= self.train.momentum < 1.0:
            raise ValueError(f"EvalConfig needs 0 <= momentum < 1; got {self.to_dict()}")


delegate(EvalConfig, "train", [n for n in TRAIN_KEYS if n not in ("seed", "batch_size")])


@dataclass
class _Train:
    """What one evaluation trains on: pixels, texts, targets and (optionally) per-group rates."""

    images: torch.Tensor
    text: torch.Tensor
    targets: torch.Tensor | None
    rates: dict[str, float] | None
    batch_size: int
    kind: str


def _unpack(data: Any, cfg: EvalConfig) -> _Train:
    """A DistilledSet, or real pairs ``(images, text_emb)`` / ``(images, text_emb, targets)``."""
    if hasattr(data, "corr") and hasattr(data, "learning_rates"):
        bs = cfg.batch_size or int((data.meta.get("config") or {}).get("batch_syn", cfg.train.batch_size))
        return _Train(data.images.detach().cpu().clamp(0, 1), data.text.detach().cpu().float(),
                      data.targets().cpu() if cfg.use_soft_targets else None,
                      data.learning_rates() if cfg.use_learned_lr else None,
                      min(bs, data.num_pairs), "distilled")
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise TypeError("evaluate_distilled takes a DistilledSet or real pairs (images, text_emb[, targets]); "
                        f"got {type(data).__name__}")
    images, text = data[0], torch.as_tensor(data[1]).float()
    if len(images) != len(text):
        raise ValueError(f"images ({len(images)}) and text_emb ({len(text)}) need one row per pair")
    targets = None if len(data) == 2 or data[2] is None else torch.as_tensor(data[2]).float()
    return _Train(images, text, targets, None, min(cfg.batch_size or cfg.train.batch_size, len(images)), "pairs")


def _model_fn(model_cfg: Any):
    """``seed -> fresh model`` from a ``ModelConfig`` or its dict (the caller seeds torch first)."""
    from mdw_kit.models import ModelConfig
    if isinstance(model_cfg, dict):
        model_cfg = ModelConfig.from_dict(model_cfg)
    if not hasattr(model_cfg, "build"):
        raise TypeError(f"model_cfg must be a ModelConfig or its dict, got {type(model_cfg).__name__}")
    return lambda seed: model_cfg.build()


def _frozen_features_once(tr: _Train, model_cfg: Any, model_fn) -> _Train:
    """Run a frozen pretrained backbone once over the set's pixels (every seed then trains on features)."""
    from mdw_kit.features import has_frozen_stem, stem_features
    from mdw_kit.models import ModelConfig
    mc = ModelConfig.from_dict(model_cfg) if isinstance(model_cfg, dict) else model_cfg
    if not has_frozen_stem(mc):
        return tr
    return replace(tr, images=stem_features(model_fn(0), tr.images))


def group_optimizer(model: nn.Module, rates: dict[str, float], momentum: float = 0.0) -> torch.optim.SGD:
    """SGD over the trainable parameters: the text head at ``rates["text"]``, the rest at ``rates["image"]``.

    Example:
        >>> from mdw_kit.models import build_model
        >>> m = build_model("convnet3", text_dim=8, image_size=32, width=4)
        >>> [g["lr"] for g in group_optimizer(m, {"image": 0.1, "text": 0.01}).param_groups]
        [0.1, 0.01]
    """
    image, text = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (text if name.startswith("text_head") else image).append(p)
    groups = [{"params": ps, "lr": float(rates[g])} for g, ps in (("image", image), ("text", text)) if ps]
    return torch.optim.SGD(groups, lr=float(rates["image"]), momentum=momentum)


def _fit_rates(model_fn, tr: _Train, tcfg: TrainConfig, val: Any, test: Any, seeds: Sequence[int],
               momentum: float) -> dict[str, Any]:
    """Per seed: SGD with the learned per-group rates, best epoch on val, test once."""
    per_seed = []
    for seed in seeds:
        torch.manual_seed(int(seed))
        model, keeper, t0 = model_fn(int(seed)), _BestState(None, int(seed)), time.perf_counter()
        cfg = replace(tcfg, seed=int(seed))
        opt = group_optimizer(model, tr.rates, momentum)
        history = train_contrastive(model, tr.images, tr.text, cfg, targets=tr.targets, val=val,
                                    callback=keeper, optimizer=opt)
        model.load_state_dict(keeper.state)
        val_m = next(h["val"] for h in history if h["epoch"] == keeper.best_epoch)
        per_seed.append({"seed": int(seed), "best_epoch": keeper.best_epoch, "val": val_m,
                         "test": evaluate_val(model, test, max(cfg.batch_size, 256)),
                         "train_time_s": time.perf_counter() - t0, "history": history})
    mean, sd = summarize([r["test"] for r in per_seed])
    return {"per_seed": per_seed, "mean": mean, "sd": sd, "best_epochs": [r["best_epoch"] for r in per_seed]}


# ------------------------------------------------------ select-and-test
class _BestState:
    """Callback keeping a CPU copy of the state of the best validation R-sum epoch (earliest on ties)."""

    def __init__(self, user: Callable | None, seed: int):
        self.user, self.seed = user, seed
        self.best_rsum, self.best_epoch, self.state = -math.inf, None, None

    def __call__(self, epoch: int, model: nn.Module, stats: dict) -> None:
        val = stats.get("val")
        if val is not None and val["R-sum"] > self.best_rsum:
            self.best_rsum, self.best_epoch = val["R-sum"], epoch
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.user is not None:
            self.user(epoch, model, dict(stats, seed=self.seed))


def _fit_one(model_fn: Callable[[int], nn.Module], train_images: torch.Tensor, train_text: torch.Tensor,
             cfg: TrainConfig, val: Split, test: Split, seed: int, weights: Any, targets: Any,
             callback: Callable | None) -> dict[str, Any]:
    """Train one seed, restore its best-val state, evaluate test once."""
    torch.manual_seed(seed)
    model = model_fn(seed)
    keeper = _BestState(callback, seed)
    t0 = time.perf_counter()
    history = train_contrastive(model, train_images, train_text, replace(cfg, seed=seed),
                                weights=weights, targets=targets, val=val, callback=keeper)
    train_time = time.perf_counter() - t0
    if keeper.state is None:
        raise ValueError("no validation metrics were computed: need epochs >= 1")
    model.load_state_dict(keeper.state)
    val_metrics = next(h["val"] for h in history if h["epoch"] == keeper.best_epoch)
    test_metrics = evaluate_val(model, test, max(cfg.batch_size, 256))
    return {"seed": seed, "best_epoch": keeper.best_epoch, "val": val_metrics, "test": test_metrics,
            "train_time_s": train_time, "history": history}


def fit_and_evaluate(model_fn: Callable[[int], nn.Module], train_images: torch.Tensor,
                     train_text: torch.Tensor, cfg: TrainConfig, val: Split, test: Split,
                     seeds: Sequence[int] = (0, 1, 2), weights: Any = None, targets: Any = None,
                     callback: Callable | None = None) -> dict[str, Any]:
    """Train a fresh model per seed, choose its epoch on VAL, evaluate that state on TEST once.

    Args:
        model_fn: ``model_fn(seed)`` builds a fresh model.
        train_images, train_text, weights, targets: as :func:`~mdw_kit.train.train_contrastive`.
        cfg: training settings; ``cfg.seed`` is replaced by each seed.
        val, test: ``(PairDataset split, text_emb)`` (or ``(pixels, text_emb, pair_image)``).
        callback: forwarded ``callback(epoch, model, stats)``; stats also carry ``seed``.

    The best epoch is the one of highest val R-sum (earliest on ties) among evaluated epochs.
    Returns ``{"per_seed": [{seed, best_epoch, val, test, train_time_s, history}],
    "mean": {...}, "sd": {...}, "best_epochs": [...]}`` with mean / sample sd of the test metrics.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> def make(seed):
        ...     return RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> x, t = torch.rand(8, 3, 8, 8), torch.randn(8, 8)
        >>> split = (x[:4], t[:4], torch.arange(4))
        >>> r = fit_and_evaluate(make, x, t, TrainConfig(epochs=2, batch_size=4, device="cpu"),
        ...                      split, split, seeds=(0,))
        >>> r["sd"]["R-sum"], len(r["best_epochs"])
        (0.0, 1)
    """
    if not seeds:
        raise ValueError("fit_and_evaluate needs at least one seed")
    per_seed = [_fit_one(model_fn, train_images, train_text, cfg, val, test, int(s), weights, targets,
                         callback) for s in seeds]
    mean, sd = summarize([r["test"] for r in per_seed])
    return {"per_seed": per_seed, "mean": mean, "sd": sd,
            "best_epochs": [r["best_epoch"] for r in per_seed]}


def evaluate_distilled(dset_or_pairs: Any, model_cfg: Any, val: Any, test: Any, seeds: Sequence[int] = (0, 1, 2),
                       epochs: int | None = None, use_soft_targets: bool | None = None,
                       use_learned_lr: bool | None = None, cfg: EvalConfig | None = None,
                       keep_history: bool = False) -> dict[str, Any]:
    """Train fresh models on a distilled set or real pairs; epoch chosen on VAL; test metrics over seeds.

    Args:
        dset_or_pairs: a ``DistilledSet``, or real pairs ``(images, text_emb)`` (a coreset) /
            ``(images, text_emb, targets)``; images uint8 or float in ``[0, 1]``.
        model_cfg: a ``ModelConfig`` (or its dict).
        val, test: ``(PairDataset split, text_emb)`` or ``(pixels, text_emb, pair_image)``.
        seeds: one fresh model per seed.
        epochs, use_soft_targets, use_learned_lr: override the same fields of ``cfg``.
        cfg: :class:`EvalConfig` (defaults otherwise).
        keep_history: keep each seed's per-epoch history in the result.

    Returns:
        ``{"mean", "sd"`` (test metrics), ``"val_mean"``, ``"per_seed"`` (seed, best_epoch, val, test,
        train_time_s), ``"best_epochs"``, ``"trainer"`` ("sgd_learned_lr" or the optimiser name),
        ``"rates"``, ``"soft_targets"``, ``"batch_size"``, ``"num_pairs"``, ``"eval_time_s"``, ``"config"}``.
    """
    cfg = cfg or EvalConfig()
    over = {k: v for k, v in (("epochs", epochs), ("use_soft_targets", use_soft_targets),
                              ("use_learned_lr", use_learned_lr)) if v is not None}
    cfg = replace(cfg, **over)
    if not seeds:
        raise ValueError("evaluate_distilled needs at least one seed")
    tr = _unpack(dset_or_pairs, cfg)
    t0 = time.perf_counter()
    model_fn = _model_fn(model_cfg)
    tr = _frozen_features_once(tr, model_cfg, model_fn)
    tcfg = replace(cfg.train, batch_size=tr.batch_size)
    if tr.rates is not None:
        res = _fit_rates(model_fn, tr, tcfg, val, test, seeds, cfg.momentum)
        trainer = "sgd_learned_lr"
    else:
        res = fit_and_evaluate(model_fn, tr.images, tr.text, tcfg, val, test, seeds=seeds, targets=tr.targets)
        trainer = cfg.optimizer
    if not keep_history:
        for r in res["per_seed"]:
            r.pop("history", None)
    val_mean, _ = summarize([r["val"] for r in res["per_seed"]])
    return {"mean": res["mean"], "sd": res["sd"], "val_mean": val_mean, "per_seed": res["per_seed"],
            "best_epochs": res["best_epochs"], "trainer": trainer, "rates": tr.rates,
            "soft_targets": tr.targets is not None, "batch_size": tr.batch_size, "num_pairs": len(tr.images),
            "eval_time_s": time.perf_counter() - t0, "config": cfg.to_dict()}


__all__ = ["EvalConfig", "evaluate_distilled", "fit_and_evaluate", "group_optimizer", "METRIC_KEYS"]
