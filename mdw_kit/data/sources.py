"""The source registry (``load_source``) and the helpers every source shares.

Every source returns a :class:`~mdw_kit.data.base.PairDataset`. Sources are
looked up by name; their modules are imported on first use, so importing
:mod:`mdw_kit.data` stays cheap (``datasets`` is only imported by ``hf``).

Shared here: option checks, image decoding (RGB on white, resize the shorter
side, centre crop), the ``skip_bad`` bookkeeping (:class:`BadRows`), seeded
splits, :func:`from_lists` (a dataset from in-memory images and captions) and
the safetensors + JSON cache format of built datasets.

Example:
    >>> from mdw_kit.data import load_source, list_sources
    >>> "shapes" in list_sources()
    True
    >>> ds = load_source("shapes", num_images=10, seed=1)
    >>> ds.meta["source"], ds.num_images
    ('shapes', 10)
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .base import SPLITS, DataError, PairDataset

MIN_SIZE, MAX_SIZE = 32, 224
BACKGROUND = (255, 255, 255)

# name -> (module under mdw_kit.data, function); resolved lazily by ``source_function``.
_REGISTRY: dict[str, tuple[str, str]] = {
    "openmoji": ("openmoji", "load_openmoji"),
    "shapes": ("shapes", "make_shapes"),
    "karpathy": ("karpathy", "load_karpathy"),
    "hf": ("hf", "load_hf"),
}


def source_function(name: str) -> Callable[..., PairDataset]:
    """The loader function registered under ``name`` (imports its module on first use).

    Example:
        >>> source_function("shapes").__name__
        'make_shapes'
    """
    if name not in _REGISTRY:
        raise DataError(f"unknown data source '{name}'; known sources: {', '.join(list_sources())}")
    module, func = _REGISTRY[name]
    return getattr(importlib.import_module(f"mdw_kit.data.{module}"), func)


class _Sources(Mapping):
    """Read-only ``name -> loader function`` mapping; a loader's module is imported on first access."""

    def __getitem__(self, name: str) -> Callable[..., PairDataset]:
        return source_function(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)


SOURCES: Mapping[str, Callable[..., PairDataset]] = _Sources()


def list_sources() -> list[str]:
    """Names accepted by :func:`load_source`.

    Example:
        >>> list_sources()
        ['hf', 'karpathy', 'openmoji', 'shapes']
    """
    return sorted(_REGISTRY)


def source_options(name: str) -> dict[str, Any]:
    """The options of source ``name`` with their defaults (``inspect.Parameter.empty`` when required).

    Example:
        >>> source_options("shapes")["num_images"]
        600
    """
    sig = inspect.signature(source_function(name))
    return {p.name: p.default for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD}


def load_source(name: str, **options: Any) -> PairDataset:
    """Build the dataset of source ``name`` with the given options.

    Unknown sources and unknown or missing options are a :class:`DataError`
    that lists what is accepted.

    Example:
        >>> ds = load_source("shapes", num_images=8, image_size=32, seed=0)
        >>> ds.images.shape
        torch.Size([8, 3, 32, 32])
    """
    known = source_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"unknown option(s) {unknown} for source '{name}'; "
                        f"options: {', '.join(sorted(known))}")
    missing = [k for k, v in known.items() if v is inspect.Parameter.empty and k not in options]
    if missing:
        raise DataError(f"source '{name}' needs option(s) {missing}")
    return source_function(name)(**options)


# ----------------------------------------------------------------- option checks
def check_image_size(image_size: Any) -> int:
    """``image_size`` as an int in ``[32, 224]``, else a :class:`DataError`."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or not MIN_SIZE <= int(image_size) <= MAX_SIZE:
        raise DataError(f"option 'image_size' must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {image_size!r}")
    return int(image_size)


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1)``, else a :class:`DataError` naming option ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
        raise DataError(f"option '{name}' must be a number in [0, 1), got {value!r}")
    return float(value)


def check_count(name: str, value: Any, minimum: int = 0, optional: bool = False) -> int | None:
    """``value`` as an int ``>= minimum`` (``None`` allowed when ``optional``), else a :class:`DataError`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"option '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------ image decoding
