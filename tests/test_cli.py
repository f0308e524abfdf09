"""The `mdw` command and the pipeline runner, on tiny shapes data with the model-free hash encoder."""
import json

import pytest

from mdw_kit.cli import main
from mdw_kit.pipeline import PipelineConfig, prepare_data, run_pipeline

TINY = ["--source", "shapes", "--option", "num_images=60", "--encoder", "hash"]


def test_data_subcommand_writes_summary_and_noise_record(tmp_path, capsys):
    assert main(["data", *TINY, "--noise", "0.4", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "data.json").read_text())
    noise = json.loads((tmp_path / "noise.json").read_text())
    assert data["train_noise_rate"] == pytest.approx(0.4, abs=0.03)
    assert noise["count"] == round(0.4 * data["train_pairs"])
    assert "train_pairs" in capsys.readouterr().out


def test_unknown_source_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "--source", "nope", "--encoder", "hash"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "openmoji" in err


def test_train_subcommand_selects_on_val_and_writes_metrics(tmp_path):
    assert main(["train", *TINY, "--epochs", "2", "--seeds", "0", "--batch-size", "16",
                 "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= m["mean"]["R-sum"] <= 600
    assert m["best_epochs"][0] in (1, 2)
    assert (tmp_path / "config.json").exists() and (tmp_path / "log.txt").exists()


def test_pipeline_quick_writes_report_and_results(tmp_path):
    cfg = PipelineConfig(source="shapes", source_options={"num_images": 100}, encoder="hash", quick=True,
                         seeds=(0,), budget=12, baselines=("random",))
    summary = run_pipeline(tmp_path, cfg)
    assert set(summary["results"]) == {"mdw", "random"}
    html = (tmp_path / "report.html").read_text()
    assert "Stage 1" in html and "data:image/png;base64" in html
    assert (tmp_path / "noise_report.json").exists()
    assert json.loads((tmp_path / "metrics.json").read_text())["distill"]["iterations"] == 4


def test_prepare_data_splits_embeddings_consistently():
    b = prepare_data("shapes", noise=0.5, source_options={"num_images": 50}, encoder="hash")
    assert b.val_text.shape[0] == len(b.val) and b.test_text.shape[0] == len(b.test)
    assert b.val.clean.all() and b.test.clean.all()
    assert b.train.noise_rate == pytest.approx(0.5, abs=0.03)


def test_dual_config_keys_win_and_bad_json_names_the_flag(tmp_path, capsys):
    import argparse

    from mdw_kit.cli_stages import _dual_cfg
    ns = argparse.Namespace(expert_epochs=12, naive=False,
                            dual_config='{"epochs": 30, "mode": "weight", "min_weight": 0.05}')
    cfg = _dual_cfg(ns)
    assert (cfg.epochs, cfg.mode, cfg.min_weight, cfg.num_tracks) == (30, "weight", 0.05, 2)
    assert _dual_cfg(argparse.Namespace(expert_epochs=5, naive=True, dual_config=None)).num_tracks == 1
    for text, expect in (("{mode: weight}", "--dual-config is not valid JSON"),
                         ("[1, 2]", "--dual-config must be a JSON object"),
                         ('{"epoch": 3}', "unknown DualTrackConfig keys")):
        assert main(["noise-report", "--source", "shapes", "--dual-config", text,
                     "--out", str(tmp_path / "r")]) == 2
        assert expect in capsys.readouterr().err
        assert not (tmp_path / "r").exists()  # refused before a run folder is made
    assert main(["distill", "--source", "shapes", "--distill-config", "{iterations: 2}",
                 "--out", str(tmp_path / "d")]) == 2
    assert "--distill-config is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
