"""Retrieval metrics: TR/IR@K and R-sum, multi-caption aware; embedding and scoring a split.

Similarities are ``[num_images, num_captions]`` and ``pair_image[c]`` is the image of
caption ``c``. Image-to-text (TR@K): an image is a hit when ANY of its captions ranks in
its top K captions. Text-to-image (IR@K): a caption is a hit when its image ranks in
its top K images. Ties are broken pessimistically: a wrong candidate scoring equal to
the correct one ranks above it, so a constant model scores 0 (never a lucky hit).
Captions with identical texts (identical frozen embeddings, :func:`caption_groups`) are
one candidate: an image is a hit when a caption with the text of any of its captions
ranks in its top K texts, and a caption finds any image that carries its text, so a
repeated text never counts against the query.

Training fresh models on a set and testing them is :mod:`mdw_kit.evaluation.protocol`.

Example:
    >>> import torch
    >>> m = retrieval_metrics(torch.eye(3), torch.arange(3))
    >>> m["R-sum"]
    600.0
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from mdw_kit.data.base import DataError, PairDataset
from mdw_kit.utils import model_device as _model_device, to_pixels

Split = tuple  # (PairDataset, text_emb) or (pixels [I,3,H,W], text_emb [P,d], pair_image [P])


# ----------------------------------------------------------------- metrics
def _check_sim(sim: torch.Tensor, pair_image: torch.Tensor) -> None:
    if sim.ndim != 2:
        raise ValueError(f"sim must be [num_images, num_captions], got {tuple(sim.shape)}")
    if pair_image.ndim != 1 or pair_image.numel() != sim.shape[1]:
        raise ValueError(f"pair_image must have one entry per caption ({sim.shape[1]}), "
                         f"got shape {tuple(pair_image.shape)}")
    if sim.shape[1] == 0 or sim.shape[0] == 0:
        raise ValueError("sim is empty: nothing to evaluate")
    if int(pair_image.min()) < 0 or int(pair_image.max()) >= sim.shape[0]:
        raise ValueError(f"pair_image values must lie in [0, {sim.shape[0]})")
    if not bool(torch.isfinite(sim).all()):
        raise ValueError("sim contains NaN or infinite values")


def caption_groups(text_emb: torch.Tensor) -> torch.Tensor:
    """``[C]`` text id of every caption: captions with identical embedding rows (identical texts) share one.

    Example:
        >>> g = caption_groups(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
        >>> bool(g[0] == g[2]), bool(g[0] == g[1])
        (True, False)
    """
    text_emb = torch.as_tensor(text_emb).detach().cpu()
    if text_emb.ndim != 2:
        raise ValueError(f"text_emb must be [num_captions, d], got {tuple(text_emb.shape)}")
    return torch.unique(text_emb, dim=0, return_inverse=True)[1]


def _check_groups(groups: torch.Tensor, num_cap: int) -> None:
    if groups.ndim != 1 or groups.numel() != num_cap or (num_cap and int(groups.min()) < 0):
        raise ValueError(f"groups must hold one non-negative text id per caption ({num_cap}), "
                         f"got shape {tuple(groups.shape)}")


def _ranks(sim: torch.Tensor, pair_image: torch.Tensor,
           groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based pessimistic ranks: best correct text per image (images with captions), image per caption.

    ``groups[c]`` is the text id of caption ``c`` (default: every caption its own text); the
    candidates of an image are texts, each scored by its best caption.
    """
    num_img, num_cap = sim.shape
    groups = torch.arange(num_cap) if groups is None else groups
    num_txt = int(groups.max()) + 1
    txt_sim = sim.new_full((num_img, num_txt), float("-inf")).scatter_reduce(
        1, groups.view(1, -1).expand(num_img, -1), sim, "amax")  # [I, T]
    owns = torch.zeros(num_img, num_txt, dtype=torch.bool)
    owns[pair_image, groups] = True  # image i carries text t
    has_cap = owns.any(dim=1)
    best = txt_sim.masked_fill(~owns, float("-inf")).amax(dim=1, keepdim=True)
    tr_rank = ((txt_sim >= best) & ~owns).sum(dim=1)[has_cap]
    correct = owns[:, groups]  # [I, C]: image i carries the text of caption c
    pos = sim.masked_fill(~correct, float("-inf")).amax(dim=0, keepdim=True)
    ir_rank = ((sim >= pos) & ~correct).sum(dim=0)
    return tr_rank, ir_rank


def retrieval_metrics(sim: torch.Tensor, pair_image: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10), groups: torch.Tensor | None = None) -> dict[str, float]:
    """TR@k, IR@k (percent, 0..100) and R-sum (their sum) of an image x caption similarity.

    Images without any caption are left out of TR. Ties count against the query
    (pessimistic), so results are deterministic and a constant ``sim`` scores 0 at
    every k below the number of candidates. ``groups`` (:func:`caption_groups` of the
    captions' embeddings) makes captions with one text one candidate (see the module doc).

    Example:
        >>> import torch
        >>> sim = torch.tensor([[0.9, 0.1, 0.8], [0.2, 0.7, 0.95]])  # captions 0 and 2 are image 0's
        >>> m = retrieval_metrics(sim, torch.tensor([0, 1, 0]), ks=(1,))
        >>> m["TR@1"], round(m["IR@1"], 2)  # image 1 loses to caption 2; caption 2 finds image 0 second
        (50.0, 66.67)
        >>> tie = torch.tensor([[0.9, 0.9], [0.2, 0.2]])  # both images carry the text "a dog"
        >>> retrieval_metrics(tie, torch.tensor([0, 1]), ks=(1,))["TR@1"]
        0.0
        >>> retrieval_metrics(tie, torch.tensor([0, 1]), ks=(1,), groups=torch.tensor([0, 0]))["R-sum"]
        200.0
    """
    sim = torch.as_tensor(sim).detach().float().cpu()
    pair_image = torch.as_tensor(pair_image, dtype=torch.long).cpu()
    _check_sim(sim, pair_image)
    if groups is not None:
        groups = torch.as_tensor(groups, dtype=torch.long).cpu()
        _check_groups(groups, sim.shape[1])
    tr_rank, ir_rank = _ranks(sim, pair_image, groups)
    out: dict[str, float] = {}
    for k in ks:
        out[f"TR@{k}"] = 100.0 * float((tr_rank < k).double().mean())
    for k in ks:
        out[f"IR@{k}"] = 100.0 * float((ir_rank < k).double().mean())
    out["R-sum"] = float(sum(out.values()))
    return out


