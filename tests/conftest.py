"""Shared test setup: offline Hugging Face, no progress bars, a throw-away cache for the session;
tiny on-disk data fixtures for the data sources."""
import atexit
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["MDW_NO_PROGRESS"] = "1"
_CACHE = tempfile.mkdtemp(prefix="mdw-test-cache-")
os.environ["MDW_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench(request):
    """The benchmark module named by the test module's ``BENCHMARK``."""
    return load_benchmark(request.module.BENCHMARK)


COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "cyan"]


@pytest.fixture
def karpathy_dir(tmp_path: Path):
    """A tiny Karpathy-style folder: 8 coloured PNGs (two under a COCO-like ``filepath``) + split.json."""
    splits = ["train", "train", "restval", "val", "test", "train", "val", "test"]
    entries = []
    for i, (color, split) in enumerate(zip(COLORS, splits)):
        sub = "val2014" if i in (2, 3) else ""
        (tmp_path / sub).mkdir(exist_ok=True)
        Image.new("RGB", (48 + 8 * i, 40), color).save(tmp_path / sub / f"img{i}.png")
        entry = {"filename": f"img{i}.png", "split": split, "imgid": i,
                 "sentences": [{"raw": f"a {color} picture number {j}"} for j in range(5 + i % 2)]}
        entries.append({**entry, "filepath": sub} if sub else entry)
    (tmp_path / "split.json").write_text(json.dumps({"images": entries, "dataset": "tiny"}))
    return tmp_path


@pytest.fixture
def imagefolder_dir(tmp_path: Path):
    """A tiny image folder: 10 coloured PNGs and metadata.jsonl with a ``text`` column."""
    folder = tmp_path / "imagefolder"
    folder.mkdir()
    rows = []
    for i in range(10):
        Image.new("RGB", (40, 40), (25 * i, 255 - 25 * i, 100)).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"shade number {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder
