"""The learnable soft correspondence matrix P~ between synthetic images and texts.

``P~_ij`` says how much synthetic image ``i`` corresponds to synthetic text ``j``;
it replaces the identity target of contrastive training. Three kinds:

- ``"identity"``: the fixed identity (plain InfoNCE targets; nothing to learn).
- ``"full"``: ``M x M`` learnable logits ``Z = W``.
- ``"lowrank"``: logits ``Z = c + diag(a) + (alpha / r) L R^T`` with ``c`` a fixed
  off-diagonal offset, as LoRS parametrises the similarity (here in logit space).
  ``L`` and ``R`` start small and random (``init_scale``), so the low-rank part starts
  near zero and both factors receive gradients at the start.

Two forms map the logits to the matrix:

- ``"exp"`` (default): ``P~ = exp(Z)``, positive masses. The soft contrastive loss
  normalises rows (image-to-text) and columns (text-to-image), so what it sees is a
  softmax of the logits: the normalised soft targets as LoRS learns them. The slope of
  ``log P~`` in ``Z`` is 1 everywhere, so an off-diagonal entry is never stuck, however
  small its mass. The off-diagonal logit starts at
  ``log(s / ((1 - s)(M - 1)))`` so that each row puts a share ``s = off_share`` of its
  normalised mass off the diagonal (spread evenly); the diagonal logit starts at 0.
- ``"sigmoid"``: ``P~ = sigmoid(Z)``, entries are probabilities in ``(0, 1)``, starting at
  logit +4 on and -8 off the diagonal. At -8 the sigmoid's slope is ``3e-4``: off-diagonal
  entries barely learn (kept to read artifacts written with it).

Measured (``benchmarks/bench_mechanisms.py``, ``shapes`` 600 images at 64 px, 50% noise,
EfficientNet-Lite0 frozen, 100 pairs, 100 iterations, ``lr_img`` 0.001, 3 seeds;
``benchmarks/results/mechanisms_prior.json``, ``docs/results.md``): with the ``"exp"`` form (10%
off the diagonal at the start, ``lr_corr`` 0.2) a row ends with 29% of its mass off the diagonal;
the Spearman correlation between ``P~_ij`` and the similarity of the captions nearest texts ``i``
and ``j`` is 0.25 and scenes sharing an object get 2.0x the mass of scenes sharing none. Started
from the experts' prior (below, strength 1): 41% off the diagonal, Spearman 0.62, 3.3x, at the
same R-sum. The old ``"sigmoid"`` form barely moved (3.3% to 7.4% with an earlier version of the
code, ``mechanisms_sigmoid_old.json``); ``corr_form="sigmoid", lr_corr=0.05`` gives it back.

A prior (``"exp"`` form, ``"full"`` and ``"lowrank"``): a fixed ``M x M`` offset added to the
logits, zero on the diagonal, that spreads each row's starting off-diagonal share unevenly instead
of evenly (the share itself is unchanged). :func:`similarity_prior` makes it from image-text
scores, such as the experts' logits between the starting images and texts
(``DistillConfig.corr_prior_scale``): images then start by sharing mass with the texts the experts
find similar, and the matching learns from there. :meth:`Correspondence.initial` gives the
starting matrix back, prior included.

Rows and columns of :meth:`Correspondence.matrix` do *not* sum to one in either form;
:meth:`Correspondence.row_shares` gives the row-normalised matrix the image-to-text loss
sees, and :meth:`Correspondence.off_diagonal_share` its mean off-diagonal mass.

Example:
    >>> c = make_correspondence("lowrank", 6, rank=2)
    >>> P = c.matrix()
    >>> P.shape, bool((P.diagonal() > 0.9).all()), bool((P >= 0).all())
    (torch.Size([6, 6]), True, True)
    >>> round(c.off_diagonal_share(), 3)
    0.1
    >>> c.sub(torch.tensor([0, 3])).shape
    torch.Size([2, 2])
"""
from __future__ import annotations

import math

import torch
from torch import nn

KINDS = ("identity", "full", "lowrank")
FORMS = ("exp", "sigmoid")
DIAG_LOGIT = 4.0  # "sigmoid" form
OFF_LOGIT = -8.0  # "sigmoid" form
OFF_SHARE = 0.1  # "exp" form: share of a row's normalised mass off the diagonal at the start
LOGIT_BOUND = 30.0  # "exp" form: logits are clamped to +-this so exp() stays finite


def initial_logits(form: str, size: int, off_share: float = OFF_SHARE) -> tuple[float, float]:
    """``(diagonal, off-diagonal)`` starting logits of a form (see the module docstring).

    Example:
        >>> d, o = initial_logits("exp", 11, off_share=0.5)
        >>> import math; round(math.exp(o) * 10 / (math.exp(d) + math.exp(o) * 10), 3)
        0.5
    """
    if form == "sigmoid":
        return DIAG_LOGIT, OFF_LOGIT
    if form != "exp":
        raise ValueError(f"unknown correspondence form {form!r}; use one of {FORMS}")
    if not 0.0 < off_share < 1.0:
        raise ValueError(f"correspondence off_share must be in (0, 1), got {off_share}")
    return 0.0, math.log(off_share / ((1.0 - off_share) * max(size - 1, 1)))


