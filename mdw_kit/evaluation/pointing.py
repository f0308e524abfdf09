"""The pointing game: do region maps peak on the objects their texts name? One rule for every caller.

Used by the CEO tests, the region viewer, notebook 04 and the mechanism benchmarks. Maps of any
resolution are resized to the image (:func:`resize_map`) before the peak is read.

Example:
    >>> m = np.zeros((2, 4, 4)); m[:, 0, 0] = 1
    >>> objs = [[{"label": "a", "box": [0, 0, 2, 2]}], [{"label": "b", "box": [2, 2, 4, 4]}]]
    >>> pointing_game(m, objs, [["a"], ["b"]]), pointing_game(m, objs)
    (0.5, 0.5)
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def resize_map(region: ArrayLike, size: int | tuple[int, int]) -> np.ndarray:
    """A 2-D map resized (bilinear) to ``size`` and scaled to ``[0, 1]`` (a flat map becomes zeros).

    Example:
        >>> resize_map(np.eye(2), 4).shape
        (4, 4)
    """
    m = torch.as_tensor(np.asarray(region.detach().cpu() if isinstance(region, torch.Tensor) else region),
                        dtype=torch.float32)
    if m.ndim != 2:
        raise ValueError(f"region map: expected [h, w], got shape {tuple(m.shape)}")
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(m.shape) != hw:
        m = torch.nn.functional.interpolate(m[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]
    m = m.numpy().astype(np.float64)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)



def named_labels(caption: str, objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """Labels of the objects in ``objects`` that ``caption`` names (whole-word, case-insensitive).

    Example:
        >>> named_labels("a red circle left of a blue square",
        ...              [{"label": "red circle", "box": [0, 0, 1, 1]}, {"label": "green star", "box": [0, 0, 1, 1]}])
        ['red circle']
    """
    text = " " + re.sub(r"[^a-z0-9]+", " ", caption.lower()) + " "
    out = []
    for obj in objects:
        label = re.sub(r"[^a-z0-9]+", " ", str(obj["label"]).lower()).strip()
        if label and f" {label} " in text and obj["label"] not in out:
            out.append(obj["label"])
    return out


def map_peak(region: ArrayLike, image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(x, y)`` pixel of the maximum of a region map resized to the image (first one on ties).

    Example:
        >>> m = np.zeros((2, 2)); m[1, 0] = 1
        >>> map_peak(m, 2)
        (0, 1)
    """
    m = resize_map(region, image_size)
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(x), int(y)


def pointing_game_hits(maps: ArrayLike | Sequence[ArrayLike], boxes: Sequence[Sequence[Mapping[str, Any]]],
                       top_labels: Sequence[Sequence[str] | str] | None = None,
                       image_size: int | None = None) -> np.ndarray:
    """Per image: does the region-map peak fall inside the box of an object its top text names?

    The rule: the map is resized (bilinear) to the image, its peak pixel taken (first on ties),
    and a hit is a peak inside a target box. ``boxes[i]`` are the objects of image ``i``
    (``{"label", "box": [x0, y0, x1, y1]}`` in pixels of an ``image_size`` image, default the
    maps' side; box ends exclusive); ``top_labels[i]`` the labels its top text names (``None``:
    every object is a target). An image whose top text names none of its objects is a miss.

    Example:
        >>> m = np.zeros((1, 4, 4)); m[0, 0, 0] = 1
        >>> pointing_game_hits(m, [[{"label": "a", "box": [0, 0, 2, 2]}]], [["a"]]).tolist()
        [True]
    """
    if top_labels is None:
        top_labels = [[o["label"] for o in objs] for objs in boxes]
    if not (len(maps) == len(boxes) == len(top_labels)):
        raise ValueError(f"pointing game: {len(maps)} maps, {len(boxes)} box lists, "
                         f"{len(top_labels)} label lists; they must agree")
    hits = np.zeros(len(maps), dtype=bool)
    for i, (region, objs, labels) in enumerate(zip(maps, boxes, top_labels)):
        labels = [labels] if isinstance(labels, str) else list(labels)
        size = image_size or int(np.asarray(region.shape)[-1])
        x, y = map_peak(region, size)
        hits[i] = any(o["label"] in labels and o["box"][0] <= x < o["box"][2] and o["box"][1] <= y < o["box"][3]
                      for o in objs)
    return hits


