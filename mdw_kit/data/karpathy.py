"""``karpathy``: Flickr30k / MS-COCO from a local image folder and the Karpathy split JSON.

The JSON is ``{"images": [{"filename", "filepath" (COCO, optional), "split":
"train"|"val"|"test"|"restval", "sentences": [{"raw": ...}, ...]}, ...]}``.
``restval`` goes to train. Each image keeps up to ``captions_per_image``
captions (five in both datasets): one image row, several pairs. Images are
decoded with Pillow, resized (shorter side) and centre-cropped to
``image_size``. A file is looked up at ``image_root/filepath/filename``, then
``image_root/filename``.

Bad rows (missing or corrupt image, empty caption, missing field, unknown
split) are a :class:`DataError` naming the row and file; with ``skip_bad=True``
they are dropped and listed in ``meta['skipped']``. An image file listed in two
splits, or files with identical bytes in two splits, is a :class:`DataError`
that counts and names them (``allow_leakage=True``: a warning); repeated rows
are counted in ``meta['duplicates']``. Builds are cached under
``cache_dir('karpathy')``, keyed by the JSON's content, the image folder and
the options.

Example:
    >>> import json, tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (50, 40), "red").save(root / "a.jpg")
    >>> entry = {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "red"}, {"raw": "a red square"}]}
    >>> _ = (root / "split.json").write_text(json.dumps({"images": [entry]}))
    >>> ds = load_karpathy(root, root / "split.json", cache=False)
    >>> ds.captions, ds.image_split.tolist()
    (['red', 'a red square'], ['test'])
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mdw_kit.utils import progress

from .base import DataError, PairDataset
from .checks import check_leakage, duplicate_rows, warn_duplicates
from .sources import (BadRows, assemble, cached_build, check_caption, check_count, check_image_size,
                      decode_file, split_counts)

BUILD_VERSION = 2
SPLIT_NAMES = {"train": "train", "restval": "train", "val": "val", "test": "test"}
REQUIRED_FIELDS = ("filename", "split", "sentences")


def read_split_json(split_json: str | Path) -> list[dict[str, Any]]:
    """The ``images`` list of a Karpathy split file; a missing or malformed file is a :class:`DataError`."""
    path = Path(split_json)
    if not path.is_file():
        raise DataError(f"missing split file '{path}'")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"split file '{path}' is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"(line {line}); save it as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"split file '{path}' is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"split file '{path}': missing field 'images' (a list); found {found}")
    return data["images"]


def _parse_entry(i: int, entry: Any, root: Path, k: int, bad: BadRows) -> tuple[Path, str, list[str]] | None:
    """(image path, split, captions) of entry ``i``, or ``None`` when it is bad and skipped."""
    if not isinstance(entry, dict) or any(f not in entry for f in REQUIRED_FIELDS):
        fields = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        missing = [f for f in REQUIRED_FIELDS if not isinstance(entry, dict) or f not in entry]
        return bad.report({"row": i}, f"missing field(s) {missing}; the entry has {fields}")
    if entry["split"] not in SPLIT_NAMES:
        return bad.report({"row": i, "file": entry["filename"]},
                          f"unknown split {entry['split']!r}; use one of {sorted(SPLIT_NAMES)}")
    if not isinstance(entry["sentences"], list):
        return bad.report({"row": i, "file": entry["filename"]}, "field 'sentences' is not a list")
    caps = []
    for j, sent in enumerate(entry["sentences"][:k]):
        cap = check_caption(sent.get("raw") if isinstance(sent, dict) else sent)
        if cap is None:
            return bad.report({"row": i, "file": entry["filename"]}, f"sentence {j} has an empty caption")
        caps.append(cap)
    if not caps:
        return bad.report({"row": i, "file": entry["filename"]}, "no sentences")
    path = root / entry.get("filepath", "") / entry["filename"]
    if not path.is_file() and (root / entry["filename"]).is_file():
        path = root / entry["filename"]
    return path, SPLIT_NAMES[entry["split"]], caps


def _cap_per_split(rows: list[tuple[int, tuple[Path, str, list[str]]]], max_images: int | None) -> list:
    """The first rows of each split, in proportion to the split's share, ``max_images`` in all."""
    if max_images is None or max_images >= len(rows):
        return rows
    splits = np.array([r[1][1] for r in rows], dtype=object)
    keep = []
    for s in ("train", "val", "test"):
        idx = np.flatnonzero(splits == s)
        keep += idx[:max(1 if len(idx) else 0, round(max_images * len(idx) / len(rows)))].tolist()
    return [rows[i] for i in sorted(keep)[:max(max_images, 1)]]


