"""The experiment grid's cell cache (:mod:`mdw_kit.experiments`, read by the headline benchmark): a result made by another definition of a method is
moved aside (kept, not read) instead of being reported under the method's current name."""
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from mdw_kit import experiments as X
from mdw_kit.distill.methods import METHODS

BENCHMARK = "bench_distill"


def _cell(tmp_path: Path, spec) -> Path:
    d = tmp_path / "mdw-M100-abc"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"method": spec.name, "spec": asdict(spec), "mean": {"R-sum": 1.0}}))
    return d


def test_a_result_of_the_current_definition_stays(bench, tmp_path):
    d = _cell(tmp_path, replace(METHODS["mdw"], description="reworded"))
    assert X.retire_stale_cell(d, "mdw") is None
    assert (d / "result.json").exists()


def test_a_result_of_another_definition_is_moved_aside(bench, tmp_path):
    other = "clean_kcenter" if METHODS["mdw"].init != "clean_kcenter" else "clean_random"
    d = _cell(tmp_path, replace(METHODS["mdw"], init=other))
    dest = X.retire_stale_cell(d, "mdw")
    assert dest is not None and not d.exists()
    assert json.loads((dest / "result.json").read_text())["spec"]["init"] == other
    d2 = _cell(tmp_path, replace(METHODS["mdw"], init=other))  # the same stale result again: refuse, lose nothing
    with pytest.raises(FileExistsError, match="another definition"):
        X.retire_stale_cell(d2, "mdw")
    assert (d2 / "result.json").exists() and (dest / "result.json").exists()


def test_distillation_switches_do_not_matter_to_a_coreset(bench, tmp_path):
    d = _cell(tmp_path, replace(METHODS["random"], init="clean_kcenter", ceo_beta=0.0))
    assert X.retire_stale_cell(d, "random") is None


def _distill_cell(tmp_path: Path, config: dict) -> Path:
    d = tmp_path / "mdw-M100-def"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"method": "mdw", "spec": asdict(METHODS["mdw"]),
                                               "distill": {"config": config}, "mean": {"R-sum": 1.0}}))
    return d


def _config_now(overrides: dict) -> dict:
    return METHODS["mdw"].distill_config(100, overrides).to_dict()


def test_a_result_of_the_current_distillation_settings_stays(bench, tmp_path):
    overrides = {"iterations": 10, "progress": False}
    d = _distill_cell(tmp_path, _config_now(overrides))
    assert X.retire_stale_cell(d, "mdw", 100, overrides) is None
    old = {k: v for k, v in _config_now(overrides).items() if k != "pixel_grad_blur"}  # made before the field
    d.rename(tmp_path / "kept")
    d = _distill_cell(tmp_path, old)
    assert X.retire_stale_cell(d, "mdw", 100, overrides) is None
    assert X.retire_stale_cell(d, "mdw", 100, dict(overrides, checkpoint_every=3)) is None  # no effect on results


def test_a_result_of_other_distillation_settings_is_moved_aside(bench, tmp_path):
    overrides = {"iterations": 10, "select_every": 5}
    made = dict(_config_now(overrides), select_epochs=50)  # made under an older default
    d = _distill_cell(tmp_path, made)
    dest = X.retire_stale_cell(d, "mdw", 100, overrides)
    assert dest is not None and not d.exists() and (dest / "result.json").exists()
    assert json.loads((dest / "result.json").read_text())["distill"]["config"]["select_epochs"] == 50
    d = _distill_cell(tmp_path, _config_now({"iterations": 10}))
    assert X.retire_stale_cell(d, "mdw", 100, {"iterations": 20}) is not None


def test_expert_options_key_only_the_dual_track_buffer(bench, tmp_path):
    """The preset's dual-track settings, then ``--expert-option``, key the dual-track buffer; the naive
    buffer (no noise handling to configure) is shared."""
    base = bench.build_settings(bench.parse_args(["--noise", "0.5"]))
    assert base["experts"]["options"] == {"mode": "weight", "min_weight": 0.01, "chance_gate": 0.85}  # the preset
    opt = bench.build_settings(bench.parse_args(["--noise", "0.5", "--expert-option", "mode=select"]))
    assert opt["experts"]["options"] == {"mode": "select", "min_weight": 0.01, "chance_gate": 0.85}
    a, b = X.buffer_dirs(tmp_path, base, 0.5), X.buffer_dirs(tmp_path, opt, 0.5)
    assert a["naive"] == b["naive"]
    assert a["dual_track"] != b["dual_track"]
    assert X.cell_dir(tmp_path, base, 0.5, "mdw", 100) != X.cell_dir(tmp_path, opt, 0.5, "mdw", 100)
    scratch = bench.build_settings(bench.parse_args(["--preset", "scratch", "--tower", "convnet3"]))
    assert "options" not in scratch["experts"] and scratch["model"]["image_size"] == 32
    with pytest.raises(SystemExit, match="cannot set epochs, naive"):
        bench.build_settings(bench.parse_args(["--expert-option", "naive=true", "--expert-option", "epochs=3"]))


