"""One folder per run: config, metrics, log, artifacts (safetensors + JSON), figures.

Writes are atomic (temporary file, then rename), so a run killed mid-write
never leaves a half-written file that a resume would trust.

Example:
    >>> import tempfile, torch
    >>> run = RunDir(tempfile.mkdtemp())
    >>> run.write_json("config.json", {"seed": 0}).name
    'config.json'
    >>> _ = run.save_tensors("artifacts/x.safetensors", {"x": torch.zeros(2)}, {"note": "demo"})
    >>> run.load_tensors("artifacts/x.safetensors")[0]["x"].shape
    torch.Size([2])
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class ArtifactError(RuntimeError):
    """A run artifact is missing, partial, corrupt or does not fit what it is used with."""


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
    _atomic_write(Path(path), w)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"corrupt JSON in {path}: {e}") from e


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
    """Atomically save tensors as safetensors; ``meta`` is stored as JSON in the header."""
    header = {"mdw_meta": json.dumps(meta or {}, default=_json_default)}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Load safetensors written by :func:`save_tensors`; a partial or corrupt file is an :class:`ArtifactError`."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"missing file: {path}")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("mdw_meta", "{}"))
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise ArtifactError(f"corrupt or partial tensor file {path}: {e}") from e
    return tensors, meta


def _json_default(o: Any):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.asdict(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


class RunDir:
    """A run folder. Paths given to its methods are relative to the folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def write_json(self, rel: str, obj: Any) -> Path:
        write_json(self.path / rel, obj)
        return self.path / rel

    def read_json(self, rel: str) -> Any:
        return read_json(self.path / rel)

    def save_tensors(self, rel: str, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
        save_tensors(self.path / rel, tensors, meta)
        return self.path / rel

    def load_tensors(self, rel: str, device="cpu"):
        return load_tensors(self.path / rel, device)

    def exists(self, rel: str) -> bool:
        return (self.path / rel).exists()

    def log(self, msg: str) -> None:
        """Append a timestamped line to ``log.txt``."""
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        with open(self.path / "log.txt", "a") as f:
            f.write(f"{stamp} {msg}\n")

    def update_metrics(self, **entries: Any) -> dict:
        """Merge entries into ``metrics.json`` and return the whole dict."""
        cur = self.read_json("metrics.json") if self.exists("metrics.json") else {}
        cur.update(entries)
        self.write_json("metrics.json", cur)
        return cur

    def figure_path(self, name: str) -> Path:
        p = self.path / "figures" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
