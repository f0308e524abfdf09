"""Contrastive training of a :class:`~mdw_kit.models.retrieval.RetrievalModel`.

Symmetric InfoNCE over in-batch logits, with optional per-pair weights (noise
down-weighting) and optional soft targets (a distilled correspondence matrix
replacing the identity). :func:`per_pair_losses` scores every pair by its own
loss inside fixed mini-batches, which is what noise detection fits a mixture to.

Example:
    >>> import torch
    >>> logits = torch.eye(4) * 10
    >>> float(symmetric_info_nce(logits)) < 0.01
    True
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mdw_kit.config import ConfigMixin
from mdw_kit.utils import model_device as _model_device, to_pixels
from mdw_kit.models.retrieval import is_stem_features
from mdw_kit.utils import pick_device, progress

REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------- losses
def _check_logits(logits: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be a square [B, B] matrix, got {tuple(logits.shape)}")


def _soft_directions(logp_rows: torch.Tensor, logp_cols: torch.Tensor,
                     targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft cross-entropy per image (rows) and per text (columns)."""
    if targets.shape != logp_rows.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} differs from logits "
                         f"{tuple(logp_rows.shape)}")
    t = targets.to(logp_rows)
    if bool((t < 0).any()):
        raise ValueError("targets must be non-negative")
    row_t = t / t.sum(dim=1, keepdim=True).clamp_min(1e-12)
    col_t = t / t.sum(dim=0, keepdim=True).clamp_min(1e-12)
    i2t = -(row_t * logp_rows).sum(dim=1)
    t2i = -(col_t * logp_cols).sum(dim=0)
    return i2t, t2i


