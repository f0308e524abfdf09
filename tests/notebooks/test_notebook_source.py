"""The notebooks' source is tools/make_notebooks.py: the committed .ipynb files are exactly what it writes."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_regenerating_the_notebooks_changes_nothing():
    gen = _generator()
    assert gen.stale() == [], "notebooks differ from tools/make_notebooks.py: run python tools/make_notebooks.py"


def test_committed_notebooks_carry_no_outputs_and_a_readme_figure(tmp_path):
    gen = _generator()
    assert sorted(gen.NOTEBOOKS) == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    for name in gen.NOTEBOOKS:
        nb = json.loads(gen.render(name))
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c["outputs"] and c["execution_count"] is None for c in code), name
        assert sum("readme-figure" in c["metadata"].get("tags", []) for c in code) == 1, name
    (tmp_path / "x.ipynb").write_text("{}")
    assert gen.stale(tmp_path) == list(gen.NOTEBOOKS)       # a stale or missing file is reported
