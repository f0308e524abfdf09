"""What every ``mdw`` subcommand shares: data and model options, checks of flags, the run folder.

Data and model options (``--preset``, ``--source``, ``--option KEY=VALUE``, ``--noise``,
``--encoder``, ``--tower``, ...) are the same for every subcommand; what a flag does not say
comes from the preset (:mod:`mdw_kit.presets`). A run folder (``--out``) is checked before
any work (:func:`mdw_kit.runs.check_run_folder`) and opened, with ``config.json``, once the
inputs are known (:func:`open_run`), so a refused run leaves the folder as it was.

Example:
    >>> parse_options(["num_images=100", "path=/data/x"])
    {'num_images': 100, 'path': '/data/x'}
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from mdw_kit.runs import RunDir, check_run_folder, content_hash, open_run, write_text
from mdw_kit.utils import PROGRESS_LOG


class CliError(ValueError):
    """A bad flag value; the message names the flag."""


# ------------------------------------------------------------------ flag values
def parse_options(pairs: list[str] | None, flag: str = "--option") -> dict[str, Any]:
    """``["num_images=100", "image_size=32"]`` -> dict with JSON-decoded values where possible."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise CliError(f"{flag} expects KEY=VALUE, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def named_json(text: str, flag: str = "--variant") -> tuple[str, Any]:
    """``NAME=JSON`` (an argparse ``type``) -> ``(NAME, the decoded JSON)``; an empty JSON is ``{}``.

    Example:
        >>> named_json('fast={"iterations": 10}')
        ('fast', {'iterations': 10})
    """
    name, sep, body = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{flag} wants NAME=JSON, got {text!r}")
    try:
        return name, json.loads(body or "{}")
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{flag} {name}: not JSON ({e})") from e


