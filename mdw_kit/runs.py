"""One folder per run: config, metrics, log, artifacts (safetensors + JSON), figures.

Writes are atomic (temporary file, then rename), so a run killed mid-write
never leaves a half-written file that a resume would trust; the temporary
files a kill leaves behind are removed when the folder is opened again
(:func:`clean_tmp`). Files get the user's normal mode (``0o666`` less the umask).

A run folder belongs to one command: :func:`open_run` refuses a folder that
holds something else, or that was run with another buffer, data or encoder
(its ``provenance``), and writes ``config.json`` only once those checks pass.

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


class RunFolderError(ArtifactError):
    """A run folder cannot be used for this run (other command, other inputs, not writable)."""


TMP_SUFFIX = ".tmp"


def file_mode() -> int:
    """The mode a plain ``open(..., "w")`` would give a new file: ``0o666`` less the umask.

    Example:
        >>> file_mode() & 0o600
        384
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read the umask by setting it, then put it back
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8)."""
    _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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


# ------------------------------------------------------------------ run folders
def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def clean_tmp(root: str | Path, min_age_s: float | None = None) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left under ``root``; return them.

    ``min_age_s`` keeps younger ones (default: 0, or 600 s under a multi-process launch, where
    another rank may be writing right now).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()); _ = (root / ".metrics.json.abc.tmp").write_text("{")
        >>> [p.name for p in clean_tmp(root)], list(root.iterdir())
        (['.metrics.json.abc.tmp'], [])
    """
    import time
    root = Path(root)
    if not root.is_dir():
        return []
    age = (600.0 if _distributed() else 0.0) if min_age_s is None else min_age_s
    now, gone = time.time(), []
    for f in root.rglob(f".*{TMP_SUFFIX}"):
        try:
            if f.is_file() and now - f.stat().st_mtime >= age:
                f.unlink()
                gone.append(f)
        except OSError:
            continue  # removed meanwhile, or not ours to remove
    return gone


def content_hash(path: str | Path) -> str:
    """A short content hash of a file, or of a folder: by its ``index.json`` where it has one (a buffer's
    index lists its files' sha256), else by all its files (names and bytes).

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "a.bin"; _ = f.write_bytes(b"abc")
        >>> content_hash(f)
        'ba7816bf8f01cfea'
    """
    import hashlib
    path = Path(path)
    if path.is_dir():
        files = [path / "index.json"] if (path / "index.json").is_file() else \
            sorted(f for f in path.rglob("*") if f.is_file() and not f.name.endswith(TMP_SUFFIX))
    elif path.is_file():
        files = [path]
    else:
        raise ArtifactError(f"missing file: {path}")
    h = hashlib.sha256()
    for target in files:
        if len(files) > 1:
            h.update(str(target.relative_to(path)).encode() + b"\0")
        with open(target, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def check_writable(path: str | Path, need_bytes: int = 16 << 20, flag: str = "--out") -> None:
    """Fail now, not after the work, when ``path`` (or the folder that would hold it) cannot be written.

    Probes with a small temporary file and checks that ``need_bytes`` are free on its disk; a
    failure is a one-line :class:`RunFolderError` naming ``flag`` and the reason.

    Example:
        >>> import tempfile
        >>> check_writable(Path(tempfile.mkdtemp()) / "new-run")
    """
    import shutil
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunFolderError(f"{flag} '{path}': '{existing}' is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".mdw-write-probe.", suffix=TMP_SUFFIX)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            os.remove(probe)
        free = shutil.disk_usage(existing).free
    except OSError as e:
        raise RunFolderError(f"{flag} '{path}' is not writable: {e.strerror or e}") from None
    if free < need_bytes:
        raise RunFolderError(f"{flag} '{path}': its disk is full ({free / 2**20:.1f} MiB free, "
                             f"{need_bytes / 2**20:.0f} MiB needed)")


def check_run_folder(path: str | Path, command: str) -> dict[str, Any] | None:
    """Check, before any work, that ``path`` may be the run folder of ``command``; nothing is written.

    A missing or empty folder is new (returns ``None``); a folder whose ``config.json`` names
    ``command`` is a resume or rerun (returns that config); anything else is a :class:`RunFolderError`.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()); write_json(root / "config.json", {"command": "train"})
        >>> check_run_folder(root, "train")["command"]
        'train'
        >>> check_run_folder(root, "data")
        Traceback (most recent call last):
        ...
        mdw_kit.runs.RunFolderError: --out '...' is the run folder of 'mdw train', not of 'mdw data'; choose another --out
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out '{path}' is a file, not a folder")
    saved = None
    if path.is_dir() and any(not p.name.endswith(TMP_SUFFIX) for p in path.iterdir()):
        if not (path / "config.json").is_file():
            raise RunFolderError(f"--out '{path}' is not empty and holds no config.json (not a run folder); "
                                 "choose a new or empty folder")
        try:
            saved = read_json(path / "config.json")
        except ArtifactError as e:
            raise RunFolderError(f"--out '{path}': {e}") from None
        if not isinstance(saved, dict) or saved.get("command") != command:
            other = saved.get("command") if isinstance(saved, dict) else None
            raise RunFolderError(f"--out '{path}' is the run folder of 'mdw {other}', not of 'mdw {command}'; "
                                 "choose another --out")
    check_writable(path)
    return saved


def check_provenance(path: str | Path, saved: dict[str, Any] | None, provenance: dict[str, Any]) -> None:
    """Refuse, by name, inputs (buffer, data, encoder) that differ from those the run folder recorded.

    Example:
        >>> check_provenance("run", {"provenance": {"buffer": "ab12"}}, {"buffer": "cd34"})
        Traceback (most recent call last):
        ...
        mdw_kit.runs.RunFolderError: --out 'run' was run with another buffer (ab12 there, cd34 now); use a new --out or the same buffer
    """
    if saved is None:
        return
    old = saved.get("provenance")
    if not isinstance(old, dict):
        raise RunFolderError(f"--out '{path}' records no provenance (buffer, data, encoder) to check a rerun "
                             "against; use a new --out")
    for key in sorted(set(old) | set(provenance)):
        if old.get(key) != provenance.get(key):
            raise RunFolderError(f"--out '{path}' was run with another {key} ({old.get(key)} there, "
                                 f"{provenance.get(key)} now); use a new --out or the same {key}")


def open_run(path: str | Path, command: str, config: dict[str, Any], provenance: dict[str, Any],
             saved: dict[str, Any] | None = None) -> RunDir:
    """The run folder of ``command`` at ``path``, once its inputs check out; writes ``config.json``.

    ``saved`` is what :func:`check_run_folder` returned before the work began (it is read again
    when not given). A refusal leaves the folder as it was. Orphaned temporary files of an
    interrupted earlier run are removed.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()) / "run"
        >>> run = open_run(root, "train", {"epochs": 2}, {"data": "d1"})
        >>> run.read_json("config.json")["provenance"]
        {'data': 'd1'}
        >>> open_run(root, "train", {"epochs": 2}, {"data": "d2"})
        Traceback (most recent call last):
        ...
        mdw_kit.runs.RunFolderError: --out '...' was run with another data (d1 there, d2 now); use a new --out or the same data
    """
    saved = check_run_folder(path, command) if saved is None else saved
    check_provenance(path, saved, provenance)
    run = RunDir(path)
    clean_tmp(run.path)
    run.write_json("config.json", {"command": command, "provenance": provenance, **config})
    return run
