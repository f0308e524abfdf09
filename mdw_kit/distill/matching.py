"""Stage 3: trajectory matching with a learnable correspondence.

From an expert's parameters ``theta_t`` the student takes ``N`` SGD steps on
mini-batches of the distilled set, with the soft contrastive loss
(:func:`mdw_kit.train.symmetric_info_nce` against ``P~_BB``) and the learned
rates ``eta`` (one per tower group). The matching loss compares where the
student lands with the expert ``D`` epochs later, per tower group::

    L = sum_g ||theta_hat_N[g] - theta_{t+D}[g]||^2 / ||theta_t[g] - theta_{t+D}[g]||^2

with groups ``"image"`` (image tower + projection) and ``"text"`` (text head),
so each group counts equally whatever its parameter count. A group whose
expert did not move (zero denominator) is left out.

Two gradient modes give the same gradients for images, texts, ``P~`` and ``eta``:

- ``"unroll"``: the N steps are built with ``create_graph`` and autograd
  differentiates through them (exact; activation memory grows with N).
- ``"constant_memory"``: the forward pass runs the N steps without a graph,
  storing only ``theta_k`` (``N`` parameter vectors) and the batch indices.
  The backward pass walks the steps in reverse: with ``a = dL/dtheta_{k+1}`` and
  ``theta_{k+1} = theta_k - eta * g_k(theta_k, X)``, it rebuilds step ``k``'s
  graph alone and takes one vector-Jacobian product of ``s = <eta * a, g_k>``:
  ``dL/dtheta_k = a - ds/dtheta_k`` (a Hessian-vector product),
  ``dL/dX += -ds/dX`` for ``X`` in images / texts / ``P~``, and
  ``dL/deta_g += -<a, g_k>_g``. This is exact (second-order terms included,
  unlike TESLA's approximation) and activation memory is that of one step.

The frozen stem (``model.tower.stem``) runs once per call on all synthetic
images; gradients still reach the pixels through it, but only the trainable
layers are unrolled.

Example:
    >>> import torch
    >>> from mdw_kit.models import build_model
    >>> from mdw_kit.models.retrieval import get_flat
    >>> from mdw_kit.distill.synthetic import DistilledSet
    >>> m = build_model("convnet3", text_dim=16, image_size=32)
    >>> syn = DistilledSet.from_pairs(torch.rand(8, 3, 32, 32), torch.randn(8, 16), range(8))
    >>> start = get_flat(m); target = start + 0.01 * torch.randn_like(start)
    >>> out = match_loss(m, syn, start, target, syn_steps=2, batch_syn=4)
    >>> out.loss.backward(); syn.images.grad.shape
    torch.Size([8, 3, 32, 32])
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from mdw_kit.distill.synthetic import LR_GROUPS, DistilledSet
from mdw_kit.models.retrieval import functional_logits, trainable_names
from mdw_kit.train import symmetric_info_nce

MODES = ("unroll", "constant_memory")


@dataclass
class MatchResult:
    """What :func:`match_loss` returns.

    Attributes:
        loss: scalar matching loss; ``loss.backward()`` fills the gradients of the distilled set.
        parts: per-group loss (``{"image": ..., "text": ...}``) as floats.
        batches: the ``N`` mini-batch index tensors the student used.
        final: the student's final parameters ``theta_hat_N`` (detached).
    """

    loss: torch.Tensor
    parts: dict[str, float]
    batches: list[torch.Tensor]
    final: torch.Tensor = field(repr=False)


def tower_groups(model: nn.Module) -> torch.Tensor:
    """Group id of every flat parameter: 0 (``"image"``) or 1 (``"text"``: names under ``text_head``).

    Example:
        >>> from mdw_kit.models import build_model
        >>> g = tower_groups(build_model("convnet3", text_dim=16, image_size=32))
        >>> sorted(set(g.tolist()))
        [0, 1]
    """
    params = dict(model.named_parameters())
    parts = [torch.full((params[n].numel(),), int(n.startswith("text_head")), dtype=torch.long)
             for n in trainable_names(model)]
    return torch.cat(parts)


def sample_batches(num_pairs: int, syn_steps: int, batch_syn: int,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """``syn_steps`` mini-batches of ``batch_syn`` indices: consecutive chunks of fresh permutations.

    Example:
        >>> [len(b) for b in sample_batches(10, 3, 4, torch.Generator().manual_seed(0))]
        [4, 4, 4]
    """
    batch_syn = min(batch_syn, num_pairs)
    if batch_syn < 2:
        raise ValueError(f"batch_syn must be >= 2 for an in-batch contrastive loss, got {batch_syn}")
    per_perm = num_pairs // batch_syn
    out: list[torch.Tensor] = []
    while len(out) < syn_steps:
        perm = torch.randperm(num_pairs, generator=generator)
        out.extend(perm[i * batch_syn:(i + 1) * batch_syn] for i in range(per_perm))
    return out[:syn_steps]


def student_loss(model: nn.Module, flat: torch.Tensor, feats: torch.Tensor, text: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """Soft symmetric InfoNCE of the student ``flat`` on a batch of stem features and texts.

    Example:
        >>> import torch
        >>> from mdw_kit.models import build_model
        >>> from mdw_kit.models.retrieval import get_flat
        >>> m = build_model("convnet3", text_dim=16, image_size=32)
        >>> x = m.tower.stem(torch.rand(4, 3, 32, 32))
        >>> float(student_loss(m, get_flat(m), x, torch.randn(4, 16), torch.eye(4))) > 0
        True
    """
    logits = functional_logits(model, flat, feats, text, from_features=True)
    return symmetric_info_nce(logits, targets=targets)


def param_distance_loss(final: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                        groups: torch.Tensor, num_groups: int = len(LR_GROUPS)) -> torch.Tensor:
    """Per-group ``||final - target||^2 / ||start - target||^2`` ``[G]`` (0 where the denominator is 0).

    Example:
        >>> import torch
        >>> param_distance_loss(torch.tensor([0.5, 2.0]), torch.zeros(2), torch.ones(2), torch.tensor([0, 1]))
        tensor([0.2500, 1.0000])
    """
    num = torch.zeros(num_groups, dtype=final.dtype, device=final.device).index_add(0, groups, (final - target) ** 2)
    den = torch.zeros(num_groups, dtype=final.dtype, device=final.device).index_add(0, groups, (start - target) ** 2)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))


def _check_inputs(model: nn.Module, syn: DistilledSet, start: torch.Tensor, target: torch.Tensor,
                  mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for name, t in (("start", start), ("target", target)):
        if t.ndim != 1 or t.numel() != n:
            raise ValueError(f"{name} must be a flat vector of the model's {n} trainable parameters, "
                             f"got shape {list(t.shape)}")
    if syn.text_dim != getattr(model, "text_dim", syn.text_dim):
        raise ValueError(f"synthetic texts have dim {syn.text_dim}, the model expects {model.text_dim}")


def match_loss(model: nn.Module, syn: DistilledSet, start: torch.Tensor, target: torch.Tensor,
               syn_steps: int, batch_syn: int, mode: str = "unroll",
               batches: list[torch.Tensor] | None = None, generator: torch.Generator | None = None,
               groups: torch.Tensor | None = None,
               transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> MatchResult:
    """Matching loss of ``N = syn_steps`` student steps from ``start`` (``theta_t``) towards ``target``.

    Args:
        model: the retrieval model whose trainable layout the flat vectors follow.
        syn: the distilled set (its images, texts, ``P~`` and ``eta`` receive gradients).
        start, target: expert parameters ``theta_t`` and ``theta_{t+D}`` (flat).
        syn_steps: ``N``; batch_syn: synthetic pairs per student step.
        mode: ``"unroll"`` or ``"constant_memory"`` (same gradients; see the module docstring).
        batches: the student's mini-batches (default: drawn with ``generator``).
        groups: group id per flat parameter (default :func:`tower_groups`).
        transform: applied to the synthetic pixels before the frozen stem, differentiably (e.g.
            :func:`mdw_kit.distill.augment.augment`); ``None``: the pixels as they are.
    """
    _check_inputs(model, syn, start, target, mode)
    dev = syn.images.device
    start, target = start.to(dev, syn.images.dtype).detach(), target.to(dev, syn.images.dtype).detach()
    groups = (tower_groups(model) if groups is None else groups).to(dev)
    if batches is None:
        batches = sample_batches(syn.num_pairs, syn_steps, batch_syn, generator)
    batches = [b.to(dev) for b in batches[:syn_steps]]
    if len(batches) != syn_steps:
        raise ValueError(f"need {syn_steps} batches, got {len(batches)}")
    feats = model.tower.stem(syn.images if transform is None else transform(syn.images))
    P, lr = syn.corr.matrix(), syn.lr()
    if mode == "unroll":
        per_group, final = _unrolled(model, feats, syn.text, P, lr, start, target, groups, batches)
    else:
        per_group, final = _ConstantMemoryMatch.apply(feats, syn.text, P, lr, start, target,
                                                      groups, batches, model)
    parts = {g: float(v) for g, v in zip(LR_GROUPS, per_group.detach())}
    return MatchResult(per_group.sum(), parts, [b.cpu() for b in batches], final.detach())


def _unrolled(model, feats, text, P, lr, start, target, groups, batches):
    theta = start.clone().requires_grad_(True)
    lr_vec = lr[groups]
    for idx in batches:
        loss = student_loss(model, theta, feats[idx], text[idx], P[idx][:, idx])
        g, = torch.autograd.grad(loss, theta, create_graph=True)
        theta = theta - lr_vec * g
    return param_distance_loss(theta, start, target, groups, len(lr)), theta


class _ConstantMemoryMatch(torch.autograd.Function):
    """Forward: N graph-free student steps. Backward: exact reverse recompute, one step at a time."""

    @staticmethod
    def forward(ctx, feats, text, P, lr, start, target, groups, batches, model):
        feats, text, P, lr = (t.detach() for t in (feats, text, P, lr))
        theta, thetas = start.clone(), []
        lr_vec = lr[groups]
        for idx in batches:
            thetas.append(theta)
            with torch.enable_grad():
                th = theta.detach().requires_grad_(True)
                g, = torch.autograd.grad(student_loss(model, th, feats[idx], text[idx], P[idx][:, idx]), th)
            theta = theta - lr_vec * g
        per_group = param_distance_loss(theta, start, target, groups, len(lr))
        ctx.save_for_backward(feats, text, P, lr, start, target, groups, theta, torch.stack(thetas))
        ctx.batches, ctx.model = batches, model
        return per_group, theta

    @staticmethod
    def backward(ctx, grad_groups, grad_final):
        feats, text, P, lr, start, target, groups, final, thetas = ctx.saved_tensors
        den = torch.zeros_like(lr).index_add(0, groups, (start - target) ** 2)
        scale = torch.where(den > 0, grad_groups / den.clamp_min(1e-30), torch.zeros_like(den))
        a = 2.0 * (final - target) * scale[groups]
        if grad_final is not None:
            a = a + grad_final
        leaves = [t.detach().requires_grad_(True) for t in (feats, text, P, lr)]
        acc = [torch.zeros_like(t) for t in leaves]
        for k in range(len(ctx.batches) - 1, -1, -1):
            a = _reverse_step(ctx.model, thetas[k], leaves, acc, a, groups, ctx.batches[k])
        needs = ctx.needs_input_grad
        grads = [acc[i] if needs[i] else None for i in range(4)]
        return (*grads, a if needs[4] else None, None, None, None, None)


def _reverse_step(model, theta_k, leaves, acc, a, groups, idx):
    """Propagate the adjoint ``a`` of ``theta_{k+1}`` back to ``theta_k``; accumulate input gradients."""
    feats, text, P, lr = leaves
    with torch.enable_grad():
        th = theta_k.detach().requires_grad_(True)
        loss = student_loss(model, th, feats[idx], text[idx], P[idx][:, idx])
        g, = torch.autograd.grad(loss, th, create_graph=True)
        s = (lr[groups] * a * g).sum()
        grads = torch.autograd.grad(s, [th, *leaves], allow_unused=True)
    for i, gr in enumerate(grads[1:]):
        if gr is not None:
            acc[i].sub_(gr)
    return a - grads[0]


def time_plain_steps(model: nn.Module, syn: DistilledSet, start: torch.Tensor, syn_steps: int,
                     batch_syn: int, batches: list[torch.Tensor] | None = None,
                     generator: torch.Generator | None = None) -> float:
    """Seconds for the ``N`` plain SGD steps (no graph kept) that one matching iteration unrolls.

    The reference cost: a matching iteration costs this times a factor (report both).

    Example:
        >>> import torch
        >>> from mdw_kit.models import build_model
        >>> from mdw_kit.models.retrieval import get_flat
        >>> from mdw_kit.distill.synthetic import DistilledSet
        >>> m = build_model("convnet3", text_dim=16, image_size=32)
        >>> syn = DistilledSet.from_pairs(torch.rand(8, 3, 32, 32), torch.randn(8, 16), range(8))
        >>> time_plain_steps(m, syn, get_flat(m), 2, 4) > 0
        True
    """
    if batches is None:
        batches = sample_batches(syn.num_pairs, syn_steps, batch_syn, generator)
    groups = tower_groups(model).to(syn.images.device)
    t0 = time.perf_counter()
    with torch.no_grad():
        feats, text, P, lr_vec = model.tower.stem(syn.images), syn.text, syn.corr.matrix(), syn.lr()[groups]
        theta = start.to(syn.images.device).clone()
        for idx in batches[:syn_steps]:
            with torch.enable_grad():
                th = theta.requires_grad_(True)
                g, = torch.autograd.grad(student_loss(model, th, feats[idx], text[idx], P[idx][:, idx]), th)
            theta = theta.detach() - lr_vec * g
    return time.perf_counter() - t0


def calibrate_lr(model: nn.Module, syn: DistilledSet, cases: list[tuple[torch.Tensor, torch.Tensor]],
                 syn_steps: int, batch_syn: int, grid: tuple[float, ...] | None = None,
                 seed: int = 0) -> list[float]:
    """Initial student rates: per group, the grid value whose matching loss (no gradient) is lowest.

    ``cases`` are ``(theta_t, theta_{t+D})`` pairs; every grid value is tried for both groups at
    once and each group keeps its own best (the groups' losses are nearly separable). Use it when
    the experts trained with another optimiser (e.g. Adam) whose rate says nothing about SGD's.

    Example:
        >>> import torch
        >>> from mdw_kit.models import build_model
        >>> from mdw_kit.models.retrieval import get_flat
        >>> m = build_model("convnet3", text_dim=16, image_size=32)
        >>> syn = DistilledSet.from_pairs(torch.rand(8, 3, 32, 32), torch.randn(8, 16), range(8))
        >>> s = get_flat(m)
        >>> len(calibrate_lr(m, syn, [(s, s + 0.01)], 1, 4, grid=(0.01, 0.1)))
        2
    """
    grid = grid or tuple(10.0 ** e for e in torch.arange(-4.0, 0.51, 0.5).tolist())
    saved = syn.log_lr.detach().clone()
    scores = torch.zeros(len(grid), len(LR_GROUPS))
    try:
        for gi, lr in enumerate(grid):
            with torch.no_grad():
                syn.log_lr.fill_(math.log(lr))
            for ci, (start, target) in enumerate(cases):
                batches = sample_batches(syn.num_pairs, syn_steps, batch_syn, torch.Generator().manual_seed(seed + ci))
                with torch.no_grad():
                    out = match_loss(model, syn, start, target, syn_steps, batch_syn, "constant_memory", batches)
                scores[gi] += torch.tensor([out.parts[g] for g in LR_GROUPS]).nan_to_num(float("inf"))
    finally:
        with torch.no_grad():
            syn.log_lr.copy_(saved)
    return [float(grid[int(i)]) for i in scores.argmin(dim=0)]
