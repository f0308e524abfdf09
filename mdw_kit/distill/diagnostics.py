"""Figures that say whether the learned correspondence and images are worth inspecting.

All correspondence figures read ``P~`` row-normalised (:func:`row_shares`), the targets the
image-to-text loss sees, and look at the off-diagonal entries ``i != j`` only:

- :func:`off_diagonal_share`: mean share of a row's normalised mass off the diagonal.
- :func:`caption_spearman`: Spearman correlation between ``P~_ij`` and the cosine of the real
  captions nearest to synthetic texts ``i`` (image ``i``'s own) and ``j``: does ``P~`` link images
  to texts that say similar things?
- :func:`shared_object_ratio`: on scenes with named objects (``shapes``), mean ``P~_ij`` between
  pairs whose starting scenes share an object label over pairs that share none.
- :func:`mismatched_start_rows`: where the truth is known, the off-diagonal share of the rows
  whose starting pair was mismatched against those that were clean: does ``P~`` move a
  mismatched image's mass away from the caption it started with?
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


def mismatched_start_rows(P: torch.Tensor, mismatched: Any) -> dict[str, float]:
    """Off-diagonal share of the rows whose starting pair was mismatched against the clean ones.

    ``mismatched[i]`` says whether synthetic pair ``i`` started from a mismatched real pair. Returns
    ``off_share_clean``, ``off_share_mismatched`` (mean ``1 - P_ii / sum_j P_ij`` over those rows,
    NaN for an empty group), their ``ratio`` and ``auroc``: how well a row's off-diagonal share
    tells the mismatched starts apart (0.5: not at all; NaN when one group is empty).

    Example:
        >>> P = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.1, 0.9]])
        >>> out = mismatched_start_rows(P, [False, True, False])
        >>> round(out["off_share_mismatched"], 2), round(out["off_share_clean"], 2), out["auroc"]
        (0.5, 0.05, 1.0)
    """
    from mdw_kit.evaluation.detection import auroc
    off = 1.0 - row_shares(P).diagonal()
    bad = torch.as_tensor(mismatched, dtype=torch.bool).reshape(-1).cpu()
    if len(bad) != len(off):
        raise ValueError(f"mismatched has {len(bad)} flags for a {len(off)} x {len(off)} correspondence")
    nan = float("nan")
    clean_share = float(off[~bad].mean()) if bool((~bad).any()) else nan
    bad_share = float(off[bad].mean()) if bool(bad.any()) else nan
    ratio = bad_share / clean_share if clean_share > 0 else nan
    return {"off_share_clean": clean_share, "off_share_mismatched": bad_share, "ratio": ratio,
            "auroc": auroc(off, bad)}


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


def clean_reference_model(model_cfg: Any, inputs: torch.Tensor, text: torch.Tensor, clean: torch.Tensor,
                          epochs: int = 30, seed: int = 0) -> torch.nn.Module:
    """A model trained on the truly clean pairs only (``inputs``: pixels or cached stem features),
    Adam 1e-3: the reference that :func:`caption_recognition` asks whether images are recognisable.

    Example:
        >>> import torch
        >>> from mdw_kit.models import ModelConfig
        >>> mc = ModelConfig(tower="convnet3", text_dim=8, image_size=32, tower_kw={"width": 4})
        >>> clean = torch.ones(6, dtype=torch.bool)
        >>> m = clean_reference_model(mc, torch.rand(6, 3, 32, 32), torch.randn(6, 8), clean, epochs=1)
        >>> m.training
        False
    """
    from mdw_kit.train import TrainConfig, train_contrastive
    keep = torch.as_tensor(clean, dtype=torch.bool).nonzero().flatten()
    torch.manual_seed(seed)
    model = model_cfg.build()
    train_contrastive(model, inputs[keep], text[keep], TrainConfig(epochs=epochs, batch_size=64, lr=1e-3,
                                                                   seed=seed, device="cpu"))
    return model.eval()


def mechanism_figures(dset: Any, train: Any, train_text: torch.Tensor,
                      reference: torch.nn.Module | None = None) -> dict[str, Any]:
    """Every figure of this module for a distilled set ``dset`` distilled from ``train``.

    ``off_share`` / ``off_share_start``, ``caption_spearman`` (and ``caption_spearman_start``, of the
    starting ``P~`` and texts: a prior can put structure there before any learning), ``pixel_change``
    (mean absolute change from the starting pixels), where ``train`` has object boxes
    ``shared_object`` (and ``shared_object_start``), where its
    noise is known ``mismatched_start`` (:func:`mismatched_start_rows`); with a
    ``reference`` model, ``recognised_top5`` of the final and ``recognised_top5_start`` of the
    starting images (own caption = the starting pair's, among all of ``train``'s captions).
    """
    P = dset.corr.matrix().detach().cpu()
    start = dset.corr.initial().matrix().detach().cpu()
    out: dict[str, Any] = {"off_share": off_diagonal_share(P), "off_share_start": off_diagonal_share(start),
                           "caption_spearman": caption_spearman(P, dset.text, train_text),
                           "pixel_change": float((dset.images.detach().cpu() - dset.init_images.cpu()).abs().mean())}
    idx = dset.init_indices.detach().cpu()
    if bool((idx >= 0).all()):
        out["caption_spearman_start"] = caption_spearman(start, train_text[idx], train_text)
    if getattr(train, "boxes", None) is not None:
        labels = scene_labels(dset, train)
        out["shared_object"] = shared_object_ratio(P, labels)
        out["shared_object_start"] = shared_object_ratio(start, labels)
    if getattr(train, "noise_known", False) and bool((idx >= 0).all()):
        clean = torch.as_tensor(train.clean, dtype=torch.bool)
        out["mismatched_start"] = mismatched_start_rows(P, ~clean[idx])
    if reference is not None:
        own = dset.init_indices.detach().cpu()
        out["recognised_top5"] = caption_recognition(reference, dset.images.detach().cpu(), train_text, own)
        out["recognised_top5_start"] = caption_recognition(reference, dset.init_images.cpu(), train_text, own)
    return out


def before_after_grid(start: torch.Tensor, finals: dict[str, torch.Tensor], captions: Sequence[str],
                      n: int = 8) -> Any:
    """A matplotlib figure: the first ``n`` starting images (top row) above each variant's final
    images (one row per entry of ``finals``), columns titled by ``captions``.

    Example:
        >>> import torch
        >>> fig = before_after_grid(torch.rand(3, 3, 8, 8), {"plain": torch.rand(3, 3, 8, 8)}, ["a", "b", "c"])
        >>> len(fig.axes)
        6
    """
    from matplotlib.figure import Figure
    rows = [("start", start)] + list(finals.items())
    n = min(n, len(start))
    fig = Figure(figsize=(1.5 * n, 1.6 * len(rows) + 0.4), layout="constrained")
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = fig.add_subplot(len(rows), n, r * n + c + 1)
            ax.imshow(imgs[c].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(captions[c][:28], fontsize=6)
    return fig