def symmetric_info_nce(logits: torch.Tensor, targets: torch.Tensor | None = None,
                       weights: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Symmetric InfoNCE (image->text and text->image) of a ``[B, B]`` logit matrix.

    Args:
        logits: ``S_ij`` = score of image ``i`` with text ``j`` (already divided by tau).
        targets: ``None`` for the identity (image ``i`` matches text ``i``), or a non-negative
            ``[B, B]`` soft matrix; rows are normalised for image->text and columns for text->image.
        weights: optional ``[B]`` per-pair weights. Pair ``i``'s loss is the mean of its two
            directions (row ``i`` and column ``i``); a zero weight removes that term, so pair ``i``
            then only acts as a negative for the others.
        reduction: ``"mean"`` (weighted mean ``sum(w*l)/sum(w)``; 0 when all weights are 0),
            ``"sum"`` (``sum(w*l)``) or ``"none"`` (the per-pair losses ``[B]``, times ``w`` if given).

    Computed in float32 whatever the logits' dtype.

    Example:
        >>> import torch
        >>> s = torch.randn(5, 5)
        >>> l = symmetric_info_nce(s, reduction="none")
        >>> l.shape
        torch.Size([5])
        >>> torch.allclose(symmetric_info_nce(s), l.mean())
        True
    """
    _check_logits(logits)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    x = logits.float()
    logp_rows, logp_cols = F.log_softmax(x, dim=1), F.log_softmax(x, dim=0)
    if targets is None:
        i2t, t2i = -logp_rows.diagonal(), -logp_cols.diagonal()
    else:
        i2t, t2i = _soft_directions(logp_rows, logp_cols, targets)
    per_pair = 0.5 * (i2t + t2i)
    if weights is not None:
        w = weights.to(per_pair).reshape(-1)
        if w.numel() != per_pair.numel():
            raise ValueError(f"weights has {w.numel()} values for a batch of {per_pair.numel()} pairs")
        per_pair = per_pair * w
        if reduction == "mean":
            return per_pair.sum() / w.sum() if float(w.sum()) > 0 else per_pair.sum() * 0.0
    if reduction == "none":
        return per_pair
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


# ----------------------------------------------------------------- helpers
def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Indices of ``n`` items in ``ceil(n / batch_size)`` near-equal batches (shuffled if generator).

    Near-equal batches avoid a tiny last batch whose InfoNCE would be meaningless.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 for in-batch contrastive loss, got {batch_size}")
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(torch.tensor_split(order, max(1, math.ceil(n / batch_size))))


def _autocast(device: torch.device):
    """bfloat16 autocast on CUDA (float16 where bf16 is unsupported); a no-op on CPU."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _check_pairs(images: torch.Tensor, text_emb: torch.Tensor, **per_pair: torch.Tensor | None) -> None:
    n = int(images.shape[0])
    if images.ndim != 4 or (images.shape[1] != 3 and not is_stem_features(images)):
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    if text_emb.ndim != 2 or int(text_emb.shape[0]) != n:
        raise ValueError(f"text_emb must be [N={n}, d], got {tuple(text_emb.shape)}")
    if n < 2:
        raise ValueError(f"contrastive training needs at least 2 pairs, got {n}")
    for name, t in per_pair.items():
        if t is None:
            continue
        want = (n,) if name == "weights" else (n, n)
        if tuple(t.shape) != want:
            raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


# ------------------------------------------------------------ noise scoring
@torch.no_grad()
def per_pair_losses(model: nn.Module, images: torch.Tensor, text_emb: torch.Tensor,
                    batch_size: int = 256, device: torch.device | str | None = None,
                    seed: int = 0) -> torch.Tensor:
    """Each pair's own symmetric InfoNCE loss, scored in-batch within fixed seeded mini-batches.

    The batches are the same on every call (a permutation from ``seed``), the model runs in
    eval mode without gradients, and its training mode is restored afterwards. Mismatched
    (noisy) pairs get high losses. Returns a float32 CPU tensor ``[N]`` in the input order.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> tower = ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4)
        >>> m = RetrievalModel(tower, text_dim=8, embed_dim=8)
        >>> per_pair_losses(m, torch.rand(10, 3, 8, 8), torch.randn(10, 8), batch_size=4).shape
        torch.Size([10])
    """
    _check_pairs(images, text_emb)
    dev = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    out = torch.empty(int(images.shape[0]), dtype=torch.float32)
    try:
        for idx in _batches(int(images.shape[0]), batch_size, torch.Generator().manual_seed(seed)):
            with _autocast(dev):
                logits = model(to_pixels(images[idx], dev), text_emb[idx].to(dev).float())
            out[idx] = symmetric_info_nce(logits, reduction="none").float().cpu()
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------ config
@dataclass
class TrainConfig(ConfigMixin):
    """Settings of one contrastive training run.

    ``optimizer`` is ``"adam"`` or ``"sgd"`` (with ``momentum``); ``device`` ``"auto"`` picks CUDA
    when present; val metrics are computed every ``eval_every`` epochs and after the last.

    Example:
        >>> cfg = TrainConfig(epochs=2, lr=0.01)
        >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"TrainConfig.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.epochs < 0 or self.batch_size < 2 or self.eval_every < 1 or self.lr <= 0:
            raise ValueError(f"TrainConfig needs epochs >= 0, batch_size >= 2, eval_every >= 1, lr > 0; "
                             f"got {self.to_dict()}")


TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "momentum", "seed", "device", "eval_every")



def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` asks for, over the model's trainable parameters.

    Example:
        >>> from torch import nn
        >>> type(make_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd"))).__name__
        'SGD'
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------- training
Callback = Callable[[int, nn.Module, dict], Any]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Data order of epoch ``epoch``: depends only on (seed, epoch), so a resumed run repeats it."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, x: torch.Tensor,
                t: torch.Tensor, w: torch.Tensor | None, tgt: torch.Tensor | None,
                device: torch.device) -> float | None:
    """One optimiser step; returns the batch loss, or None when all its weights are 0 (no step)."""
    if w is not None and float(w.sum()) <= 0:
        return None
    with _autocast(device):
        logits = model(x, t)
    loss = symmetric_info_nce(logits, targets=tgt, weights=w)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite training loss {float(loss)}; lower the learning rate")
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return float(loss.detach())


def _run_epoch(model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, images: torch.Tensor,
               text_emb: torch.Tensor, cfg: TrainConfig, epoch: int, device: torch.device,
               weights: torch.Tensor | None, targets: torch.Tensor | None) -> float:
    """Train one epoch over shuffled seeded batches; the size-weighted mean batch loss."""
    model.train()
    total, count = 0.0, 0
    for idx in _batches(int(images.shape[0]), cfg.batch_size, _epoch_generator(cfg.seed, epoch)):
        w = None if weights is None else weights[idx].to(device).float()
        tgt = None if targets is None else targets[idx][:, idx].to(device).float()
        loss = _train_step(model, opt, scaler, to_pixels(images[idx], device),
                           text_emb[idx].to(device).float(), w, tgt, device)
        if loss is not None:
            total, count = total + loss * len(idx), count + len(idx)
    return total / count if count else float("nan")


def _val_metrics(model: nn.Module, val: Any, batch_size: int) -> dict[str, float]:
    from mdw_kit.evaluation.metrics import evaluate_val

    return evaluate_val(model, val, batch_size=batch_size)


def train_contrastive(model: nn.Module, images: torch.Tensor, text_emb: torch.Tensor, cfg: TrainConfig,
                      weights: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                      val: Any = None, callback: Callback | None = None, start_epoch: int = 0,
                      optimizer: torch.optim.Optimizer | None = None) -> list[dict]:
    """Train ``model`` with symmetric InfoNCE on (image, text-embedding) pairs.

    Args:
        model: a ``RetrievalModel`` (moved to ``cfg.device``).
        images: ``[N, 3, H, W]`` uint8 or float in ``[0, 1]`` (kept where it is, converted per batch).
        text_emb: ``[N, d]`` frozen caption embeddings.
        cfg: :class:`TrainConfig`.
        weights: optional ``[N]`` per-pair weights (a batch whose weights are all 0 is skipped).
        targets: optional ``[N, N]`` soft correspondence; each batch uses ``targets[idx][:, idx]``.
        val: optional ``(PairDataset split, text_emb)`` or ``(pixels, text_emb, pair_image)``;
            its retrieval metrics go into each evaluated epoch's stats under ``"val"``.
        callback: ``callback(epoch, model, stats)`` after each epoch (e.g. to save parameters).
        start_epoch: epochs already done (resume); the data order of an epoch depends only on
            ``(cfg.seed, epoch)``, so resuming repeats it.
        optimizer: an optimizer to continue with (its state restored by the caller on resume);
            by default a fresh one from :func:`make_optimizer`.

    Epochs are numbered from 1: ``stats["epoch"] == e`` after ``e`` epochs, so the parameters
    saved at epoch ``e`` are ``theta_e`` and ``theta_0`` is the state before training.
    Each stats dict has ``epoch``, ``loss``, ``lr``, ``time`` (seconds) and ``val`` (dict or None).
    Mixed precision (bf16 autocast) on CUDA, float32 on CPU.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> m = RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> hist = train_contrastive(m, torch.rand(16, 3, 8, 8), torch.randn(16, 8),
        ...                          TrainConfig(epochs=2, batch_size=8, device="cpu"))
        >>> [h["epoch"] for h in hist]
        [1, 2]
    """
    weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)
    _check_pairs(images, text_emb, weights=weights, targets=targets)
    device = pick_device(cfg.device)
    model.to(device)
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    history: list[dict] = []
    for epoch in progress(range(start_epoch + 1, cfg.epochs + 1), desc="train",
                          total=max(0, cfg.epochs - start_epoch)):
        t0 = time.perf_counter()
        loss = _run_epoch(model, opt, scaler, images, text_emb, cfg, epoch, device, weights, targets)
        stats = {"epoch": epoch, "loss": loss, "lr": float(opt.param_groups[0]["lr"]),
                 "time": time.perf_counter() - t0, "val": None}
        if val is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            stats["val"] = _val_metrics(model, val, max(cfg.batch_size, 256))
        history.append(stats)
        if callback is not None:
            callback(epoch, model, stats)
    model.train()
    return history


__all__ = ["TrainConfig", "symmetric_info_nce", "per_pair_losses", "train_contrastive",
           "make_optimizer", "to_pixels"]
