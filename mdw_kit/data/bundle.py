"""Data bundles: a source with caption noise injected into its training split, its splits, and the
frozen caption embeddings of each split. :func:`mdw_kit.stages.prepare_data` builds one (with the
model configuration and the cached backbone features); :func:`prepare_data` here is the raw loader.

Example:
    >>> b = prepare_data("shapes", noise=0.2, source_options={"num_images": 60}, encoder="hash")
    >>> b.train.noise_known, b.train_text.shape[0] == len(b.train)
    (True, True)
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from mdw_kit.data.base import PairDataset
from mdw_kit.data.noise import inject_noise, noise_record
from mdw_kit.data.sources import load_source


@dataclass
class DataBundle:
    """A dataset with noise injected, its splits and the frozen caption embeddings of each split."""

    full: PairDataset
    train: PairDataset
    val: PairDataset
    test: PairDataset
    train_text: torch.Tensor
    val_text: torch.Tensor
    test_text: torch.Tensor
    encoder_name: str
    info: dict[str, Any] = field(default_factory=dict)
    model_config: Any = None  # the ModelConfig the stages train (set by mdw_kit.stages.prepare_data)

    @property
    def text_dim(self) -> int:
        return int(self.train_text.shape[1])

    @property
    def image_size(self) -> int:
        return self.full.image_size

    def val_split(self):
        """``(PairDataset, text_emb)`` of val, as the training and evaluation functions take it."""
        return (self.val, self.val_text)

    def test_split(self):
        return (self.test, self.test_text)

    def fingerprint(self) -> str:
        """Data + noise + encoder: what an expert buffer was trained on."""
        h = hashlib.sha256(f"{self.full.fingerprint()}|{self.encoder_name}".encode())
        return h.hexdigest()[:16]


class HashTextEncoder:
    """A deterministic bag-of-words hashing encoder: no model, for unit tests and quick demos.

    Words map to fixed random vectors (seeded by the word); a caption is their normalised mean.
    """

    def __init__(self, dim: int = 128):
        self.dim, self.name = dim, f"hash-{dim}"

    def encode(self, texts, batch_size: int = 256, show_progress=None) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            words = t.lower().replace(",", " ").split()
            for w in words:
                seed = int(hashlib.md5(w.encode()).hexdigest()[:8], 16)
                out[i] += torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
            out[i] /= max(len(words), 1)
        return torch.nn.functional.normalize(out, dim=-1)


def get_text_encoder(name: str):
    """``"hash"`` (no model) or any name :func:`mdw_kit.models.build_text_encoder` knows."""
    if name == "hash":
        return HashTextEncoder()
    from mdw_kit.models import build_text_encoder
    return build_text_encoder(name)


def prepare_data(source: str = "openmoji", noise: float = 0.0, noise_seed: int = 0,
                 source_options: dict[str, Any] | None = None, encoder: str = "minilm") -> DataBundle:
    """Load a source, inject caption noise into its train split, embed every caption (cached)."""
    t0 = time.time()
    ds = load_source(source, **(source_options or {}))
    ds = inject_noise(ds, noise, noise_seed)
    enc = get_text_encoder(encoder)
    if isinstance(enc, HashTextEncoder):
        emb = enc.encode(ds.captions)
    else:
        from mdw_kit.models import embed_captions
        emb = embed_captions(enc, ds.captions)
    parts = {}
    split = ds.pair_split
    for s in ("train", "val", "test"):
        idx = torch.as_tensor((split == s).nonzero()[0])
        parts[s] = (ds.split(s), emb[idx])
    info = {"source": source, "source_options": source_options or {}, "noise": noise,
            "noise_seed": noise_seed, "encoder": enc.name,
            "train_noise_rate": round(parts["train"][0].noise_rate, 4), "prepare_time_s": round(time.time() - t0, 2),
            **ds.summary()}
    return DataBundle(ds, parts["train"][0], parts["val"][0], parts["test"][0], parts["train"][1],
                      parts["val"][1], parts["test"][1], enc.name, info)


def save_data_record(run: Any, bundle: DataBundle) -> None:
    """Write the data summary and the noise permutation (ground truth) into the run folder."""
    run.write_json("data.json", bundle.info)
    run.write_json("noise.json", noise_record(bundle.full))


__all__ = ["DataBundle", "HashTextEncoder", "get_text_encoder", "prepare_data", "save_data_record"]
