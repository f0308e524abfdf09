"""``hf``: any local Hugging Face ``datasets`` source with an image column and a text column.

``path`` may be a ``save_to_disk`` folder (``load_from_disk``), an image folder
with ``metadata.jsonl`` / ``.csv`` (the ``imagefolder`` builder), or parquet
file(s): one file, a folder of ``*.parquet`` or a glob. Nothing is fetched; the
builders' Arrow cache goes under ``cache_dir('hf')``.

The image column may hold ``datasets.Image`` values, ``{"bytes", "path"}``
structs, encoded bytes or file paths; images are decoded with Pillow (so a bad
file names itself), resized (shorter side) and centre-cropped. The text column
holds a caption, or a list of captions (several pairs for one image).

Splits: the dataset's own ``train`` / ``validation`` (``val``, ``valid``,
``dev``) / ``test`` splits where present; a missing val or test split is drawn
from train with ``val_frac`` / ``test_frac`` and ``seed``.

Example:
    >>> import tempfile, pathlib, json
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i, c in enumerate(["red", "green", "blue", "black", "white"]):
    ...     Image.new("RGB", (40, 40), c).save(d / f"{i}.png")
    >>> _ = (d / "metadata.jsonl").write_text("".join(
    ...     json.dumps({"file_name": f"{i}.png", "text": f"a {c} square"}) + "\\n"
    ...     for i, c in enumerate(["red", "green", "blue", "black", "white"])))
    >>> ds = load_hf(d, val_frac=0.2, test_frac=0.2)
    >>> ds.summary()["val_images"], ds.summary()["test_images"]
    (1, 1)
"""
from __future__ import annotations

import glob
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mdw_kit.utils import cache_dir, progress, quiet_libraries

from .base import DataError, PairDataset
from .checks import check_leakage, digest, duplicate_rows, warn_duplicates
from .sources import (BadRows, assemble, check_caption, check_count, check_fraction, check_image_size,
                      decode_file, decode_image, seeded_split, split_counts, to_square_array)

SPLIT_ALIASES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val",
                 "test": "test"}
FORMATS = ("disk", "imagefolder", "parquet")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def detect_format(path: str | Path) -> str:
    """``"disk"``, ``"imagefolder"`` or ``"parquet"`` for a local path (a glob means parquet).

    Example:
        >>> detect_format("data/*.parquet")
        'parquet'
    """
    p = Path(path)
    if any(ch in str(path) for ch in "*?[") or (p.is_file() and p.suffix == ".parquet"):
        return "parquet"
    if not p.is_dir():
        raise DataError(f"missing dataset path '{path}' (a save_to_disk folder, an image folder or parquet files)")
    if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
        return "disk"
    if any(p.glob("*.parquet")) and not any(p.rglob("metadata.*")):
        return "parquet"
    return "imagefolder"


def _load(path: Path, fmt: str) -> dict[str, Any]:
    """``{split name: datasets.Dataset}`` as stored, with any error named after ``path``."""
    import datasets
    quiet_libraries()
    _check_metadata_text(path, fmt)
    try:
        if fmt == "disk":
            loaded = datasets.load_from_disk(str(path))
        elif fmt == "imagefolder":
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=str(cache_dir("hf")))
        else:
            files = sorted(glob.glob(str(path))) if not path.is_dir() else sorted(map(str, path.glob("*.parquet")))
            if not files:
                raise DataError(f"no parquet files match '{path}'")
            loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(cache_dir("hf")))
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (FileNotFoundError, ArrowInvalid, DatasetGenerationError)
        raise DataError(f"cannot read {fmt} dataset '{path}': {type(e).__name__}: {e}") from e
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}


def _check_metadata_text(path: Path, fmt: str) -> None:
    """An image folder's ``metadata.jsonl`` / ``.csv`` must be UTF-8: else a :class:`DataError` naming file and line."""
    if fmt != "imagefolder":
        return
    for f in sorted(path.rglob("metadata.*")):
        if f.suffix not in (".jsonl", ".csv", ".json"):
            continue
        data = f.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise DataError(f"metadata file '{f}' is not UTF-8 text: line {line} has byte "
                            f"0x{data[e.start]:02x} at offset {e.start}; save it as UTF-8") from None


