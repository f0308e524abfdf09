"""Figures that say whether the learned correspondence and images are worth inspecting.

All correspondence figures read ``P~`` row-normalised (:func:`row_shares`), the targets the
image-to-text loss sees, and look at the off-diagonal entries ``i != j`` only:

- :func:`off_diagonal_share`: mean share of a row's normalised mass off the diagonal.
- :func:`caption_spearman`: Spearman correlation between ``P~_ij`` and the cosine of the real
  captions nearest to synthetic texts ``i`` (image ``i``'s own) and ``j``: does ``P~`` link images
  to texts that say similar things?
- :func:`shared_object_ratio`: on scenes with named objects (``shapes``), mean ``P~_ij`` between
  pairs whose starting scenes share an object label over pairs that share none.
- :func:`caption_recognition`: with a model trained on real pairs, the share of images whose
  own caption ranks in the top ``k`` among all candidate captions (are the images still
  recognisable?).

Example:
    >>> import torch
    >>> P = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    >>> round(off_diagonal_share(P), 3)
    0.222
    >>> shared_object_ratio(P, [{"a"}, {"a"}, {"b"}])["ratio"] > 3
    True
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


def row_shares(P: torch.Tensor) -> torch.Tensor:
    """``P`` with each row divided by its sum (float, detached)."""
    P = P.detach().float()
    return P / P.sum(dim=1, keepdim=True).clamp_min(1e-30)


def _off_diag(n: int) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool)


def off_diagonal_share(P: torch.Tensor) -> float:
    """Mean over rows of ``1 - P_ii / sum_j P_ij``."""
    return float(1.0 - row_shares(P).diagonal().mean())


def off_diagonal_view(P: torch.Tensor) -> torch.Tensor:
    """Row-normalised ``P`` with its diagonal set to 0: what moved off the identity, on its own scale.

    Example:
        >>> off_diagonal_view(torch.tensor([[3.0, 1.0], [0.0, 1.0]])).tolist()
        [[0.0, 0.25], [0.0, 0.0]]
    """
    return row_shares(P).masked_fill(~_off_diag(len(P)), 0.0)


def top_off_diagonal(P: torch.Tensor, n: int = 8) -> list[tuple[int, int, float]]:
    """The ``n`` largest off-diagonal entries of the row-normalised ``P``: ``(image i, text j, share)``.

    Example:
        >>> top = top_off_diagonal(torch.tensor([[1.0, 0.5, 0.0], [0.1, 1.0, 0.0], [0.0, 0.2, 1.0]]), n=2)
        >>> [(i, j, round(v, 3)) for i, j, v in top]
        [(0, 1, 0.333), (2, 1, 0.167)]
    """
    v = off_diagonal_view(P.cpu())
    vals, flat = v.flatten().topk(min(n, max(v.numel() - len(v), 0)))
    return [(int(f) // len(v), int(f) % len(v), float(x)) for x, f in zip(vals, flat)]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr
    r = spearmanr(a.double().numpy(), b.double().numpy()).statistic
    return float(r) if r == r else 0.0  # constant inputs give nan: no correlation


def nearest_caption_indices(text: torch.Tensor, real_text: torch.Tensor) -> torch.Tensor:
    """Index of the real caption (cosine) nearest to each synthetic text ``[M]``."""
    sim = F.normalize(text.detach().float().cpu(), dim=-1) @ F.normalize(real_text.float().cpu(), dim=-1).T
    return sim.argmax(dim=1)


def caption_spearman(P: torch.Tensor, text: torch.Tensor, real_text: torch.Tensor) -> float:
    """Spearman over ``i != j`` of ``P~_ij`` and the cosine of the real captions nearest texts ``i`` and ``j``.

    Example:
        >>> import torch
        >>> t = torch.eye(3)
        >>> caption_spearman(torch.eye(3) + 0.1 * torch.tensor([[0, 2, 1], [2, 0, 1], [1, 1, 0.]]), t,
        ...                  torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 0, 1]])) > 0.5
        True
    """
    near = F.normalize(real_text.float().cpu()[nearest_caption_indices(text, real_text)], dim=-1)
    cos = near @ near.T
    mask = _off_diag(len(P))
    return _spearman(row_shares(P.cpu())[mask], cos[mask])


def shared_object_ratio(P: torch.Tensor, labels: Sequence[set[str]]) -> dict[str, float]:
    """Mean ``P~_ij`` (``i != j``) between scenes sharing an object label vs sharing none.

    ``labels[i]`` is the set of object labels of the scene pair ``i`` started from.
    """
    if len(labels) != len(P):
        raise ValueError(f"labels for {len(labels)} scenes but P is {len(P)} x {len(P)}")
    Q = row_shares(P.cpu())
    share = torch.tensor([[bool(a & b) for b in labels] for a in labels]) & _off_diag(len(P))
    none = ~share & _off_diag(len(P))
    m_share = float(Q[share].mean()) if share.any() else float("nan")
    m_none = float(Q[none].mean()) if none.any() else float("nan")
    return {"shared": m_share, "none": m_none, "ratio": m_share / m_none if m_none > 0 else float("inf"),
            "pairs_shared": int(share.sum()), "pairs_none": int(none.sum())}


def scene_labels(dset: Any, train: Any) -> list[set[str]]:
    """Object labels of the scene each synthetic pair started from (``train`` needs ``boxes``)."""
    if getattr(train, "boxes", None) is None:
        raise ValueError("scene labels need a source with object boxes (e.g. 'shapes')")
    rows = train.pair_image[dset.init_indices.detach().cpu()].tolist()
    return [{o["label"] for o in train.boxes[r]} for r in rows]


@torch.no_grad()
def caption_recognition(model: torch.nn.Module, images: torch.Tensor, captions_emb: torch.Tensor,
                        own: torch.Tensor, k: int = 5, batch_size: int = 128) -> float:
    """Share of ``images`` whose own caption (``own[i]`` indexes ``captions_emb``) ranks in the top ``k``.

    Example:
        >>> import torch
        >>> from mdw_kit.models import build_model
        >>> m = build_model("convnet3", text_dim=8, image_size=32)
        >>> 0.0 <= caption_recognition(m, torch.rand(3, 3, 32, 32), torch.randn(10, 8), torch.tensor([0, 1, 2])) <= 1.0
        True
    """
    was = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        txt = model.encode_text(captions_emb.float().to(dev))
        hits = []
        for s in range(0, len(images), batch_size):
            img = model.encode_image(images[s:s + batch_size].float().to(dev))
            top = (img @ txt.T).topk(min(k, len(txt)), dim=1).indices.cpu()
            hits.append((top == own[s:s + batch_size].view(-1, 1).cpu()).any(dim=1))
    finally:
        model.train(was)
    return float(torch.cat(hits).float().mean())
