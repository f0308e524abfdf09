"""The ``mdw`` command: build data, train on full data, detect noise, record experts, distil, evaluate.

Every subcommand that runs something writes one run folder (``--out``) holding
``config.json`` (with the provenance of its inputs), ``metrics.json``, ``log.txt`` and its
artifacts; a folder belongs to one subcommand, and a rerun or resume with other inputs is
refused. Data and model options are shared (``--preset``, ``--source``, ``--option``,
``--tower``, ...); run ``mdw SUBCOMMAND -h``.

Example:
    >>> build_parser().parse_args(["data", "--source", "shapes"]).source
    'shapes'
"""
from __future__ import annotations

import argparse
import os
import sys

from .common import CliError, close_logs, parse_options

__all__ = ["main", "build_parser", "parse_options", "CliError"]


def build_parser() -> argparse.ArgumentParser:
    """The ``mdw`` parser: one module per subcommand group registers its subcommands."""
    from . import data, distill, experts, pipeline
    ap = argparse.ArgumentParser(prog="mdw", description=__doc__.split("\n\nExample")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for group in (data, experts, distill, pipeline):
        group.register(sub)
    return ap


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f"'{e.filename}': " if e.filename else ""
        return f"cannot write or read {where}{e.strerror}"
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Run ``mdw`` with ``argv``; bad input is one line on stderr and exit status 2 (no traceback).

    Example:
        >>> main(["data", "--source", "nope", "--encoder", "hash"])
        2
    """
    from mdw_kit.utils import quiet_libraries
    quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, RuntimeError, OSError) as e:  # bad input, artifacts, files; MDW_DEBUG=1 re-raises
        if os.environ.get("MDW_DEBUG") == "1":
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    finally:
        close_logs()