def _map_splits(parts: dict[str, Any], path: Path) -> dict[str, str]:
    """``{stored split name: train|val|test}``; unknown or doubled names are a :class:`DataError`."""
    unknown = sorted(n for n in parts if n not in SPLIT_ALIASES)
    if unknown:
        raise DataError(f"dataset '{path}' has split(s) {unknown}; known split names: {sorted(SPLIT_ALIASES)}")
    mapped = {n: SPLIT_ALIASES[n] for n in parts}
    if len(set(mapped.values())) != len(mapped):
        raise DataError(f"dataset '{path}' has several splits for one role: {mapped}")
    return mapped


def _check_columns(ds: Any, split: str, columns: dict[str, str]) -> None:
    for role, col in columns.items():
        if col not in ds.column_names:
            raise DataError(f"split '{split}': missing {role} column '{col}'; available columns: {ds.column_names} "
                            f"(choose with {role}_column=...)")


def _pixels(value: Any, root: Path, size: int) -> tuple[np.ndarray, str | None, str]:
    """(pixels, file path or None, digest of the image's bytes) of one image cell."""
    from PIL import Image
    if isinstance(value, Image.Image):
        return to_square_array(value, size), None, digest(value.tobytes())
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return decode_image(value["bytes"], size), value.get("path"), digest(value["bytes"])
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return decode_image(value, size), None, digest(value)
    if isinstance(value, str) and value:
        file = Path(value) if Path(value).is_absolute() else root / value
        arr, dig = decode_file(file, size)
        return arr, str(file), dig
    raise DataError(f"empty or unsupported image value of type {type(value).__name__}")


def _rows(ds: Any, split: str, columns: dict[str, str], root: Path, size: int, bad: BadRows) -> list[tuple]:
    """(id, pixels, captions) of the good rows of one stored split."""
    import datasets
    img_col, txt_col = columns["image"], columns["text"]
    if isinstance(ds.features[img_col], datasets.Image):
        ds = ds.cast_column(img_col, datasets.Image(decode=False))
    out = []
    for i, row in enumerate(progress(ds.select_columns([img_col, txt_col]), desc=f"decode {split}", total=len(ds))):
        cell = row[img_col]
        file = cell.get("path") if isinstance(cell, dict) else (cell if isinstance(cell, str) else None)
        where = {"split": split, "row": i, **({"file": str(file)} if file else {})}
        raw = row[txt_col]
        caps = [check_caption(c) for c in (raw if isinstance(raw, list) else [raw])]
        if not caps or None in caps:
            bad.report(where, f"empty or missing caption {raw!r} in column '{txt_col}'")
            continue
        try:
            arr, file, dig = _pixels(cell, root, size)
        except DataError as e:
            bad.report(where, f"column '{img_col}': {e}")
            continue
        out.append((f"{split}/{i}" + (f"/{Path(file).name}" if file else ""), arr, caps, dig))
    return out


def _warn_unreferenced(path: Path, parts: dict[str, Any], img_col: str, meta: dict[str, Any]) -> None:
    """An image folder's image files that no metadata row names: listed in meta and warned about."""
    import datasets
    used = set()
    for ds in parts.values():
        if img_col in ds.column_names and isinstance(ds.features[img_col], datasets.Image):
            used |= {Path(c["path"]).resolve() for c in ds.cast_column(img_col, datasets.Image(decode=False))[img_col]
                     if c.get("path")}
    files = {f.resolve() for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTS}
    unused = sorted(str(f) for f in files - used)
    meta["unreferenced_files"] = unused
    if unused and used:
        warnings.warn(f"hf: {len(unused)} image file(s) under '{path}' have no metadata row and are not used "
                      f"(see meta['unreferenced_files']): {unused[:3]}", stacklevel=3)


