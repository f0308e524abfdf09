"""Checks of a built dataset: images shared across splits (leakage), duplicate rows, repeated texts.

File sources (``karpathy``, ``hf``) hash each image file's bytes while decoding.
The same file, or another file with identical bytes, in two splits (train and
val / test, or val and test) makes the evaluation score images the model was
trained on: :func:`check_leakage` raises a :class:`DataError` that counts and
names them, or with ``allow_leakage=True`` warns with the count.
:func:`duplicate_rows` counts rows whose image bytes and captions repeat an
earlier row; :func:`repeated_texts` counts pairs whose caption text another pair
of the same split also carries (retrieval counts such texts as one candidate).

Example:
    >>> check_leakage(["a1", "b2"], ["x.png", "y.png"], ["train", "test"], "demo")
    {'cross_split_images': 0, 'examples': []}
    >>> repeated_texts(["a dog", "a dog", "a cat"], ["test", "test", "test"])["test"]
    {'pairs': 2, 'texts': 1}
"""
from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from typing import Any, Sequence

from .base import SPLITS, DataError, repeated_texts  # noqa: F401  (re-exported)


def digest(data: bytes) -> str:
    """Short sha256 of encoded image bytes: images with equal digests are identical files.

    Example:
        >>> digest(b"abc")
        'ba7816bf8f01cfea'
    """
    return hashlib.sha256(data).hexdigest()[:16]


def _groups(digests: Sequence[str | None]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        if d is not None:
            out[d].append(i)
    return out


def cross_split_groups(digests: Sequence[str | None], split: Sequence[str]) -> list[list[int]]:
    """Groups of image rows with identical bytes that lie in more than one split.

    Example:
        >>> cross_split_groups(["a", "b", "a", "a"], ["train", "train", "test", "train"])
        [[0, 2, 3]]
    """
    return [rows for rows in _groups(digests).values() if len({split[i] for i in rows}) > 1]


def check_leakage(digests: Sequence[str | None], names: Sequence[str], split: Sequence[str], source: str,
                  allow_leakage: bool = False) -> dict[str, Any]:
    """Refuse (or, with ``allow_leakage``, warn about) images whose bytes appear in more than one split.

    The count is of the val / test images (for a val-test share: the test images) that repeat an
    image of an earlier split; the message names up to three of them.

    Example:
        >>> check_leakage(["a", "a"], ["x.png", "copy.png"], ["train", "test"], "demo")
        Traceback (most recent call last):
        ...
        mdw_kit.data.base.DataError: demo: 1 image(s) of val/test also in an earlier split (the same file or identical bytes): 'copy.png' (test) = 'x.png' (train); remove them, or pass allow_leakage=True to go on with a warning
    """
    if not isinstance(allow_leakage, bool):
        raise DataError(f"option 'allow_leakage' must be True or False, got {allow_leakage!r}")
    order = {s: k for k, s in enumerate(SPLITS)}
    leaked, examples = 0, []
    for rows in cross_split_groups(digests, split):
        first = min(order[split[i]] for i in rows)
        later = [i for i in rows if order[split[i]] > first]
        keep = next(i for i in rows if order[split[i]] == first)
        leaked += len(later)
        examples += [f"'{names[i]}' ({split[i]}) = '{names[keep]}' ({split[keep]})" for i in later]
    report = {"cross_split_images": leaked, "examples": examples[:10]}
    if not leaked:
        return report
    msg = (f"{source}: {leaked} image(s) of val/test also in an earlier split (the same file or identical "
           f"bytes): {'; '.join(examples[:3])}" + (" ..." if leaked > 3 else ""))
    if not allow_leakage:
        raise DataError(f"{msg}; remove them, or pass allow_leakage=True to go on with a warning")
    warnings.warn(f"{msg} (allow_leakage=True: kept; evaluation scores images seen in training)", stacklevel=3)
    return report


def duplicate_rows(digests: Sequence[str | None], captions_per_image: Sequence[Sequence[str]],
                   split: Sequence[str]) -> dict[str, int]:
    """Rows that repeat an earlier one: ``images`` (identical bytes in one split), ``pairs`` (and caption).

    Example:
        >>> duplicate_rows(["a", "a", "b"], [["dog"], ["dog", "cat"], ["dog"]], ["train"] * 3)
        {'images': 1, 'pairs': 1}
    """
    seen_img, seen_pair, images, pairs = set(), set(), 0, 0
    for d, caps, s in zip(digests, captions_per_image, split):
        if d is None:
            continue
        images += (d, s) in seen_img
        seen_img.add((d, s))
        for c in caps:
            pairs += (d, c) in seen_pair
            seen_pair.add((d, c))
    return {"images": images, "pairs": pairs}


def warn_duplicates(dups: dict[str, int], source: str) -> None:
    """One warning with the counts of :func:`duplicate_rows`, when there are any."""
    if dups["images"] or dups["pairs"]:
        warnings.warn(f"{source}: {dups['images']} image(s) repeat an earlier image of their split (identical "
                      f"bytes) and {dups['pairs']} pair(s) repeat an earlier image-caption pair "
                      "(see meta['duplicates'])", stacklevel=3)
