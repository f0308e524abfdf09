"""The progress switch: MDW_NO_PROGRESS=1 quiets our bars and the libraries'; steps are logged either way."""
from __future__ import annotations

import logging

from mdw_kit.utils import PROGRESS_LOG, progress, quiet_libraries


def test_no_progress_also_quiets_datasets_and_transformers(monkeypatch):
    import datasets
    import transformers
    monkeypatch.setenv("MDW_NO_PROGRESS", "1")
    datasets.enable_progress_bars()
    transformers.utils.logging.enable_progress_bar()
    quiet_libraries()
    assert datasets.utils.are_progress_bars_disabled()
    assert not transformers.utils.logging.is_progress_bar_enabled()


def test_each_step_is_logged_with_bars_off(caplog):
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOG.name):
        assert list(progress(range(3), desc="dual-track", enabled=False)) == [0, 1, 2]
        list(progress(range(1000), desc="distill", enabled=False))
    lines = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in lines[:3]] == [f"dual-track: {i}/3 done" for i in (1, 2, 3)]
    assert 40 <= sum(m.startswith("distill") for m in lines) <= 60 and "distill: 1000/1000 done" in lines[-1]


def test_no_progress_silences_the_text_encoder_weight_loading_bar():
    """A fresh process (transformers not yet imported) that loads MiniLM with bars off prints no bar."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, MDW_NO_PROGRESS="1", HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", "from mdw_kit.models.text import MiniLMEncoder; MiniLMEncoder()"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Loading weights" not in run.stderr + run.stdout