def pointing_game(maps: ArrayLike | Sequence[ArrayLike], boxes: Sequence[Sequence[Mapping[str, Any]]],
                  top_labels: Sequence[Sequence[str] | str] | None = None, image_size: int | None = None) -> float:
    """Share of images whose region-map peak falls inside the box of an object their top text names.

    See :func:`pointing_game_hits` for the arguments.

    Example:
        >>> m = np.zeros((2, 4, 4)); m[:, 0, 0] = 1
        >>> objs = [[{"label": "a", "box": [0, 0, 2, 2]}], [{"label": "b", "box": [2, 2, 4, 4]}]]
        >>> pointing_game(m, objs, [["a"], ["b"]])
        0.5
    """
    hits = pointing_game_hits(maps, boxes, top_labels, image_size)
    return float(hits.mean()) if len(hits) else float("nan")


def box_area_share(objects: Sequence[Mapping[str, Any]], labels: Sequence[str], image_size: int) -> float:
    """Share of an ``image_size`` image covered by the boxes of the objects named in ``labels``:
    the chance that a uniformly random peak lands in one of them.

    Example:
        >>> box_area_share([{"label": "a", "box": [0, 0, 2, 2]}, {"label": "b", "box": [2, 2, 4, 4]}], ["a"], 4)
        0.25
    """
    cover = np.zeros((image_size, image_size), dtype=bool)
    for o in objects:
        if o["label"] in labels:
            x0, y0, x1, y1 = (int(round(v)) for v in o["box"])
            cover[max(y0, 0):y1, max(x0, 0):x1] = True
    return float(cover.mean())


def distilled_pointing_game(dset: Any, train: Any, train_text: torch.Tensor,
                            maps: ArrayLike | None = None) -> dict[str, Any]:
    """The pointing game of a distilled set whose images started from real pairs with object boxes.

    For synthetic image ``i``: its top text is ``argmax_j P~_ij``, read as the nearest real
    training caption; the objects that caption names among the boxes of the real image ``i``
    started from are the targets; a hit is a region-map peak inside one of their boxes.

    Args:
        dset: a ``DistilledSet`` (``corr``, ``init_indices``, ``maps``, ``nearest_captions``).
        train: the training ``PairDataset`` it was distilled from (with ``boxes``, e.g. ``shapes``).
        train_text: ``[N, d]`` caption embeddings of ``train``.
        maps: ``[M, H, W]`` maps to score (default ``dset.maps``, the latest).

    Returns:
        ``{"share", "share_named", "hits", "chance", "named", "num_images", "top_captions",
        "labels"}``; ``chance`` is the mean box-area share of the targets (what random peaks would
        score), ``named`` the share of images whose top caption names at least one of their
        objects (the ceiling of ``share``: a pair that started mismatched names none), and
        ``share_named`` the hit share among those images (the maps' own accuracy).
    """
    if train.boxes is None:
        raise ValueError("pointing game: the training data has no object boxes (use the 'shapes' source)")
    maps = dset.maps if maps is None else maps
    if maps is None:
        raise ValueError("pointing game: the distilled set holds no region maps (distil with CEO on)")
    near = dset.nearest_captions(train_text, train.captions, k=1)
    top = dset.corr.matrix().detach().cpu().argmax(dim=1).tolist()
    rows = train.pair_image[dset.init_indices.detach().cpu()].tolist()
    boxes = [train.boxes[r] for r in rows]
    captions = [near[j][0][0] for j in top]
    labels = [named_labels(c, b) for c, b in zip(captions, boxes)]
    size = int(dset.images.shape[-1])
    hits = pointing_game_hits(maps, boxes, labels, image_size=size)
    chance = [box_area_share(b, lab, size) for b, lab in zip(boxes, labels)]
    named = np.array([bool(lab) for lab in labels])
    return {"share": float(hits.mean()), "hits": hits, "chance": float(np.mean(chance)),
            "share_named": float(hits[named].mean()) if named.any() else float("nan"),
            "named": float(named.mean()), "num_images": len(hits),
            "top_captions": captions, "labels": labels}


__all__ = ["resize_map", "named_labels", "map_peak", "pointing_game_hits", "pointing_game", "box_area_share",
           "distilled_pointing_game"]
