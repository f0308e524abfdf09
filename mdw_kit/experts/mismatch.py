"""The ranked mismatch report: training pairs sorted by noise score, each with a better caption.

For every pair it gives the noise score (higher = more likely mismatched, as
:attr:`~mdw_kit.experts.report.NoiseReport.noise_score`), the clean probability and flag, the
caption the pair carries and the best-matching *other* caption of the training set for its
image, scored by the trained tracks (cosine similarity of the image and text embeddings,
averaged over the tracks). It reads like cleanlab's label-issue table: the most suspect rows
first, each with a suggested fix, and it is written as ``mismatch_report.csv``.

Example:
    >>> import numpy as np, torch
    >>> from mdw_kit.experts.report import report_from_scores
    >>> rep = report_from_scores([0.9, 0.1, 0.8], noise_rank_a=[0.0, 1.0, 0.5],
    ...                          captions=["a cat", "a dog", "a car"])
    >>> img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> txt = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    >>> t = mismatch_table(rep, img, txt)
    >>> t["pair"].tolist(), t["best_other_caption"].tolist()[0]
    ([1, 2, 0], 'a car')
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

CSV_NAME = "mismatch_report.csv"
COLUMNS = ("rank", "pair", "noise_score", "p_clean", "is_noisy", "caption", "given_similarity",
           "best_other_caption", "best_other_pair", "best_similarity")


@torch.no_grad()
def track_embeddings(states: Mapping[str, Mapping[str, torch.Tensor]], model_fn: Callable[[], torch.nn.Module],
                     images: torch.Tensor, text: torch.Tensor,
                     batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair image and text embeddings of every track, each L2-normalised, concatenated and
    scaled so that the dot product of two rows is the mean of the tracks' cosine similarities.

    Args:
        states: track -> ``state_dict`` (``DualTrackResult.states``).
        model_fn: builds an empty model the states load into.
        images: ``[N, ...]`` the pairs' images (pixels or cached features, what the model takes).
        text: ``[N, D]`` the pairs' caption embeddings.

    Example:
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel
        >>> fn = lambda: RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> img, txt = track_embeddings({"A": fn().state_dict()}, fn, torch.rand(5, 3, 8, 8), torch.randn(5, 8))
        >>> img.shape, round(float(img.norm(dim=1)[0]), 4)
        (torch.Size([5, 8]), 1.0)
    """
    if len(images) != len(text):
        raise ValueError(f"track_embeddings: {len(images)} images but {len(text)} texts")
    if not states:
        raise ValueError("track_embeddings: no track states given")
    img_parts, txt_parts = [], []
    for state in states.values():
        model = _load(model_fn, state).eval()
        img_parts.append(torch.cat([F.normalize(model.encode_image(images[k:k + batch_size]).float(), dim=1)
                                    for k in range(0, len(images), batch_size)]))
        txt_parts.append(torch.cat([F.normalize(model.encode_text(text[k:k + batch_size]).float(), dim=1)
                                    for k in range(0, len(text), batch_size)]))
    scale = len(states) ** -0.5
    return torch.cat(img_parts, dim=1).cpu() * scale, torch.cat(txt_parts, dim=1).cpu() * scale


def buffer_states(buffer: Any, model_fn: Callable[[], torch.nn.Module],
                  trajectories: Sequence[int] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts of the last epoch of an expert buffer's trajectories (default: all of them), for
    :func:`track_embeddings` where only the buffer is at hand.

    Example:
        >>> from torch import nn
        >>> from mdw_kit.models.retrieval import ImageTower, RetrievalModel, get_flat
        >>> fn = lambda: RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 8, 8)
        >>> flat = get_flat(fn())
        >>> class Buf:
        ...     num_trajectories = 1
        ...     def trajectory(self, i): return torch.stack([flat * 0, flat])
        >>> s = buffer_states(Buf(), fn)
        >>> list(s), bool(torch.equal(get_flat(_load(fn, s["0"])), flat))
        (['0'], True)
    """
    from mdw_kit.models.retrieval import set_flat
    picks = range(buffer.num_trajectories) if trajectories is None else trajectories
    out = {}
    for i in picks:
        model = model_fn()
        set_flat(model, buffer.trajectory(int(i))[-1].float())
        out[str(i)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out


def _load(model_fn: Callable[[], torch.nn.Module], state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    model = model_fn()
    model.load_state_dict(state)
    return model


def best_other_captions(image_emb: torch.Tensor, text_emb: torch.Tensor, captions: Sequence[str],
                        chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pair: its given similarity, and the index and similarity of the best-matching other
    caption (not its own row and not a copy of its own caption text). Chunked: memory ``chunk x N``.

    Example:
        >>> e = torch.eye(3)
        >>> given, best, sim = best_other_captions(e, e[[0, 2, 1]], ["x", "y", "z"])
        >>> given.tolist(), best.tolist()
        ([1.0, 0.0, 0.0], [1, 2, 1])
    """
    n = len(captions)
    if not (len(image_emb) == len(text_emb) == n):
        raise ValueError(f"best_other_captions: {len(image_emb)} images, {len(text_emb)} texts, "
                         f"{n} captions; they must agree")
    codes = torch.as_tensor(pd.factorize(pd.Series(list(captions)))[0])
    given = (image_emb * text_emb).sum(dim=1)
    best = torch.empty(n, dtype=torch.long)
    best_sim = torch.empty(n)
    for k in range(0, n, chunk):
        sim = image_emb[k:k + chunk] @ text_emb.T
        sim[codes[k:k + chunk, None] == codes[None, :]] = -float("inf")   # own caption and its copies
        best_sim[k:k + chunk], best[k:k + chunk] = sim.max(dim=1)
    return given.numpy(), best.numpy(), best_sim.numpy()