# --------------------------------------------------------------- embedding
@torch.no_grad()
def _embed(model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor,
           batch_size: int, pixels: bool) -> torch.Tensor:
    dev = _model_device(model)
    parts = []
    for i in range(0, int(data.shape[0]), batch_size):
        chunk = data[i:i + batch_size]
        x = to_pixels(chunk, dev) if pixels else chunk.to(dev).float()
        parts.append(fn(x).float().cpu())
    return torch.cat(parts)


def embed_arrays(model: nn.Module, images: torch.Tensor, text_emb: torch.Tensor,
                 batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised joint embeddings ``([I, D], [P, D])`` of images and caption embeddings.

    Eval mode, no grad, float32 (the model's training mode is restored).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> m = RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> [e.shape[0] for e in embed_arrays(m, torch.rand(3, 3, 8, 8), torch.randn(5, 8))]
        [3, 5]
    """
    was_training = model.training
    model.eval()
    try:
        img = _embed(model, model.encode_image, images, batch_size, pixels=True)
        txt = _embed(model, model.encode_text, text_emb, batch_size, pixels=False)
    finally:
        model.train(was_training)
    return img, txt


def _check_split_text(ds: PairDataset, text_emb: torch.Tensor) -> None:
    if text_emb.ndim != 2 or int(text_emb.shape[0]) != len(ds):
        raise DataError(f"field 'text_emb': expected one row per caption of the split "
                        f"([{len(ds)}, d]), got {tuple(text_emb.shape)}")


def embed_split(model: nn.Module, ds: PairDataset, text_emb: torch.Tensor,
                batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of a split's unique images ``[I, D]`` and of its captions ``[P, D]``.

    ``text_emb`` holds the split's caption embeddings (row ``c`` for ``ds.captions[c]``).

    Example:
        >>> import torch, numpy as np
        >>> from torch import nn
        >>> from mdw_kit.data.base import PairDataset
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> ds = PairDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ["a", "b"],
        ...                  np.array(["test"] * 2), ["x", "y", "z"], torch.tensor([0, 1, 1]))
        >>> m = RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> [e.shape[0] for e in embed_split(m, ds, torch.randn(3, 8))]
        [2, 3]
    """
    text_emb = torch.as_tensor(text_emb)
    _check_split_text(ds, text_emb)
    return embed_arrays(model, ds.image_inputs(), text_emb, batch_size)


def evaluate_arrays(model: nn.Module, images: torch.Tensor, text_emb: torch.Tensor,
                    pair_image: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Retrieval metrics of ``model`` on unique ``images``, captions ``text_emb`` and ``pair_image``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> m = RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> 0 <= evaluate_arrays(m, torch.rand(4, 3, 8, 8), torch.randn(4, 8), torch.arange(4))["R-sum"] <= 600
        True
    """
    img, txt = embed_arrays(model, images, torch.as_tensor(text_emb), batch_size)
    return retrieval_metrics(img @ txt.T, torch.as_tensor(pair_image, dtype=torch.long),
                             groups=caption_groups(text_emb))


def evaluate_model(model: nn.Module, ds: PairDataset, text_emb: torch.Tensor,
                   batch_size: int = 256) -> dict[str, float]:
    """TR/IR@1/5/10 and R-sum of ``model`` on a split (eval mode, no grad).

    Example:
        >>> import torch, numpy as np
        >>> from torch import nn
        >>> from mdw_kit.data.base import PairDataset
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> ds = PairDataset(torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8), list("abc"),
        ...                  np.array(["val"] * 3), ["x", "y", "z"], torch.arange(3))
        >>> m = RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> sorted(evaluate_model(m, ds, torch.randn(3, 8)))[:2]
        ['IR@1', 'IR@10']
    """
    img, txt = embed_split(model, ds, text_emb, batch_size)
    return retrieval_metrics(img @ txt.T, ds.pair_image, groups=caption_groups(text_emb))


def evaluate_val(model: nn.Module, split: Split, batch_size: int = 256) -> dict[str, float]:
    """Metrics on ``(PairDataset, text_emb)`` or ``(pixels, text_emb, pair_image)``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> m = RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> "R-sum" in evaluate_val(m, (torch.rand(2, 3, 8, 8), torch.randn(2, 8), torch.arange(2)))
        True
    """
    if _is_dataset_split(split):
        return evaluate_model(model, split[0], split[1], batch_size)
    return evaluate_arrays(model, *_split_arrays(split), batch_size=batch_size)


def _is_dataset_split(split: Any) -> bool:
    return isinstance(split, (tuple, list)) and len(split) == 2 and isinstance(split[0], PairDataset)


def _split_arrays(split: Split) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(unique images, caption embeddings, pair_image)`` of either form of evaluation split."""
    if _is_dataset_split(split):
        ds, text = split[0], torch.as_tensor(split[1])
        _check_split_text(ds, text)
        return ds.image_inputs(), text, ds.pair_image
    if isinstance(split, (tuple, list)) and len(split) == 3:
        return split[0], torch.as_tensor(split[1]), split[2]
    raise TypeError("an evaluation split must be (PairDataset, text_emb) or "
                    f"(pixels, text_emb, pair_image); got {type(split).__name__}")


def evaluate_ensemble(models: Sequence[nn.Module], split: Split, batch_size: int = 256) -> dict[str, float]:
    """Retrieval metrics of several models together: the mean of their image-caption similarities.

    ``split`` is as for :func:`evaluate_val`. Each model's similarity matrix is its own cosine
    similarity, so models with different temperatures weigh the same.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> ms = [RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        ...       for _ in range(2)]
        >>> "R-sum" in evaluate_ensemble(ms, (torch.rand(3, 3, 8, 8), torch.randn(3, 8), torch.arange(3)))
        True
    """
    if not models:
        raise ValueError("evaluate_ensemble needs at least one model")
    images, text, pair_image = _split_arrays(split)
    sim = None
    for m in models:
        img, txt = embed_arrays(m, images, text, batch_size)
        sim = img @ txt.T if sim is None else sim + img @ txt.T
    return retrieval_metrics(sim / len(models), torch.as_tensor(pair_image, dtype=torch.long),
                             groups=caption_groups(text))


# ------------------------------------------------------------- summaries
def summarize(metrics: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (ddof=1; 0 for a single entry) per metric key.

    Example:
        >>> summarize([{"R-sum": 100.0}, {"R-sum": 200.0}])
        ({'R-sum': 150.0}, {'R-sum': 70.71067811865476})
    """
    if not metrics:
        raise ValueError("summarize needs at least one metrics dict")
    keys = list(metrics[0])
    mean, sd = {}, {}
    for k in keys:
        vals = [float(m[k]) for m in metrics]
        mu = sum(vals) / len(vals)
        mean[k] = mu
        sd[k] = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, sd


def _cell(v: Any, digits: int) -> str:
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return f"{float(v[0]):.{digits}f} ± {float(v[1]):.{digits}f}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "" if v is None else str(v)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                 digits: int = 1) -> str:
    """An aligned plain-text table; one dict per row, a ``(mean, sd)`` value prints as ``mean ± sd``.

    Columns default to the keys in order of first appearance; text columns are left-aligned,
    numbers right-aligned.

    Example:
        >>> print(format_table([{"method": "full", "R-sum": 350.04}, {"method": "random", "R-sum": (117.0, 3.2)}]))
        method        R-sum
        ------  -----------
        full          350.0
        random  117.0 ± 3.2
    """
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c), digits) for c in cols] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float, tuple, list)) or r.get(c) is None for r in rows)
               for c in cols]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]

    def line(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric)).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


__all__ = ["retrieval_metrics", "caption_groups", "embed_split", "embed_arrays", "evaluate_model", "evaluate_arrays",
           "evaluate_val", "evaluate_ensemble", "summarize", "format_table"]
