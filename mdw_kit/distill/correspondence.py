"""The learnable soft correspondence matrix P~ between synthetic images and texts.

``P~_ij`` says how much synthetic image ``i`` corresponds to synthetic text ``j``;
it replaces the identity target of contrastive training. Three kinds:

- ``"identity"``: the fixed identity (plain InfoNCE targets; nothing to learn).
- ``"full"``: ``M x M`` learnable logits ``W``; ``P~ = sigmoid(W)``.
- ``"lowrank"``: logits ``Z = c + diag(a) + (alpha / r) L R^T`` with ``c`` a fixed
  off-diagonal offset, as LoRS parametrises the similarity (here in logit space);
  ``P~ = sigmoid(Z)``. ``L`` starts small and random, ``R`` at zero, so the
  low-rank part starts at zero and ``P~`` starts identity-dominant.

Normalisation: entries of :meth:`Correspondence.matrix` are correspondence
probabilities in ``(0, 1)`` (exactly 0/1 for ``"identity"``); rows and columns do
*not* sum to one. The soft contrastive loss normalises them itself: per row for
image-to-text and per column for text-to-image (see
:func:`mdw_kit.distill.matching.soft_targets`). At the default initialisation
(diagonal logit +4, off-diagonal logit -8) a row of a mini-batch of 50 puts
about 98% of its normalised mass on the diagonal.

Example:
    >>> c = make_correspondence("lowrank", 6, rank=2)
    >>> P = c.matrix()
    >>> P.shape, bool((P.diagonal() > 0.9).all()), bool((P >= 0).all())
    (torch.Size([6, 6]), True, True)
    >>> c.sub(torch.tensor([0, 3])).shape
    torch.Size([2, 2])
"""
from __future__ import annotations

import torch
from torch import nn

KINDS = ("identity", "full", "lowrank")
DIAG_LOGIT = 4.0
OFF_LOGIT = -8.0


class Correspondence(nn.Module):
    """A soft ``M x M`` correspondence matrix (see the module docstring for the kinds).

    Args:
        kind: ``"identity"``, ``"full"`` or ``"lowrank"``.
        size: ``M``, the number of synthetic pairs.
        rank: ``r`` of the low-rank part (``"lowrank"`` only).
        alpha: scale of the low-rank part, applied as ``alpha / r``.
        diag_logit, off_logit: initial logits on and off the diagonal.
        init_scale: standard deviation of the initial ``L`` (``R`` starts at zero).
        seed: seeds the initial ``L``.

    Example:
        >>> c = Correspondence("full", 4)
        >>> [p.shape for p in c.parameters()]
        [torch.Size([4, 4])]
    """

    def __init__(self, kind: str, size: int, rank: int = 8, alpha: float = 1.0,
                 diag_logit: float = DIAG_LOGIT, off_logit: float = OFF_LOGIT,
                 init_scale: float = 0.01, seed: int = 0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown correspondence kind {kind!r}; use one of {KINDS}")
        if size < 1:
            raise ValueError(f"correspondence size must be >= 1, got {size}")
        self.kind, self.size = kind, int(size)
        self.rank = int(rank) if kind == "lowrank" else 0
        self.alpha = float(alpha)
        self.off_logit = float(off_logit)
        if kind == "identity":
            self.register_buffer("eye", torch.eye(size))
        elif kind == "full":
            w = torch.full((size, size), float(off_logit))
            w.fill_diagonal_(float(diag_logit))
            self.logits = nn.Parameter(w)
        else:
            if not 1 <= self.rank <= size:
                raise ValueError(f"lowrank correspondence needs 1 <= rank <= M={size}, got rank={rank}")
            g = torch.Generator().manual_seed(seed)
            self.diag = nn.Parameter(torch.full((size,), float(diag_logit - off_logit)))
            self.left = nn.Parameter(torch.randn(size, self.rank, generator=g) * init_scale)
            self.right = nn.Parameter(torch.zeros(size, self.rank))

    # ------------------------------------------------------------------ logits
    def _logits(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "full":
            return self.logits if idx is None else self.logits[idx][:, idx]
        a, L, R = (self.diag, self.left, self.right) if idx is None else \
            (self.diag[idx], self.left[idx], self.right[idx])
        return self.off_logit + torch.diag(a) + (self.alpha / self.rank) * (L @ R.T)

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
        return torch.sigmoid(self._logits())

    def sub(self, idx: torch.Tensor) -> torch.Tensor:
        """``P~[idx][:, idx]`` ``[B, B]`` for a mini-batch, computed without the full matrix."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self._device())
        if self.kind == "identity":
            return self.eye[idx][:, idx]
        return torch.sigmoid(self._logits(idx))

    def topk(self, i: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` largest entries of row ``i`` of ``P~``: ``(values, column indices)``."""
        if not 0 <= i < self.size:
            raise IndexError(f"row {i} outside the {self.size} synthetic pairs")
        with torch.no_grad():
            return self.matrix()[i].topk(min(k, self.size))

    def _device(self) -> torch.device:
        return next(iter(self.buffers() if self.kind == "identity" else self.parameters())).device

    def config(self) -> dict:
        """JSON description (kind, size, rank, alpha, off_logit) that :func:`make_correspondence` rebuilds from."""
        return {"kind": self.kind, "size": self.size, "rank": self.rank, "alpha": self.alpha,
                "off_logit": self.off_logit}

    def extra_repr(self) -> str:
        return f"kind={self.kind}, size={self.size}, rank={self.rank}, alpha={self.alpha}"


def make_correspondence(kind: str, M: int, rank: int = 8, alpha: float = 1.0, **kw) -> Correspondence:
    """Build a :class:`Correspondence` of ``kind`` for ``M`` pairs.

    Example:
        >>> make_correspondence("identity", 3).matrix()
        tensor([[1., 0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """
    return Correspondence(kind, M, rank=rank, alpha=alpha, **kw)