def mismatch_table(report: Any, image_emb: torch.Tensor | None = None, text_emb: torch.Tensor | None = None,
                   captions: Sequence[str] | None = None) -> pd.DataFrame:
    """Every pair, most likely mismatched first (by ``report.noise_score``), with the best-matching
    other caption where embeddings are given.

    Columns: ``rank, pair, noise_score, p_clean, is_noisy[, true_clean][, image_id], caption``
    and, with embeddings, ``given_similarity, best_other_caption, best_other_pair, best_similarity``.
    """
    captions = list(captions if captions is not None else (report.captions or []))
    if captions and len(captions) != len(report):
        raise ValueError(f"mismatch_table: {len(captions)} captions for a report of {len(report)} pairs")
    cols: dict[str, Any] = {"pair": np.arange(len(report)), "noise_score": report.noise_score,
                            "p_clean": report.p_clean, "is_noisy": report.is_noisy}
    if report.true_clean is not None:
        cols["true_clean"] = report.true_clean
    if report.image_ids is not None:
        cols["image_id"] = report.image_ids
    if captions:
        cols["caption"] = captions
    if image_emb is not None and text_emb is not None:
        if not captions:
            raise ValueError("mismatch_table: the best other caption needs the captions")
        given, best, sim = best_other_captions(image_emb, text_emb, captions)
        cols.update(given_similarity=given, best_other_caption=[captions[int(j)] for j in best],
                    best_other_pair=best, best_similarity=sim)
    table = pd.DataFrame(cols).sort_values(["noise_score", "p_clean"], ascending=[False, True], kind="mergesort")
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def write_mismatch_report(table: pd.DataFrame, out_dir: str | Path) -> Path:
    """Write the table as ``out_dir/mismatch_report.csv`` (rounded to 4 decimals); returns the path.

    Example:
        >>> import tempfile
        >>> p = write_mismatch_report(pd.DataFrame({"rank": [1], "noise_score": [0.123456]}), tempfile.mkdtemp())
        >>> p.read_text().splitlines()
        ['rank,noise_score', '1,0.1235']
    """
    path = Path(out_dir) / CSV_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    table.round(4).to_csv(path, index=False)
    return path


def mismatch_report(report: Any, states: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                    model_fn: Callable[[], torch.nn.Module] | None = None, images: torch.Tensor | None = None,
                    text: torch.Tensor | None = None, out_dir: str | Path | None = None) -> pd.DataFrame:
    """The ranked table of :func:`mismatch_table`, with the best other caption scored by the tracks'
    final models when ``states``, ``model_fn``, ``images`` and ``text`` are given; written as
    ``mismatch_report.csv`` under ``out_dir`` when given.

    Example:
        >>> from mdw_kit.experts.report import report_from_scores
        >>> mismatch_report(report_from_scores([0.2, 0.9], captions=["a", "b"]))["pair"].tolist()
        [0, 1]
    """
    img = txt = None
    if states is not None:
        if model_fn is None or images is None or text is None:
            raise ValueError("mismatch_report: states need model_fn, images and text to score captions")
        img, txt = track_embeddings(states, model_fn, images, text)
    table = mismatch_table(report, img, txt)
    if out_dir is not None:
        write_mismatch_report(table, out_dir)
    return table