def load_hf(path: str | Path, image_column: str = "image", text_column: str = "text", image_size: int = 32,
            val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0, format: str | None = None,
            skip_bad: bool = False, allow_leakage: bool = False) -> PairDataset:
    """A local Hugging Face dataset (save_to_disk folder, imagefolder + metadata, parquet) as pairs.

    Args:
        path: the folder, parquet file or glob.
        image_column, text_column: the columns holding images and captions.
        image_size: side in pixels, 32..224.
        val_frac, test_frac, seed: how a missing val / test split is drawn from train.
        format: ``"disk"``, ``"imagefolder"`` or ``"parquet"``; detected from ``path`` when None.
        skip_bad: drop bad rows and report them (``meta['skipped']``) instead of raising.
        allow_leakage: keep images whose bytes appear in two splits (a warning) instead of raising.

    Example:
        >>> # ds = load_hf("~/data/my_pairs.parquet", text_column="caption", image_size=64)
    """
    path = Path(path).expanduser()
    fmt = detect_format(path) if format is None else format
    if fmt not in FORMATS:
        raise DataError(f"option 'format' must be one of {FORMATS} or None, got {format!r}")
    size, seed = check_image_size(image_size), check_count("seed", seed)
    val_frac, test_frac = check_fraction("val_frac", val_frac), check_fraction("test_frac", test_frac)
    bad, columns = BadRows(skip_bad), {"image": image_column, "text": text_column}
    parts = _load(path, fmt)
    roles = _map_splits(parts, path)
    root = path if path.is_dir() else path.parent
    rows, split = [], []
    for name, ds in parts.items():
        _check_columns(ds, name, columns)
        got = _rows(ds, name, columns, root, size, bad)
        rows += got
        split += [roles[name]] * len(got)
    split = _draw_missing_splits(np.asarray(split, dtype=object), set(roles.values()), val_frac, test_frac, seed,
                                 [r[3] for r in rows])
    options = {"path": str(path), "format": fmt, "image_column": image_column, "text_column": text_column,
               "image_size": size, "val_frac": val_frac, "test_frac": test_frac, "seed": seed, "skip_bad": skip_bad,
               "allow_leakage": allow_leakage}
    meta = {"source": "hf", "options": options, "stored_splits": roles, "split_sizes": split_counts(split)}
    if fmt == "imagefolder":
        _warn_unreferenced(path, parts, image_column, meta)
    bad.finish(meta, "hf")
    _check_rows(rows, split, meta, allow_leakage)
    return assemble([r[1] for r in rows], [r[0] for r in rows], split, [r[2] for r in rows], meta)


def _check_rows(rows: list[tuple], split: np.ndarray, meta: dict[str, Any], allow_leakage: bool) -> None:
    """Leakage across splits (an error unless allowed) and duplicate rows, recorded in ``meta``."""
    digests = [r[3] for r in rows]
    meta["leakage"] = check_leakage(digests, [r[0] for r in rows], list(split), "hf", allow_leakage)
    meta["duplicates"] = duplicate_rows(digests, [r[2] for r in rows], list(split))
    warn_duplicates(meta["duplicates"], "hf")


def _draw_missing_splits(split: np.ndarray, present: set[str], val_frac: float, test_frac: float,
                         seed: int, digests: list[str] | None = None) -> np.ndarray:
    """Draw val and/or test from the train rows when the dataset does not store them.

    Rows with identical image bytes (one image under several metadata rows) are drawn together,
    so a drawn split never shares an image with train.
    """
    fracs = {"val": 0.0 if "val" in present else val_frac, "test": 0.0 if "test" in present else test_frac}
    train = np.flatnonzero(split == "train")
    if not any(fracs.values()) or not len(train):
        return split
    keys = [digests[i] if digests else i for i in train]
    unique = list(dict.fromkeys(keys))
    drawn = dict(zip(unique, seeded_split(len(unique), fracs["val"], fracs["test"], seed)))
    split = split.copy()
    split[train] = [drawn[k] for k in keys]
    return split