def json_object(text: str | None, flag: str) -> dict[str, Any]:
    """The JSON object given to ``flag`` ({} when not given); bad JSON is an error naming the flag.

    Example:
        >>> json_object('{"epochs": 3}', "--dual-config")
        {'epochs': 3}
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"{flag} is not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise CliError(f"{flag} must be a JSON object of settings, got {text!r}")
    return value


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def config_overrides(text: str | None, flag: str, cls: type) -> dict[str, Any]:
    """The JSON settings of ``flag`` checked against the fields of dataclass ``cls``.

    An unknown key (with a did-you-mean) or a value of the wrong type is a :class:`CliError`.

    Example:
        >>> from mdw_kit.distill import DistillConfig
        >>> config_overrides('{"iteratons": 5}', "--distill-config", DistillConfig)
        Traceback (most recent call last):
        ...
        mdw_kit.cli.common.CliError: --distill-config: unknown DistillConfig key 'iteratons'; did you mean 'iterations'?
    """
    values = json_object(text, flag)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if hasattr(cls, "_inner"):  # a ConfigMixin: keys of its nested config at the top level, old names
        inner, flat = cls._inner()
        if inner is not None:
            fields.update({f.name: f for f in dataclasses.fields(inner) if f.name in flat})
        fields.update({old: fields[new] for old, new in cls._renamed.items() if new in fields})
    for key, value in values.items():
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {sorted(fields)}"
            raise CliError(f"{flag}: unknown {cls.__name__} key {key!r}{hint}")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if not _type_ok(value, default):
            raise CliError(f"{flag}: {cls.__name__} key {key!r} takes a {type(default).__name__} "
                           f"(like {default!r}), got {value!r}")
    return values


def check_seeds(seeds: list[int], flag: str = "--seeds") -> tuple[int, ...]:
    """The seeds, refusing duplicates (a repeated seed would count one run twice in the mean)."""
    dups = sorted({s for s in seeds if seeds.count(s) > 1})
    if dups:
        raise CliError(f"{flag} repeats {dups}; give each seed once")
    return tuple(seeds)


def check_budget(budget: int, flag: str = "--budget") -> int:
    """A budget of at least 2 pairs (contrastive training needs a negative)."""
    if budget < 2:
        raise CliError(f"{flag} {budget}: a set needs at least 2 pairs (each pair's negatives are the others)")
    return budget


def check_model_flags(args: argparse.Namespace) -> None:
    """``--temperature`` finite and > 0, ``--embed-dim`` >= 1, ``--weights`` an existing file."""
    t = getattr(args, "temperature", None)
    if t is not None and (not math.isfinite(t) or t <= 0):
        raise CliError(f"--temperature {t}: the logit temperature must be a number > 0 (e.g. 0.07)")
    if getattr(args, "embed_dim", None) is not None and args.embed_dim < 1:
        raise CliError(f"--embed-dim {args.embed_dim}: must be at least 1")
    w = getattr(args, "weights", None)
    if w is not None:
        path = Path(w).expanduser()
        if path.is_dir():
            files = sorted(p.name for p in path.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".safetensors"))
            raise CliError(f"--weights '{w}' is a folder; give the weight file itself"
                           + (f" (there: {', '.join(files[:5])})" if files else ""))
        if not path.is_file():
            raise CliError(f"--weights '{w}': no such file")


# -------------------------------------------------------------------- options
def add_data_args(p: argparse.ArgumentParser) -> None:
    """``--preset`` and the data options shared by every subcommand (``None``: the preset's)."""
    g = p.add_argument_group("data (unset options come from --preset)")
    g.add_argument("--preset", default="default", help="preset name (default, smoke, scratch) or a JSON file")
    g.add_argument("--source", default=None, help="data source name (openmoji, shapes, karpathy, hf)")
    g.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="source option, repeatable (e.g. path=DIR for hf, image_size=64, allow_leakage=true)")
    g.add_argument("--noise", type=float, default=None, help="share of training captions to permute (0..1)")
    g.add_argument("--noise-seed", type=int, default=None)
    g.add_argument("--encoder", default=None, help="frozen text encoder (minilm, openclip:ARCH, hash)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model options shared by every subcommand that trains (``None``: the preset's)."""
    g = p.add_argument_group("model (unset options come from --preset)")
    g.add_argument("--tower", default=None, help="image tower (efficientnet_lite0, convnet3, openclip:ARCH)")
    g.add_argument("--train-layers", default=None, help="which tower layers train (none, last_block, all, default)")
    g.add_argument("--weights", default=None, help="local weight file for an open_clip tower")
    g.add_argument("--embed-dim", type=int, default=None)
    g.add_argument("--temperature", type=float, default=None)


def model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags given, as ModelConfig fields (a ConvNet trains all its layers unless told)."""
    out = {k: getattr(args, k, None) for k in ("tower", "train_layers", "weights", "embed_dim", "temperature")}
    out = {k: v for k, v in out.items() if v is not None}
    if str(out.get("tower", "")).startswith("convnet"):
        out.setdefault("train_layers", "default")
    return out


def bundle(args: argparse.Namespace, features: bool = True) -> Any:
    """The :class:`~mdw_kit.data.bundle.DataBundle` the flags describe, through the stage API
    (``features=False``: no backbone features, for commands that only look at the data)."""
    import mdw_kit as mk
    data = mk.prepare_data(args.source, args.noise, options=parse_options(args.option),
                           noise_seed=args.noise_seed, encoder=args.encoder, model=model_fields(args),
                           preset=args.preset, features=features)
    if features:
        check_splits(data)
    return data


def check_splits(data: Any) -> None:
    """Training, epoch selection and testing need pairs in train, val and test."""
    for name in ("train", "val", "test"):
        if len(getattr(data, name)) == 0:
            src = data.info.get("source")
            raise CliError(f"the {name} split of source '{src}' is empty: "
                           + ("models are chosen on val; " if name == "val" else "")
                           + f"give it {name} images (e.g. --option {name}_frac=0.1, or a stored '{name}' split)")


def data_provenance(data: Any) -> dict[str, Any]:
    """Identity of the data (pixels, captions, noise) and of the text encoder (name + weight hash)."""
    return {"data": data.full.fingerprint(), "encoder": data.encoder_name}


def path_identity(path: str | None) -> str | None:
    """Content hash of an input folder or file (``None`` when not given)."""
    return None if path is None else content_hash(path)


# ------------------------------------------------------------------ run folders
class Run:
    """The run folder of one subcommand: checked at :meth:`check`, opened at :meth:`open`."""

    def __init__(self, args: argparse.Namespace, command: str):
        self.args, self.command = args, command
        out = getattr(args, "out", None) or f"runs/{command}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.out = Path(out)
        self.saved = check_run_folder(self.out, command)
        self.run: RunDir | None = None

    def open(self, provenance: dict[str, Any]) -> RunDir:
        """Open the folder (refusing other inputs than a previous run's), write config.json, log to log.txt."""
        cfg = {k: v for k, v in vars(self.args).items() if k != "func"}
        self.run = open_run(self.out, self.command, {"argv": sys.argv[1:], **cfg}, provenance, self.saved)
        self.run.log(f"mdw {self.command} {' '.join(sys.argv[2:])}")
        _log_to(self.run)
        print(f"run folder: {self.run.path}")
        return self.run


def _log_to(run: RunDir) -> None:
    """Send the stages' progress lines (``mdw_kit.progress``) to the run's ``log.txt``."""
    for h in list(PROGRESS_LOG.handlers):
        if getattr(h, "_mdw_run", False):
            PROGRESS_LOG.removeHandler(h)
            h.close()
    handler = logging.FileHandler(run.path / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler._mdw_run = True  # type: ignore[attr-defined]
    PROGRESS_LOG.addHandler(handler)
    PROGRESS_LOG.setLevel(logging.INFO)


def close_logs() -> None:
    """Detach the run's log file (the end of a command)."""
    for h in list(PROGRESS_LOG.handlers):
        if getattr(h, "_mdw_run", False):
            PROGRESS_LOG.removeHandler(h)
            h.close()


def save_data_record(run: RunDir, data: Any) -> None:
    """``data.json`` (summary, skipped rows, leakage), ``noise.json`` and ``skipped_rows.csv`` in the run."""
    from mdw_kit.data.bundle import save_data_record as _save
    _save(run, data)
    skipped = data.full.meta.get("skipped") or []
    if skipped:
        write_skipped(run.path / "skipped_rows.csv", skipped)


def write_skipped(path: Path, skipped: list[dict[str, Any]]) -> None:
    """The rows a ``skip_bad=true`` load dropped, as CSV: file, split, row, reason."""
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file", "split", "row", "reason"])
    for s in skipped:
        w.writerow([s.get("file", ""), s.get("split", ""), s.get("row", ""), s.get("reason", "")])
    write_text(path, buf.getvalue())