def similarity_prior(scores: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A logit offset ``[M, M]`` from image-text ``scores`` ``[M, M]`` (row ``i``: image ``i``).

    Off the diagonal, ``log((M - 1) softmax_{j != i}(scale * scores_ij))``: the relative weight of
    text ``j`` among image ``i``'s other texts, 0 where all are equal, so the row's off-diagonal
    share of the ``"exp"`` form stays what ``off_share`` says. The diagonal is 0. ``scale`` 0
    gives all zeros (no prior).

    Example:
        >>> pr = similarity_prior(torch.tensor([[9., 2., 0.], [1., 9., 1.], [0., 0., 9.]]))
        >>> pr.diagonal().tolist(), round(float(pr[1, 0]), 3), bool(pr[0, 1] > 0 > pr[0, 2])
        ([0.0, 0.0, 0.0], 0.0, True)
    """
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"prior scores must be a square [M, M] matrix, got {list(scores.shape)}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"prior scale must be a finite number >= 0, got {scale}")
    M = scores.shape[0]
    eye = torch.eye(M, dtype=torch.bool, device=scores.device)
    z = (scale * scores.detach().float()).masked_fill(eye, float("-inf"))
    prior = z.log_softmax(dim=1) + math.log(max(M - 1, 1))
    return prior.masked_fill(eye, 0.0) if M > 1 else torch.zeros_like(z)


class Correspondence(nn.Module):
    """A soft ``M x M`` correspondence matrix (see the module docstring for kinds and forms).

    Args:
        kind: ``"identity"``, ``"full"`` or ``"lowrank"``.
        size: ``M``, the number of synthetic pairs.
        rank: ``r`` of the low-rank part (``"lowrank"`` only).
        alpha: scale of the low-rank part, applied as ``alpha / r``.
        diag_logit, off_logit: initial logits on and off the diagonal (``None``: the form's).
        init_scale: standard deviation of the initial ``L`` and ``R``.
        seed: seeds the initial ``L`` and ``R``.
        form: ``"exp"`` or ``"sigmoid"``.
        off_share: ``"exp"`` form: starting off-diagonal share of a row's normalised mass.
        prior: a fixed ``[M, M]`` logit offset (``"exp"`` form, learnable kinds; see
            :func:`similarity_prior`), kept with the artifact. ``None``: none.

    Example:
        >>> c = Correspondence("full", 4)
        >>> [p.shape for p in c.parameters()]
        [torch.Size([4, 4])]
    """

    def __init__(self, kind: str, size: int, rank: int = 8, alpha: float = 1.0,
                 diag_logit: float | None = None, off_logit: float | None = None,
                 init_scale: float = 0.01, seed: int = 0, form: str = "exp", off_share: float = OFF_SHARE,
                 prior: torch.Tensor | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown correspondence kind {kind!r}; use one of {KINDS}")
        if size < 1:
            raise ValueError(f"correspondence size must be >= 1, got {size}")
        d0, o0 = initial_logits(form, size, off_share)
        diag_logit = d0 if diag_logit is None else float(diag_logit)
        self.kind, self.size, self.form = kind, int(size), form
        self.rank = int(rank) if kind == "lowrank" else 0
        self.alpha = float(alpha)
        self.off_logit = o0 if off_logit is None else float(off_logit)
        if kind == "identity":
            self.register_buffer("eye", torch.eye(size))
        elif kind == "full":
            w = torch.full((size, size), self.off_logit)
            w.fill_diagonal_(diag_logit)
            self.logits = nn.Parameter(w)
        else:
            if not 1 <= self.rank <= size:
                raise ValueError(f"lowrank correspondence needs 1 <= rank <= M={size}, got rank={rank}")
            g = torch.Generator().manual_seed(seed)
            self.diag = nn.Parameter(torch.full((size,), diag_logit - self.off_logit))
            self.left = nn.Parameter(torch.randn(size, self.rank, generator=g) * init_scale)
            self.right = nn.Parameter(torch.randn(size, self.rank, generator=g) * init_scale)
        self._init = {"diag_logit": diag_logit, "init_scale": float(init_scale), "seed": int(seed)}
        self.has_prior = prior is not None
        if prior is not None:
            if kind == "identity" or form != "exp":
                raise ValueError(f"a correspondence prior needs a learnable kind ('full' or 'lowrank') and form "
                                 f"'exp', got kind {kind!r}, form {form!r}")
            prior = torch.as_tensor(prior, dtype=torch.float32)
            if tuple(prior.shape) != (size, size) or not bool(torch.isfinite(prior).all()):
                raise ValueError(f"correspondence prior must be a finite [{size}, {size}] matrix, "
                                 f"got shape {list(prior.shape)}")
            self.register_buffer("prior", prior.clone())

    # ------------------------------------------------------------------ logits
    def _logits(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "full":
            z = self.logits if idx is None else self.logits[idx][:, idx]
        else:
            a, L, R = (self.diag, self.left, self.right) if idx is None else \
                (self.diag[idx], self.left[idx], self.right[idx])
            z = self.off_logit + torch.diag(a) + (self.alpha / self.rank) * (L @ R.T)
        if self.has_prior:
            z = z + (self.prior if idx is None else self.prior[idx][:, idx])
        return z

    def _squash(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) if self.form == "sigmoid" else z.clamp(-LOGIT_BOUND, LOGIT_BOUND).exp()

    def lowrank_part(self) -> torch.Tensor:
        """``(alpha / r) L R^T`` (``"lowrank"`` only): its rank never exceeds ``r``."""
        if self.kind != "lowrank":
            raise ValueError(f"lowrank_part() needs kind 'lowrank', this one is {self.kind!r}")
        return (self.alpha / self.rank) * (self.left @ self.right.T)

    # ------------------------------------------------------------------ public
    def matrix(self) -> torch.Tensor:
        """The soft target ``P~`` ``[M, M]``: non-negative, identity-dominant at the start."""
        if self.kind == "identity":
            return self.eye
        return self._squash(self._logits())

    def sub(self, idx: torch.Tensor) -> torch.Tensor:
        """``P~[idx][:, idx]`` ``[B, B]`` for a mini-batch, computed without the full matrix."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self._device())
        if self.kind == "identity":
            return self.eye[idx][:, idx]
        return self._squash(self._logits(idx))

    def row_shares(self) -> torch.Tensor:
        """``P~`` with each row divided by its sum (detached): the image-to-text targets over all ``M`` texts."""
        with torch.no_grad():
            P = self.matrix().float()
            return P / P.sum(dim=1, keepdim=True).clamp_min(1e-30)

    def off_diagonal_share(self) -> float:
        """Mean over rows of the share of a row's normalised mass off the diagonal."""
        return float(1.0 - self.row_shares().diagonal().mean())

    def topk(self, i: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` largest entries of row ``i`` of ``P~``: ``(values, column indices)``."""
        if not 0 <= i < self.size:
            raise IndexError(f"row {i} outside the {self.size} synthetic pairs")
        with torch.no_grad():
            return self.matrix()[i].topk(min(k, self.size))

    def initial(self) -> "Correspondence":
        """A fresh correspondence of this one's configuration as it started (its prior included).

        Example:
            >>> c = Correspondence("full", 3)
            >>> with torch.no_grad(): _ = c.logits.add_(1.0)
            >>> bool(torch.allclose(c.initial().matrix(), Correspondence("full", 3).matrix()))
            True
        """
        return Correspondence(self.kind, self.size, rank=max(self.rank, 1), alpha=self.alpha,
                              off_logit=self.off_logit, form=self.form,
                              prior=self.prior.detach().cpu() if self.has_prior else None, **self._init)

    def _device(self) -> torch.device:
        return next(iter(self.buffers() if self.kind == "identity" else self.parameters())).device

    def config(self) -> dict:
        """JSON description (kind, size, rank, alpha, off_logit, form, prior: whether it has one);
        :func:`correspondence_from_config` rebuilds the module (the tensors come from its state)."""
        return {"kind": self.kind, "size": self.size, "rank": self.rank, "alpha": self.alpha,
                "off_logit": self.off_logit, "form": self.form, "prior": self.has_prior}

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, size={self.size}, rank={self.rank}, alpha={self.alpha}, form={self.form}"
                + (", prior" if self.has_prior else ""))


def make_correspondence(kind: str, M: int, rank: int = 8, alpha: float = 1.0, **kw) -> Correspondence:
    """Build a :class:`Correspondence` of ``kind`` for ``M`` pairs (``kw``: see the class).

    Example:
        >>> make_correspondence("identity", 3).matrix()
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    return Correspondence(kind, M, rank=rank, alpha=alpha, **kw)


def correspondence_from_config(cc: dict) -> Correspondence:
    """The module :meth:`Correspondence.config` describes, at its starting values; load its state
    (``load_state_dict``) for the learned ones. A prior is a zero placeholder until then. Configs
    written before forms existed are ``"sigmoid"``.

    Example:
        >>> c = make_correspondence("lowrank", 5, rank=2, prior=torch.zeros(5, 5))
        >>> d = correspondence_from_config(c.config()); _ = d.load_state_dict(c.state_dict())
        >>> bool(torch.equal(c.matrix(), d.matrix()))
        True
    """
    size = int(cc["size"])
    return make_correspondence(cc["kind"], size, rank=max(int(cc.get("rank", 1)), 1), alpha=cc.get("alpha", 1.0),
                               off_logit=cc.get("off_logit"), form=cc.get("form", "sigmoid"),
                               prior=torch.zeros(size, size) if cc.get("prior") else None)
