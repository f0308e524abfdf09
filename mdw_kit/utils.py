"""Small shared helpers: device choice, seeding, progress, cache directory."""
from __future__ import annotations

import importlib
import logging
import math
import os
import random
import sys
import time
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


def progress_enabled() -> bool:
    """False when ``MDW_NO_PROGRESS=1``: no progress bars, ours or the libraries'."""
    return os.environ.get("MDW_NO_PROGRESS", "0") != "1"


_LIBRARY_BARS = (("datasets", "disable_progress_bars"), ("transformers.utils.logging", "disable_progress_bar"),
                 ("huggingface_hub.utils", "disable_progress_bars"))


def quiet_libraries() -> None:
    """With ``MDW_NO_PROGRESS=1``, switch off the progress bars of ``datasets``, ``transformers`` and
    ``huggingface_hub`` too (loaded now, or later: their environment switches are set).

    Example:
        >>> os.environ["MDW_NO_PROGRESS"] = "1"; quiet_libraries()
        >>> os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"]
        '1'
    """
    if progress_enabled():
        return
    for var in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[var] = "1"
    for module, func in _LIBRARY_BARS:
        if module.split(".")[0] in sys.modules:
            try:
                getattr(importlib.import_module(module), func)()
            except (ImportError, AttributeError):  # pragma: no cover - another library version
                pass


PROGRESS_LOG = logging.getLogger("mdw_kit.progress")


def _logged(iterable: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    """``iterable`` that logs ``desc: i/total done (s)`` to :data:`PROGRESS_LOG` after items (about 50 lines)."""
    every = 1 if not total or total <= 100 else math.ceil(total / 50)
    t0 = time.perf_counter()
    for i, item in enumerate(iterable, 1):
        yield item
        if i % every == 0 or i == total:
            PROGRESS_LOG.info("%s: %d/%s done (%.1f s)", desc or "step", i, total or "?", time.perf_counter() - t0)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None,
             enabled: bool | None = None, **kw) -> Iterator[T]:
    """``tqdm.auto`` progress bar; a plain iterator when tqdm is missing or ``MDW_NO_PROGRESS=1``
    (which also quiets the libraries' bars, see :func:`quiet_libraries`).

    Bar or not, each step (epoch, iteration, check) is logged to the ``mdw_kit.progress`` logger
    at INFO level (at most about 50 lines per loop); the CLI writes it to the run's ``log.txt``.

    Example:
        >>> list(progress(range(3), desc="demo", enabled=False))
        [0, 1, 2]
    """
    if enabled is None:
        enabled = progress_enabled()
        quiet_libraries()
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    iterable = _logged(iterable, desc, total)
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


def to_pixels(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Float pixels in ``[0, 1]`` on ``device`` from uint8 or float images (per batch, saves memory).

    Example:
        >>> import torch
        >>> to_pixels(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).max().item()
        1.0
    """
    x = images.to(device, non_blocking=True) if device is not None else images
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def model_device(model: "torch.nn.Module") -> "torch.device":
    """The device of a model's first parameter (CPU for a model without parameters)."""
    import torch
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
