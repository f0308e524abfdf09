"""Small shared helpers: device choice, seeding, progress, cache directory."""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cache_dir(sub: str = "") -> Path:
    """The cache directory (``$MDW_CACHE_DIR``, default ``~/.cache/mdw-kit``), created on demand."""
    root = Path(os.environ.get("MDW_CACHE_DIR") or Path.home() / ".cache" / "mdw-kit")
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None,
             enabled: bool | None = None, **kw) -> Iterator[T]:
    """``tqdm.auto`` progress bar; a plain iterator when tqdm is missing or ``MDW_NO_PROGRESS=1``."""
    if enabled is None:
        enabled = os.environ.get("MDW_NO_PROGRESS", "0") != "1"
    if enabled:
        try:
            from tqdm.auto import tqdm
            return tqdm(iterable, desc=desc, total=total, file=sys.stderr, **kw)
        except ImportError:  # pragma: no cover - tqdm is a dependency, fallback kept for minimal installs
            pass
    return iter(iterable)


def smoke_mode() -> bool:
    """True when ``MDW_SMOKE=1``: notebooks and demos shrink every size for CI."""
    return os.environ.get("MDW_SMOKE", "0") == "1"
