"""The `mdw` command (a package, one module per subcommand group) on tiny shapes data with the hash encoder:
run folders, provenance, one-line errors."""
import json
import shutil
import subprocess
import sys

import pytest

from mdw_kit.cli import main
from mdw_kit.data.bundle import prepare_data
from mdw_kit.pipeline import PipelineConfig, run_pipeline

TINY = ["--preset", "smoke", "--source", "shapes", "--option", "num_images=60", "--encoder", "hash"]
NOISY = [*TINY, "--noise", "0.4"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A buffer (one run, 3 epochs) and a 10-pair distillation from it (2 iterations)."""
    root = tmp_path_factory.mktemp("cli")
    assert main(["buffer", *NOISY, "--expert-epochs", "3", "--out", str(root / "buf")]) == 0
    assert main(["distill", *NOISY, "--buffer", str(root / "buf" / "buffer"), "--budget", "10", "--iterations",
                 "2", "--eval-epochs", "2", "--seeds", "0", "--out", str(root / "dist")]) == 0
    return root


def test_data_subcommand_writes_summary_and_noise_record(tmp_path, capsys):
    assert main(["data", *TINY, "--noise", "0.4", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "data.json").read_text())
    noise = json.loads((tmp_path / "noise.json").read_text())
    assert data["train_noise_rate"] == pytest.approx(0.4, abs=0.03)
    assert noise["count"] == round(0.4 * data["train_pairs"])
    assert "train_pairs" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["command"] == "data" and set(cfg["provenance"]) == {"data", "encoder"}
    assert (tmp_path / "metrics.json").exists()


def test_unknown_source_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "--source", "nope", "--encoder", "hash"]) == 2
    err = _err(capsys)
    assert "nope" in err and "openmoji" in err


def test_train_selects_on_val_writes_metrics_and_logs_each_epoch(tmp_path):
    assert main(["train", *TINY, "--epochs", "2", "--seeds", "0", "--batch-size", "16",
                 "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= m["mean"]["R-sum"] <= 600
    assert m["best_epochs"][0] in (1, 2)
    log = (tmp_path / "log.txt").read_text()
    assert "train: 1/2 done" in log and "train: 2/2 done" in log  # progress bars are off in the tests


def test_pipeline_quick_writes_report_and_results(tmp_path):
    cfg = PipelineConfig(source="shapes", source_options={"num_images": 100}, encoder="hash", quick=True,
                         seeds=(0,), budget=12, baselines=("random",))
    summary = run_pipeline(tmp_path, cfg)
    assert set(summary["results"]) == {"mdw", "random"}
    html = (tmp_path / "report.html").read_text()
    assert "Stage 1" in html and "data:image/png;base64" in html
    assert (tmp_path / "noise_report.json").exists()


def test_prepare_data_splits_embeddings_consistently():
    b = prepare_data("shapes", noise=0.5, source_options={"num_images": 50}, encoder="hash")
    assert b.val_text.shape[0] == len(b.val) and b.test_text.shape[0] == len(b.test)
    assert b.val.clean.all() and b.test.clean.all()
    assert b.train.noise_rate == pytest.approx(0.5, abs=0.03)


def test_dual_config_keys_win_and_bad_json_names_the_flag(tmp_path, capsys):
    import argparse

    from mdw_kit.cli.experts import dual_cfg
    ns = argparse.Namespace(expert_epochs=12, naive=False,
                            dual_config='{"epochs": 30, "mode": "weight", "min_weight": 0.05}')
    cfg = dual_cfg(ns)
    assert (cfg.epochs, cfg.mode, cfg.min_weight, cfg.num_tracks) == (30, "weight", 0.05, 2)
    assert dual_cfg(argparse.Namespace(expert_epochs=5, naive=True, dual_config=None)).num_tracks == 1
    for text, expect in (("{mode: weight}", "--dual-config is not valid JSON"),
                         ("[1, 2]", "--dual-config must be a JSON object"),
                         ('{"epoch": 3}', "unknown DualTrackConfig key 'epoch'; did you mean 'epochs'?")):
        assert main(["noise-report", "--source", "shapes", "--dual-config", text,
                     "--out", str(tmp_path / "r")]) == 2
        assert expect in _err(capsys)
        assert not (tmp_path / "r").exists()  # refused before a run folder is made


@pytest.mark.parametrize("flags, expect", [
    (["--distill-config", "{iterations: 2}"], "--distill-config is not valid JSON"),
    (["--distill-config", '{"iteratons": 2}'], "unknown DistillConfig key 'iteratons'; did you mean 'iterations'?"),
    (["--distill-config", '{"iterations": "many"}'], "key 'iterations' takes a int (like"),
    (["--distill-config", '{"ceo_beta": -1}'], "--distill-config:"),
    (["--temperature", "0"], "--temperature 0.0: the logit temperature must be a number > 0"),
    (["--budget", "1"], "--budget 1: a set needs at least 2 pairs"),
    (["--seeds", "0", "1", "0"], "--seeds repeats [0]; give each seed once"),
])
def test_bad_distill_flags_are_one_line_errors_before_any_work(tmp_path, capsys, flags, expect):
    assert main(["distill", *TINY, *flags, "--out", str(tmp_path / "d")]) == 2
    assert expect in _err(capsys)
    assert not (tmp_path / "d").exists()


def test_weights_pointing_at_a_folder_is_named(tmp_path, capsys):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.safetensors").write_bytes(b"")
    assert main(["train", *TINY, "--weights", str(tmp_path / "w"), "--out", str(tmp_path / "t")]) == 2
    assert "is a folder; give the weight file itself (there: model.safetensors)" in _err(capsys)


def test_out_that_is_not_a_run_folder_of_the_command_is_refused_and_left_alone(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["data", *TINY, "--out", str(tmp_path)]) == 2
    assert "not empty and holds no config.json" in _err(capsys)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    data_run = tmp_path / "data_run"
    assert main(["data", *TINY, "--out", str(data_run)]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in data_run.iterdir())
    assert main(["train", *TINY, "--epochs", "1", "--seeds", "0", "--out", str(data_run)]) == 2
    assert "is the run folder of 'mdw data', not of 'mdw train'" in _err(capsys)
    assert sorted(p.name for p in data_run.iterdir()) == before
    assert main(["data", *TINY, "--out", str(tmp_path / "mine.txt" / "run")]) == 2
    assert "is a file, not a folder" in _err(capsys)


def test_empty_val_split_is_named(tmp_path, capsys):
    assert main(["train", *TINY, "--option", "val_frac=0", "--out", str(tmp_path / "t")]) == 2
    assert "the val split of source 'shapes' is empty" in _err(capsys)


def test_distill_writes_metrics_and_provenance_and_labelled_noise_tables(distilled):
    m = json.loads((distilled / "dist" / "metrics.json").read_text())
    assert m["method"] == "mdw" and 0 <= m["mean"]["R-sum"] <= 600 and m["budget"] == 10
    prov = json.loads((distilled / "dist" / "config.json").read_text())["provenance"]
    assert len(prov["buffer"]) == 16 and prov["naive_buffer"] is None and prov["encoder"] == "hash-128"
    header = (distilled / "buf" / "noise_report.csv").read_text().splitlines()[0].split(",")
    assert {"image_id", "caption"} <= set(header)


def test_rerun_or_resume_with_another_buffer_is_refused_by_name(distilled, capsys):
    other = distilled / "other_buffer"
    shutil.copytree(distilled / "buf" / "buffer", other)
    index = json.loads((other / "index.json").read_text())
    (other / "index.json").write_text(json.dumps(index))  # same content, other bytes: another buffer file
    before = (distilled / "dist" / "config.json").read_bytes()
    assert main(["distill", *NOISY, "--buffer", str(other), "--budget", "10", "--iterations", "2",
                 "--eval-epochs", "2", "--seeds", "0", "--out", str(distilled / "dist")]) == 2
    assert "was run with another buffer" in _err(capsys)
    assert (distilled / "dist" / "config.json").read_bytes() == before


def test_foreign_buffer_index_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "buf").mkdir()
    (tmp_path / "buf" / "index.json").write_text(json.dumps({"format": "someone else's"}))
    assert main(["distill", *TINY, "--buffer", str(tmp_path / "buf"), "--budget", "10",
                 "--out", str(tmp_path / "d")]) == 2
    assert "index.json: missing field(s)" in _err(capsys)
    assert not (tmp_path / "d").exists()


def test_a_set_evaluated_with_another_encoder_is_refused(distilled, tmp_path, capsys):
    dset = distilled / "dist" / "distill" / "artifacts" / "distilled"
    assert json.loads((dset / "distilled.json").read_text())["meta"]["text_encoder"] == "hash-128"
    args = ["evaluate", str(dset), "--preset", "smoke", "--source", "shapes", "--option", "num_images=60"]
    assert main([*args, "--encoder", "minilm", "--out", str(tmp_path / "e")]) == 2
    assert "was distilled with text encoder 'hash-128'" in _err(capsys)
    assert main([*args, "--encoder", "hash", "--eval-epochs", "2", "--seeds", "0", "--out", str(tmp_path / "ok")]) == 0
    assert "R-sum" in json.loads((tmp_path / "ok" / "metrics.json").read_text())["mean"]


def test_skipped_rows_are_listed_in_the_run_folder(imagefolder_dir, tmp_path):
    (imagefolder_dir / "3.png").write_bytes(b"not a png")
    assert main(["data", "--preset", "smoke", "--source", "hf", "--option", f"path={imagefolder_dir}",
                 "--option", "skip_bad=true", "--encoder", "hash", "--out", str(tmp_path / "d")]) == 0
    rows = (tmp_path / "d" / "skipped_rows.csv").read_text().splitlines()
    assert rows[0] == "file,split,row,reason" and len(rows) == 2
    assert "3.png" in rows[1] and "corrupt or unreadable" in rows[1]


def test_non_utf8_metadata_through_the_cli_is_one_line(imagefolder_dir, capsys):
    meta = imagefolder_dir / "metadata.jsonl"
    meta.write_bytes(meta.read_bytes().replace(b"shade number 1", b"caf\xe9", 1))
    assert main(["data", "--source", "hf", "--option", f"path={imagefolder_dir}", "--encoder", "hash"]) == 2
    assert "is not UTF-8 text: line 2" in _err(capsys)


def test_python_dash_m_runs_the_package():
    out = subprocess.run([sys.executable, "-m", "mdw_kit.cli", "distill", "-h"], capture_output=True, text=True)
    assert out.returncode == 0 and "--method" in out.stdout and "clean_oracle" in out.stdout


def test_pipeline_runs_on_a_users_own_image_folder(tmp_path):
    from PIL import Image
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = []
    for i in range(48):
        Image.new("RGB", (40, 40), (5 * i, 255 - 5 * i, (37 * i) % 255)).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"a square of shade {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert main(["pipeline", "--quick", "--source", "hf", "--option", f"path={folder}", "--option", "val_frac=0.2",
                 "--option", "test_frac=0.2", "--encoder", "hash", "--tower", "convnet3", "--budget", "8",
                 "--seeds", "0", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["source"] == "hf" and "mdw" in m["results"]


def test_a_full_disk_during_the_work_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import mdw_kit.cli.data as data_cmds

    def full(run, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(run.path / "data.json"))
    monkeypatch.setattr(data_cmds, "save_data_record", full)
    assert main(["data", *TINY, "--out", str(tmp_path / "d")]) == 2
    assert _err(capsys) == f"error: cannot write or read '{tmp_path / 'd' / 'data.json'}': No space left on device"