def load_karpathy(image_root: str | Path, split_json: str | Path, image_size: int = 32,
                  max_images: int | None = None, captions_per_image: int = 5, skip_bad: bool = False,
                  cache: bool = True, allow_leakage: bool = False) -> PairDataset:
    """Flickr30k / COCO images with their Karpathy splits and up to five captions each.

    Args:
        image_root: folder of the images (COCO: the folder holding ``train2014/`` and ``val2014/``).
        split_json: ``dataset_flickr30k.json`` / ``dataset_coco.json``.
        image_size: side in pixels, 32..224 (resize the shorter side, centre crop).
        max_images: keep only this many images (the first of each split, splits in proportion).
        captions_per_image: keep at most this many captions per image.
        skip_bad: drop bad rows and report them instead of raising.
        cache: reuse / write the cached build under ``cache_dir('karpathy')``.
        allow_leakage: keep images shared by two splits (with a warning) instead of raising.

    Example:
        >>> # ds = load_karpathy("~/data/flickr30k-images", "~/data/dataset_flickr30k.json", max_images=1000)
    """
    root, json_path = Path(image_root).expanduser(), Path(split_json).expanduser()
    if not root.is_dir():
        raise DataError(f"missing image folder '{root}'")
    entries = read_split_json(json_path)
    options = {"image_root": str(root.resolve()), "split_json": str(json_path.resolve()),
               "image_size": check_image_size(image_size),
               "max_images": check_count("max_images", max_images, minimum=1, optional=True),
               "captions_per_image": check_count("captions_per_image", captions_per_image, minimum=1),
               "skip_bad": BadRows(skip_bad).skip_bad, "allow_leakage": allow_leakage}
    key = {**options, "json_sha256": hashlib.sha256(json_path.read_bytes()).hexdigest(), "build": BUILD_VERSION}
    return cached_build("karpathy", key, lambda: _build(entries, root, options), use_cache=cache)


def _build(entries: list[Any], root: Path, options: dict[str, Any]) -> PairDataset:
    bad = BadRows(options["skip_bad"])
    rows = [(i, r) for i, e in enumerate(entries)
            if (r := _parse_entry(i, e, root, options["captions_per_image"], bad)) is not None]
    rows = _cap_per_split(rows, options["max_images"])
    size = options["image_size"]

    def decode(row: tuple[int, tuple[Path, str, list[str]]]) -> tuple[np.ndarray, str] | DataError:
        try:
            return decode_file(row[1][0], size)
        except DataError as e:
            return e

    kept = []
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    try:
        for row, out in zip(rows, progress(pool.map(decode, rows), desc="decode images", total=len(rows))):
            if isinstance(out, DataError):
                bad.report({"row": row[0], "file": str(row[1][0])}, str(out))
            else:
                kept.append((row, out))
    finally:
        pool.shutdown(cancel_futures=True)
    meta = {"source": "karpathy", "options": options, "entries": len(entries)}
    bad.finish(meta, "karpathy")
    split = [r[1][1] for r, _ in kept]
    names, digests = [str(r[1][0].relative_to(root)) for r, _ in kept], [out[1] for _, out in kept]
    meta["leakage"] = check_leakage(digests, names, split, "karpathy", options["allow_leakage"])
    meta["duplicates"] = duplicate_rows(digests, [r[1][2] for r, _ in kept], split)
    warn_duplicates(meta["duplicates"], "karpathy")
    meta["split_sizes"] = split_counts(np.asarray(split, dtype=object))
    return assemble([out[0] for _, out in kept], names, split, [r[1][2] for r, _ in kept], meta)