def test_expert_options_reach_the_dual_track_config(bench, tmp_path, monkeypatch):
    """Both buffers are built; only the dual-track one gets the options."""
    from types import SimpleNamespace

    import mdw_kit.stages as stages_mod
    built = {}

    def fake_build(data, path, cfg, runs=None, **kw):
        built[path.name.split("-")[0]] = cfg
        return "buffer"

    monkeypatch.setattr(stages_mod, "build_buffer", fake_build)
    settings = bench.build_settings(bench.parse_args(["--noise", "0.5", "--expert-option", "mode=weight",
                                                      "--expert-option", "min_weight=0.01"]))
    data = SimpleNamespace(fingerprint=lambda: "f", encoder_name="e", train=SimpleNamespace(clean=None))
    assert X.ensure_buffers(tmp_path, settings, 0.5, data) == {"dual_track": "buffer", "naive": "buffer"}
    dual, naive = built["dual_track"], built["naive"]
    assert (dual.mode, dual.min_weight, dual.epochs, dual.naive) == ("weight", 0.01, 10, False)
    from mdw_kit.experts.dual_track import DualTrackConfig
    default = DualTrackConfig()
    assert (naive.mode, naive.min_weight, naive.epochs, naive.naive) == (default.mode, default.min_weight, 10, True)


def _result(noise, method, budget, rsum, sd=1.0):
    return {"noise": noise, "method": method, "budget": budget, "kind": "coreset", "mean": {"R-sum": rsum},
            "sd": {"R-sum": sd}, "val_mean": {"R-sum": rsum + 1},
            "per_seed": [{"seed": s, "test": {"R-sum": rsum + s}} for s in (0, 1, 2)], "time_s": 2.0}


def test_headline_rows_targets_and_markdown(bench):
    results = [_result(0.5, "mdw", 100, 120.0), _result(0.5, "clean_random", 100, 50.0),
               _result(0.5, "lors", 100, 110.0), _result(0.5, "full_noisy", None, 70.0)]
    rows = X.headline_rows(results)
    assert [r["method"] for r in rows] == ["full_noisy", "clean_random", "lors", "mdw"]
    assert rows[-1]["seeds"] == [120.0, 121.0, 122.0] and rows[-1]["val_rsum_mean"] == 121.0
    t = {x["target"]: x for x in bench.targets(results)}
    assert t["50% noise, M=100: MDW / clean_random >= 2.0"]["met"] is True        # 2.4x
    assert t["50% noise, M=100: MDW / lors >= 1.15"]["met"] is False              # 1.09x
    assert t["50% noise, M=100: MDW / mtt_vl >= 1.15"]["met"] is None             # not run
    assert t["50% noise: MDW M=100 / full_noisy >= 1.6"]["met"] is True           # 1.71x
    md = bench.markdown_table({"rows": rows})
    assert "| 50% | mdw | 120.0 ± 1.0 (121.0) |" in md and md.splitlines()[0].endswith("| all pairs |")


def test_the_headline_runs_the_important_cells_first(bench):
    settings = bench.build_settings(bench.parse_args([]))
    order = bench.priority_order(settings)
    assert len(order) == len(X.cells(settings))
    assert order[0][0] == 0.5 and order[0][2] == 100            # 50% noise, 100 pairs first
    first_ablation = next(i for i, c in enumerate(order) if c[1] == "mdw_no_dual")
    assert all(c[0] == 0.5 for c in order[:first_ablation])      # the main methods of 50% before any ablation
    assert {c[2] for c in order[:first_ablation] if c[2] is not None} == {100, 200, 500}


def test_collecting_a_shared_grid_reads_the_done_cells_and_runs_nothing(tmp_path, monkeypatch):
    settings = X.grid_settings("smoke", noise=[0.5], budgets=[20], methods=["random", "clean_random"])
    done = X.cell_dir(tmp_path, settings, 0.5, "random", 20)
    done.mkdir(parents=True)
    (done / "result.json").write_text(json.dumps({"method": "random", "spec": asdict(METHODS["random"]),
                                                  "mean": {"R-sum": 3.0}}))
    monkeypatch.setattr(X, "run_child", lambda *a, **k: pytest.fail("a cell was run"))
    monkeypatch.setattr(X, "ensure_buffers", lambda *a, **k: pytest.fail("a buffer was built"))
    results = X.run_grid(tmp_path, settings, run_missing=False, log=lambda m: None)
    assert [(r["method"], r["noise"]) for r in results] == [("random", 0.5)]
