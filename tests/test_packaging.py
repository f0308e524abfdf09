"""Packaging contracts: pins agree between pip and conda; the core imports no Jupyter package."""
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pip_requirements() -> set[str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"])
    for extra in proj["optional-dependencies"].values():
        reqs += extra
    return set(reqs)


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = {r for r in pip_section if r != "-e ."}
    assert conda_pins == _pip_requirements(), (
        f"only in environment.yml: {conda_pins - _pip_requirements()}; "
        f"only in pyproject.toml: {_pip_requirements() - conda_pins}")


def test_torch_pins_are_exact():
    reqs = _pip_requirements()
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs


def test_core_imports_no_jupyter_package():
    import mdw_kit
    names = [m.name for m in pkgutil.walk_packages(mdw_kit.__path__, "mdw_kit.")
             if not m.name.endswith("__main__")]
    code = ("import sys, importlib\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "bad = [m for m in ('ipywidgets', 'IPython', 'jupyterlab', 'ipykernel', 'widgets') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core imported Jupyter packages: {out.stdout.strip()}"
    assert len(names) > 5