def to_square_array(img: Image.Image, image_size: int) -> np.ndarray:
    """RGB uint8 ``[3, S, S]``: transparency on white, shorter side resized to ``S``, centre crop.

    Example:
        >>> to_square_array(Image.new("RGB", (60, 40), "red"), 32).shape
        (3, 32, 32)
    """
    img = to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.new("RGB", rgba.size, BACKGROUND)
        img.paste(rgba, mask=rgba.getchannel("A"))
    img = img.convert("RGB")
    w, h = img.size
    scale = image_size / min(w, h)
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def to_8bit(img: Image.Image) -> Image.Image:
    """Integer (16-/32-bit, ``I;16*`` / ``I``) and float (``F``) images scaled to 8-bit ``L``; others as they are.

    Pillow's own conversion clips such pixels at 255, so a 16-bit PNG would decode almost white.
    16-bit data (``I;16*``, or ``I`` with values above 255) is divided by 257; ``F`` is read as
    ``[0, 1]`` when its maximum is at most 1, else as ``[0, 255]``.

    Example:
        >>> img = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))  # mid-grey at 16 bits
        >>> img.mode, int(np.asarray(to_8bit(img))[0, 0])
        ('I;16', 128)
    """
    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    arr = np.asarray(img, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode.startswith("I;16") or (img.mode.startswith("I") and top > 255):
        arr = arr / 257.0
    elif img.mode == "F" and top <= 1.0:
        arr = arr * 255.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def decode_image(source: str | Path | bytes, image_size: int) -> np.ndarray:
    """Decode an image file (path) or encoded bytes to ``[3, S, S]`` uint8.

    A missing or unreadable image is a :class:`DataError` naming the file.

    Example:
        >>> buf = io.BytesIO(); Image.new("RGB", (8, 8), "blue").save(buf, "PNG")
        >>> int(decode_image(buf.getvalue(), 32)[2, 0, 0])
        255
    """
    what = "image bytes" if isinstance(source, (bytes, bytearray)) else f"image file '{source}'"
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise DataError(f"missing {what}")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as img:
            img.draft("RGB", (image_size, image_size))  # fast JPEG decoding at reduced scale
            return to_square_array(img, image_size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"corrupt or unreadable {what}: {e}") from e


def decode_file(path: str | Path, image_size: int) -> tuple[np.ndarray, str]:
    """``([3, S, S]`` uint8 pixels, digest of the file's bytes``)``; errors name the file.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "a.png"; Image.new("RGB", (8, 8), "red").save(f)
        >>> arr, d = decode_file(f, 32)
        >>> arr.shape, len(d)
        ((3, 32, 32), 16)
    """
    from .checks import digest
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing image file '{path}'")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"unreadable image file '{path}': {e.strerror or e}") from None
    try:
        return decode_image(data, image_size), digest(data)
    except DataError:
        return decode_image(path, image_size), digest(data)  # fails again, naming the file (not the bytes)


# --------------------------------------------------------------- skip_bad bookkeeping
class BadRows:
    """Collects bad rows: raises at once, or (``skip_bad=True``) records them for ``meta['skipped']``.

    Example:
        >>> bad = BadRows(skip_bad=True)
        >>> bad.report({"row": 3}, "empty caption")
        >>> bad.skipped
        [{'row': 3, 'reason': 'empty caption'}]
    """

    def __init__(self, skip_bad: bool):
        if not isinstance(skip_bad, bool):
            raise DataError(f"option 'skip_bad' must be True or False, got {skip_bad!r}")
        self.skip_bad = skip_bad
        self.skipped: list[dict[str, Any]] = []

    def report(self, where: dict[str, Any], reason: str) -> None:
        """Raise a :class:`DataError` (``where`` + ``reason``), or record it when skipping."""
        if not self.skip_bad:
            place = ", ".join(f"{k} {v!r}" for k, v in where.items())
            raise DataError(f"{place}: {reason} (pass skip_bad=True to drop bad rows and report them)")
        self.skipped.append({**where, "reason": reason})

    def finish(self, meta: dict[str, Any], source: str) -> None:
        """Store the skipped rows in ``meta['skipped']`` and warn with a summary when there are any."""
        meta["skipped"] = list(self.skipped)
        if self.skipped:
            first = "; ".join(f"{s.get('file', s.get('row'))}: {s['reason']}" for s in self.skipped[:3])
            warnings.warn(f"{source}: skipped {len(self.skipped)} bad row(s) (see meta['skipped']): {first}"
                          + (" ..." if len(self.skipped) > 3 else ""), stacklevel=3)


def check_caption(caption: Any) -> str | None:
    """The stripped caption, or ``None`` when it is not a non-empty string."""
    if not isinstance(caption, str) or not caption.strip():
        return None
    return " ".join(caption.split())


# ------------------------------------------------------------------------- splits
def seeded_split(n: int, val_frac: float, test_frac: float, seed: int) -> np.ndarray:
    """Split names for ``n`` items: ``round(frac * n)`` val and test, the rest train, seeded.

    Example:
        >>> s = seeded_split(10, 0.2, 0.1, seed=0)
        >>> int((s == "val").sum()), int((s == "test").sum()), int((s == "train").sum())
        (2, 1, 7)
    """
    n_val, n_test = round(val_frac * n), round(test_frac * n)
    if n and n_val + n_test >= n:
        raise DataError(f"val_frac={val_frac} and test_frac={test_frac} leave no training images out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    out = np.full(n, "train", dtype=object)
    out[order[:n_val]] = "val"
    out[order[n_val:n_val + n_test]] = "test"
    return out


# -------------------------------------------------------------------- assembling
def from_lists(images: Sequence[Any], captions: Sequence[Any], image_size: int = 32,
               image_ids: Sequence[str] | None = None, splits: Sequence[str] | None = None,
               val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0,
               skip_bad: bool = False, meta: dict[str, Any] | None = None) -> PairDataset:
    """A dataset from in-memory rows: ``images[i]`` (PIL image, path, bytes or HWC uint8 array) with
    ``captions[i]`` (a string, or a list of strings for several captions).

    Lengths that disagree, empty captions and unreadable images are a :class:`DataError`
    (bad rows are dropped and reported with ``skip_bad=True``).

    Example:
        >>> ims = [Image.new("RGB", (40, 40), c) for c in ("red", "green", "blue", "white")]
        >>> ds = from_lists(ims, ["red", "green", "blue", "white"], splits=["train"] * 3 + ["test"])
        >>> ds.summary()["test_images"]
        1
    """
    image_size = check_image_size(image_size)
    for name, seq in (("captions", captions), ("image_ids", image_ids), ("splits", splits)):
        if seq is not None and len(seq) != len(images):
            raise DataError(f"lengths disagree: {len(images)} images but {len(seq)} {name}")
    bad = BadRows(skip_bad)
    rows = []
    for i, (img, cap) in enumerate(zip(images, captions)):
        row = _row(i, img, cap, image_size, bad, image_ids)
        if row is not None:
            rows.append(row)
    if splits is not None:
        split = np.asarray(splits, dtype=object)
    else:
        split = seeded_split(len(images), check_fraction("val_frac", val_frac),
                             check_fraction("test_frac", test_frac), seed)
    meta = dict(meta or {"source": "lists"})
    bad.finish(meta, meta.get("source", "lists"))
    return assemble([r[1] for r in rows], [r[2] for r in rows], [split[r[0]] for r in rows],
                    [r[3] for r in rows], meta)


def _row(i: int, img: Any, cap: Any, image_size: int, bad: BadRows,
         image_ids: Sequence[str] | None) -> tuple[int, np.ndarray, str, list[str]] | None:
    caps = [check_caption(c) for c in (cap if isinstance(cap, (list, tuple)) else [cap])]
    if not caps or any(c is None for c in caps):
        return bad.report({"row": i}, f"empty or missing caption {cap!r}")
    try:
        if isinstance(img, Image.Image):
            arr = to_square_array(img, image_size)
        elif isinstance(img, np.ndarray):
            if img.ndim != 3 or img.shape[-1] not in (3, 4) or img.dtype != np.uint8:
                raise DataError(f"array image must be HxWx3 (or 4) uint8, got {img.shape} {img.dtype}")
            arr = to_square_array(Image.fromarray(img), image_size)
        else:
            arr = decode_image(img, image_size)
    except DataError as e:
        return bad.report({"row": i} if isinstance(img, (bytes, np.ndarray, Image.Image)) else
                          {"row": i, "file": str(img)}, str(e))
    return i, arr, (image_ids[i] if image_ids is not None else str(i)), caps


def assemble(pixels: list[np.ndarray], image_ids: list[str], image_split: Sequence[str],
             captions_per_image: list[list[str]], meta: dict[str, Any],
             boxes: list[list[dict[str, Any]]] | None = None) -> PairDataset:
    """Build a :class:`PairDataset` from per-image pixels ``[3,S,S]`` and per-image caption lists."""
    if not pixels:
        skipped = len(meta.get("skipped") or [])
        raise DataError(f"source '{meta.get('source')}' produced no images"
                        + (f" ({skipped} bad row(s) skipped, see the warning)" if skipped else ""))
    images = torch.from_numpy(np.stack(pixels))
    pair_image = [i for i, caps in enumerate(captions_per_image) for _ in caps]
    captions = [c for caps in captions_per_image for c in caps]
    return PairDataset(images=images, image_ids=list(image_ids), image_split=np.asarray(image_split, dtype=object),
                       captions=captions, pair_image=torch.tensor(pair_image, dtype=torch.long),
                       boxes=boxes, meta=meta)


# -------------------------------------------------------------------------- cache
def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able dict (options, versions)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_cached(path: Path, ds: PairDataset) -> None:
    """Write ``ds`` as ``path.safetensors`` (pixels, pairing, flags) + ``path.json`` (the rest)."""
    from mdw_kit.runs import save_tensors, write_json
    write_json(path.with_suffix(".json"), {
        "image_ids": ds.image_ids, "image_split": list(map(str, ds.image_split)), "captions": ds.captions,
        "boxes": ds.boxes, "noise_known": ds.noise_known, "meta": ds.meta})
    save_tensors(path.with_suffix(".safetensors"), {
        "images": ds.images, "pair_image": ds.pair_image, "clean": ds.clean.to(torch.uint8),
        "source_caption": ds.source_caption})


def load_cached(path: Path) -> PairDataset | None:
    """The dataset saved by :func:`save_cached` at ``path``, or ``None`` when absent or unreadable."""
    from mdw_kit.runs import ArtifactError, load_tensors, read_json
    if not (path.with_suffix(".json").exists() and path.with_suffix(".safetensors").exists()):
        return None
    try:
        info = read_json(path.with_suffix(".json"))
        t, _ = load_tensors(path.with_suffix(".safetensors"))
        return PairDataset(images=t["images"], image_ids=info["image_ids"], image_split=info["image_split"],
                           captions=info["captions"], pair_image=t["pair_image"], clean=t["clean"].bool(),
                           source_caption=t["source_caption"], noise_known=info["noise_known"],
                           boxes=info["boxes"], meta=info["meta"])
    except (ArtifactError, KeyError, DataError, TypeError):
        return None  # a stale or partial cache entry is rebuilt


def cached_build(sub: str, key_parts: dict[str, Any], build: Callable[[], PairDataset],
                 use_cache: bool = True) -> PairDataset:
    """``build()`` once per ``key_parts``; later calls load the safetensors + JSON copy from the cache."""
    from mdw_kit.utils import cache_dir
    if not use_cache:
        return build()
    path = cache_dir(sub) / f"{sub}-{cache_key(key_parts)}"
    ds = load_cached(path)
    if ds is None:
        ds = build()
        save_cached(path, ds)
        ds.meta["cache"] = "built"
        return ds
    ds.meta["cache"] = "loaded"
    if ds.meta.get("skipped"):  # a cached build with skipped rows warns again, as the first build did
        bad = BadRows(True)
        bad.skipped = list(ds.meta["skipped"])
        bad.finish(ds.meta, sub)
    return ds


def split_counts(split: np.ndarray) -> dict[str, int]:
    """Images per split name."""
    return {s: int((np.asarray(split) == s).sum()) for s in SPLITS}
