"""The main job's wall time: ``bash scripts/demo.sh`` as a new user runs it, with an empty cache.

Runs the README's demo command into a fresh run folder with ``MDW_CACHE_DIR`` pointing at an empty
folder (so the openmoji features are computed, as on a fresh machine; the pip check is included),
times it, and writes ``{"command", "threads", "wall_time_s", "stages_s", "results", "target",
"met"}`` (``stages_s``: when each of the pipeline's stages started, read from the run's
``log.txt``; ``results``: the demo's table, test R-sum mean and sd per method).

Usage::

    python benchmarks/bench_demo.py --threads 1 --out benchmarks/results/demo.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300.0
STAGE = re.compile(r"\[(\d)/5\] ([^:(]+?)(?=:|\s+\().*?\(t=(\d+)s\)")


def stage_times(log_text: str) -> dict[str, int]:
    """``{stage name: seconds from the start}`` from a pipeline ``log.txt``.

    >>> stage_times("2026 [1/5] data: openmoji  (t=0s)\\n2026 [3/5] MDW distillation: 100 pairs  (t=43s)\\n"
    ...             "2026 [5/5] report and exports  (t=225s)")
    {'data': 0, 'MDW distillation': 43, 'report and exports': 225}
    """
    return {m.group(2).strip(): int(m.group(3)) for m in STAGE.finditer(log_text)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the run (default: torch's own choice)")
    p.add_argument("--python", default=sys.executable, help="the Python that demo.sh uses (default: this one)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "demo.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mdw-bench-demo-") as tmp:
        run = Path(tmp) / "run"
        env = dict(os.environ, MDW_CACHE_DIR=str(Path(tmp) / "cache"), PYTHON=args.python, MDW_NO_PROGRESS="1")
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        t0 = time.perf_counter()
        done = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(run)], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"error: scripts/demo.sh exited with {done.returncode}:\n{done.stderr[-2000:]}")
        metrics = json.loads((run / "metrics.json").read_text())
        stages = stage_times((run / "log.txt").read_text())
    results = {m: {"rsum_mean": r["mean"]["R-sum"], "rsum_sd": r["sd"]["R-sum"]}
               for m, r in metrics["results"].items()}
    doc = {"command": shlex.join(["python", "benchmarks/bench_demo.py", *argv]),
           "threads": args.threads, "cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg()),
           "wall_time_s": wall, "pipeline_wall_time_s": metrics.get("wall_time_s"), "stages_s": stages,
           "results": results, "target": f"the main job <= {TARGET_S:g} s after install", "met": wall <= TARGET_S}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"demo: {wall:.0f} s (target {TARGET_S:g} s: {'met' if doc['met'] else 'missed'}); "
          + ", ".join(f"{m} {r['rsum_mean']:.1f}" for m, r in results.items()) + f"; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
