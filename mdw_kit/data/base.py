"""The one pair-dataset abstraction every stage of mdw-kit works on.

A :class:`PairDataset` holds unique images (uint8 pixels) and image-caption
pairs that point into them, so an image may carry several captions (Flickr30k,
COCO). Every pair belongs to the split of its image. Where noise was injected,
``clean`` says which pairs still carry their own caption.

Example:
    >>> from mdw_kit.data import load_source
    >>> ds = load_source("shapes", num_images=12, image_size=32, seed=0)
    >>> train = ds.split("train")
    >>> len(train) == int((train.image_split == "train").sum())
    True
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data. The message names the file, row or field at fault."""


@dataclass
class PairDataset:
    """Images and the image-caption pairs that point into them.

    Attributes:
        images: uint8 tensor ``[I, 3, H, W]``, one row per unique image.
        image_ids: ``I`` string ids (file name, emoji code, scene id).
        image_split: numpy array of ``I`` strings in ``{"train","val","test"}``.
        captions: ``P`` caption strings (after any injected noise).
        pair_image: long tensor ``[P]``; pair ``p`` is (``images[pair_image[p]]``, ``captions[p]``).
        clean: bool tensor ``[P]``; False where injected noise gave the pair a wrong caption.
        source_caption: long tensor ``[P]``; the pair whose original caption pair ``p`` now carries
            (``arange(P)`` when clean).
        noise_known: True when ``clean`` is ground truth (noise was injected here).
        boxes: optional per-image list of objects ``{"label": str, "box": [x0, y0, x1, y1]}``
            in pixel coordinates of ``images`` (the ``shapes`` source fills it).
        meta: free-form description (source name and options, noise rate and seed).
        features: optional frozen-backbone features of ``images`` (one row per image, as
            :class:`~mdw_kit.models.retrieval.StemFeatures`), set by
            :func:`mdw_kit.features.with_features`; :meth:`image_inputs` and :meth:`pair_inputs`
            then give models these instead of pixels.
    """

    images: torch.Tensor
    image_ids: list[str]
    image_split: np.ndarray
    captions: list[str]
    pair_image: torch.Tensor
    clean: torch.Tensor | None = None
    source_caption: torch.Tensor | None = None
    noise_known: bool = False
    boxes: list[list[dict[str, Any]]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    features: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.image_split = np.asarray(self.image_split, dtype=object)
        self.pair_image = torch.as_tensor(self.pair_image, dtype=torch.long)
        if self.clean is None:
            self.clean = torch.ones(len(self.captions), dtype=torch.bool)
        if self.source_caption is None:
            self.source_caption = torch.arange(len(self.captions))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`DataError` naming the field whose shape or content is wrong."""
        n_img, n_pair = int(self.images.shape[0]) if self.images.ndim else 0, len(self.captions)
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DataError(f"field 'images': expected [I, 3, H, W], got {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise DataError(f"field 'images': expected uint8 pixels, got {self.images.dtype}")
        for name, n in (("image_ids", len(self.image_ids)), ("image_split", len(self.image_split))):
            if n != n_img:
                raise DataError(f"field '{name}': length {n} disagrees with {n_img} images")
        for name, t in (("pair_image", self.pair_image), ("clean", self.clean),
                        ("source_caption", self.source_caption)):
            if len(t) != n_pair:
                raise DataError(f"field '{name}': length {len(t)} disagrees with {n_pair} captions")
        if n_pair and (int(self.pair_image.min()) < 0 or int(self.pair_image.max()) >= n_img):
            raise DataError(f"field 'pair_image': indices must lie in [0, {n_img})")
        bad = sorted(set(self.image_split.tolist()) - set(SPLITS))
        if bad:
            raise DataError(f"field 'image_split': unknown split names {bad}; use {SPLITS}")
        for p, c in enumerate(self.captions):
            if not isinstance(c, str) or not c.strip():
                raise DataError(f"field 'captions': row {p} (image '{self.image_ids[int(self.pair_image[p])]}') "
                                "has an empty caption")
        if self.features is not None and int(self.features.shape[0]) != n_img:
            raise DataError(f"field 'features': {int(self.features.shape[0])} rows disagree with {n_img} images")
        if self.boxes is not None and len(self.boxes) != n_img:
            raise DataError(f"field 'boxes': length {len(self.boxes)} disagrees with {n_img} images")

    # -------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self.captions)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def pair_split(self) -> np.ndarray:
        """Split name of every pair (the split of its image)."""
        return self.image_split[self.pair_image.numpy()]

    def pair_pixels(self, idx: torch.Tensor | np.ndarray | list[int] | None = None) -> torch.Tensor:
        """Float pixels in ``[0, 1]`` of the images of pairs ``idx`` (all pairs by default)."""
        rows = self.pair_image if idx is None else self.pair_image[torch.as_tensor(idx, dtype=torch.long)]
        return self.images[rows].float().div_(255.0)

    def image_pixels(self) -> torch.Tensor:
        """Float pixels in ``[0, 1]`` of all unique images."""
        return self.images.float().div(255.0)

    def image_inputs(self) -> torch.Tensor:
        """What a model takes for every unique image: cached backbone features, else uint8 pixels."""
        return self.images if self.features is None else self.features

    def pair_inputs(self, idx: torch.Tensor | np.ndarray | list[int] | None = None) -> torch.Tensor:
        """Model inputs of the images of pairs ``idx`` (all pairs by default): features or uint8 pixels.

        Example:
            >>> from mdw_kit.data import load_source
            >>> ds = load_source("shapes", num_images=6, image_size=32, seed=0)
            >>> ds.pair_inputs([0, 1]).dtype
            torch.uint8
        """
        rows = self.pair_image if idx is None else self.pair_image[torch.as_tensor(idx, dtype=torch.long)]
        return self.image_inputs()[rows]

    @property
    def noise_rate(self) -> float:
        """True share of mismatched pairs (0 when no noise was injected)."""
        return float((~self.clean).float().mean()) if len(self) else 0.0

    # --------------------------------------------------------------- subsets
    def split(self, name: str) -> "PairDataset":
        """The pairs and images of one split, re-indexed."""
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}'; use one of {SPLITS}")
        return self.select_images(np.flatnonzero(self.image_split == name))

    def select_images(self, image_rows: np.ndarray | list[int]) -> "PairDataset":
        """Keep the given images (in that order) and all their pairs."""
        image_rows = np.asarray(image_rows, dtype=np.int64)
        remap = -np.ones(self.num_images, dtype=np.int64)
        remap[image_rows] = np.arange(len(image_rows))
        pi = self.pair_image.numpy()
        keep = np.flatnonzero(remap[pi] >= 0)
        return self._subset(image_rows, keep, remap)

    def select_pairs(self, pair_rows: np.ndarray | list[int]) -> "PairDataset":
        """Keep the given pairs (in that order) and the images they use."""
        pair_rows = np.asarray(pair_rows, dtype=np.int64)
        image_rows = np.unique(self.pair_image.numpy()[pair_rows])
        remap = -np.ones(self.num_images, dtype=np.int64)
        remap[image_rows] = np.arange(len(image_rows))
        return self._subset(image_rows, pair_rows, remap)

    def _subset(self, image_rows: np.ndarray, pair_rows: np.ndarray, remap: np.ndarray) -> "PairDataset":
        pr = torch.as_tensor(pair_rows, dtype=torch.long)
        return PairDataset(
            images=self.images[torch.as_tensor(image_rows, dtype=torch.long)],
            image_ids=[self.image_ids[i] for i in image_rows],
            image_split=self.image_split[image_rows],
            captions=[self.captions[p] for p in pair_rows],
            pair_image=torch.as_tensor(remap[self.pair_image.numpy()[pair_rows]]),
            clean=self.clean[pr].clone(),
            source_caption=self.source_caption[pr].clone(),
            noise_known=self.noise_known,
            boxes=None if self.boxes is None else [self.boxes[i] for i in image_rows],
            meta=dict(self.meta, parent_pairs=len(self)),
            features=None if self.features is None else self.features[torch.as_tensor(image_rows, dtype=torch.long)],
        )

    # ----------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """A short hash of pixels, captions, pairing and splits: keys caches and buffers."""
        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        h.update("\x1f".join(self.captions).encode())
        h.update(self.pair_image.numpy().tobytes())
        h.update("\x1f".join(map(str, self.image_split.tolist())).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """Counts per split, image size, noise (of the training split, and of all pairs), repeated texts.

        ``{split}_repeated_text_pairs`` counts the pairs whose caption text another pair of the
        split also carries (retrieval counts such texts as one candidate).
        """
        ps = self.pair_split
        train = ps == "train"
        out: dict[str, Any] = {"source": self.meta.get("source"), "image_size": self.image_size,
                               "images": self.num_images, "pairs": len(self), "noise_known": self.noise_known,
                               "train_noise_rate": round(float((~self.clean[torch.as_tensor(train)]).float().mean())
                                                         if train.any() else 0.0, 4),
                               "all_pairs_noise_rate": round(self.noise_rate, 4)}
        repeats = repeated_texts(self.captions, ps)
        for s in SPLITS:
            out[f"{s}_images"] = int((self.image_split == s).sum())
            out[f"{s}_pairs"] = int((ps == s).sum())
            out[f"{s}_repeated_text_pairs"] = repeats[s]["pairs"]
        return out

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        s = self.summary()
        return (f"PairDataset(source={s['source']!r}, images={s['images']}, pairs={s['pairs']}, "
                f"size={s['image_size']}px, train/val/test pairs={s['train_pairs']}/{s['val_pairs']}/"
                f"{s['test_pairs']}, train noise={s['train_noise_rate']:.2f})")


def repeated_texts(captions: Sequence[str], pair_split: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per split: ``pairs`` whose caption text another pair of the split carries, and how many ``texts``.

    Example:
        >>> repeated_texts(["a", "b", "a", "a"], ["train", "train", "test", "test"])["test"]
        {'pairs': 2, 'texts': 1}
    """
    out = {}
    for s in SPLITS:
        counts: dict[str, int] = defaultdict(int)
        for c, ps in zip(captions, pair_split):
            if ps == s:
                counts[c] += 1
        rep = [n for n in counts.values() if n > 1]
        out[s] = {"pairs": int(sum(rep)), "texts": len(rep)}
    return out
