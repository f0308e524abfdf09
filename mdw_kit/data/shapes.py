"""``shapes``: procedural scenes with captions and object boxes, deterministic from a seed.

Each image holds 2-4 objects (one of 6 colours, circle / square / triangle /
diamond, small or large) on a white background, none overlapping, centres at
least a tenth of the image apart horizontally. Captions name every object from
left to right and their horizontal relation, e.g. ``"a small red circle left of
a large blue square"``; more captions per image use the other phrasings of
:data:`TEMPLATES`. ``boxes[i]`` lists the objects of image ``i`` left to right as
``{"label": "red circle", "box": [x0, y0, x1, y1], "color", "shape", "size"}``
in pixels, half-open (``images[i][:, y0:y1, x0:x1]`` holds the object).

Image ``i`` depends only on ``(seed, i)``, so a smaller ``num_images`` gives a
prefix of a larger one (the split, drawn with ``seed`` over all images, differs).

Example:
    >>> ds = make_shapes(num_images=4, image_size=32, seed=0)
    >>> ds.captions[0].startswith("a ") and " left of " in ds.captions[0]
    True
    >>> ds.boxes[0][0]["label"] == f"{ds.boxes[0][0]['color']} {ds.boxes[0][0]['shape']}"
    True
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .base import DataError, PairDataset
from .sources import assemble, check_count, check_fraction, check_image_size, seeded_split, split_counts

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 90, 220),
    "yellow": (235, 195, 20), "purple": (140, 60, 190), "black": (30, 30, 30)}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, float] = {"small": 0.25, "large": 0.4}  # side of the object box, share of the image side
BACKGROUND = (255, 255, 255)
MIN_GAP = 0.1  # least horizontal distance between object centres, share of the image side
TEMPLATES = ("{lr_left_of}", "{rl_right_of}", "from left to right: {lr_list}", "from right to left: {rl_list}")


def _place(rng: np.random.Generator, size: int, n: int) -> list[dict[str, Any]]:
    """``n`` objects with non-overlapping boxes and distinct centres, sorted left to right."""
    for _ in range(100):  # restart the scene when an object finds no room
        objs: list[dict[str, Any]] = []
        for _ in range(n):
            obj = _try_object(rng, size, objs)
            if obj is None:
                break
            objs.append(obj)
        if len(objs) == n:
            return sorted(objs, key=lambda o: o["box"][0] + o["box"][2])
    raise DataError(f"could not place {n} objects in a {size}px image")  # pragma: no cover - sizes allow it


def _try_object(rng: np.random.Generator, size: int, placed: list[dict[str, Any]]) -> dict[str, Any] | None:
    c, k, z = rng.integers((len(COLORS), len(SHAPES), len(SIZES)))
    color, shape, scale = list(COLORS)[c], SHAPES[k], list(SIZES)[z]
    side = max(4, round(SIZES[scale] * size))
    xy = rng.integers(1, size - side, size=(50, 2))  # candidate corners, the first that fits wins
    ok = np.ones(len(xy), dtype=bool)
    for o in placed:
        bx0, by0, bx1, by1 = o["box"]
        overlap = (xy[:, 0] <= bx1) & (bx0 <= xy[:, 0] + side) & (xy[:, 1] <= by1) & (by0 <= xy[:, 1] + side)
        close = np.abs(2 * xy[:, 0] + side - bx0 - bx1) / 2 < MIN_GAP * size  # centres too near in x
        ok &= ~overlap & ~close
    if not ok.any():
        return None
    x0, y0 = (int(v) for v in xy[np.argmax(ok)])
    return {"label": f"{color} {shape}", "box": [x0, y0, x0 + side, y0 + side], "color": color,
            "shape": shape, "size": scale}


def _draw(objs: list[dict[str, Any]], size: int) -> np.ndarray:
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in objs:
        x0, y0, x1, y1 = o["box"][0], o["box"][1], o["box"][2] - 1, o["box"][3] - 1
        cx, cy, fill = (x0 + x1) / 2, (y0 + y1) / 2, COLORS[o["color"]]
        if o["shape"] == "circle":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif o["shape"] == "square":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        elif o["shape"] == "triangle":
            draw.polygon([(x0, y1), (cx, y0), (x1, y1)], fill=fill)
        else:
            draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def scene_captions(objs: list[dict[str, Any]], k: int = 1) -> list[str]:
    """The first ``k`` phrasings of :data:`TEMPLATES` for objects sorted left to right.

    Example:
        >>> objs = [{"color": "red", "shape": "circle", "size": "small"},
        ...         {"color": "blue", "shape": "square", "size": "large"}]
        >>> scene_captions(objs, 2)
        ['a small red circle left of a large blue square', 'a large blue square right of a small red circle']
    """
    lr = [f"a {o['size']} {o['color']} {o['shape']}" for o in objs]
    rl = lr[::-1]
    words = {"lr_left_of": " left of ".join(lr), "rl_right_of": " right of ".join(rl),
             "lr_list": ", ".join(lr), "rl_list": ", ".join(rl)}
    return [t.format(**words) for t in TEMPLATES[:k]]


def make_shapes(num_images: int = 600, image_size: int = 32, seed: int = 0, val_frac: float = 0.1,
                test_frac: float = 0.1, captions_per_image: int = 1) -> PairDataset:
    """Procedural scenes of 2-4 objects with captions and boxes.

    Args:
        num_images: number of scenes.
        image_size: side in pixels, 32..224.
        seed: seed of the scenes and of the split.
        val_frac, test_frac: share of images in val / test (``round(frac * num_images)``).
        captions_per_image: 1..4 phrasings per image (one pair each).

    Example:
        >>> ds = make_shapes(num_images=10, captions_per_image=2, seed=3)
        >>> len(ds), ds.num_images
        (20, 10)
    """
    num_images = check_count("num_images", num_images, minimum=3)
    image_size = check_image_size(image_size)
    seed = check_count("seed", seed)
    val_frac, test_frac = check_fraction("val_frac", val_frac), check_fraction("test_frac", test_frac)
    k = check_count("captions_per_image", captions_per_image, minimum=1)
    if k > len(TEMPLATES):
        raise DataError(f"option 'captions_per_image' must be at most {len(TEMPLATES)}, got {k}")
    pixels, boxes, captions = [], [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        objs = _place(rng, image_size, int(rng.integers(2, 5)))
        pixels.append(_draw(objs, image_size))
        boxes.append(objs)
        captions.append(scene_captions(objs, k))
    split = seeded_split(num_images, val_frac, test_frac, seed)
    options = {"num_images": num_images, "image_size": image_size, "seed": seed, "val_frac": val_frac,
               "test_frac": test_frac, "captions_per_image": k}
    meta = {"source": "shapes", "options": options, "colors": list(COLORS), "shapes": list(SHAPES),
            "sizes": list(SIZES), "boxes": "pixels, [x0, y0, x1, y1) half-open, objects left to right",
            "split_sizes": split_counts(split)}
    return assemble(pixels, [f"shapes-{seed}-{i:05d}" for i in range(num_images)], split, captions, meta,
                    boxes=boxes)
