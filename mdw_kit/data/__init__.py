"""Data: the pair dataset, its sources (openmoji, shapes, karpathy, hf) and noise injection.

Example:
    >>> from mdw_kit.data import load_source, inject_noise
    >>> ds = inject_noise(load_source("shapes", num_images=20, seed=0), rate=0.5, seed=1)
    >>> ds.meta["noise"]["count"] == round(0.5 * int((ds.pair_split == "train").sum()))
    True
"""
from .base import SPLITS, DataError, PairDataset
from .hf import load_hf
from .karpathy import load_karpathy
from .noise import apply_noise_record, inject_noise, noise_record
from .openmoji import load_openmoji
from .shapes import make_shapes
from .sources import SOURCES, from_lists, list_sources, load_source, source_options
from .bundle import DataBundle, prepare_data  # noqa: E402  (after the sources it loads)

__all__ = ["DataBundle", "prepare_data", "PairDataset", "DataError", "SPLITS", "load_source", "list_sources", "source_options", "SOURCES",
           "from_lists", "inject_noise", "noise_record", "apply_noise_record", "load_openmoji", "make_shapes",
           "load_karpathy", "load_hf"]
