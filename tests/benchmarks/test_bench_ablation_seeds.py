"""The ablation-over-seeds benchmark: paired differences by distillation seed, and a table read
from a work folder's cells (seed 0 shares the headline grid's cell)."""
import json
import math
from dataclasses import asdict

import pytest

from mdw_kit import experiments as X
from mdw_kit.distill.methods import METHODS

BENCHMARK = "bench_ablation_seeds"


def test_paired_comparison_is_by_seed(bench):
    c = bench.paired_comparison({0: 10.0, 1: 12.0, 2: 14.0, 3: 99.0}, {0: 8.0, 1: 9.0, 2: 10.0})
    assert c["distill_seeds"] == [0, 1, 2] and c["diffs"] == [2.0, 3.0, 4.0]
    assert c["mean_diff"] == 3.0
    assert c["se"] == pytest.approx(1.0 / math.sqrt(3))
    assert c["z"] == pytest.approx(3.0 * math.sqrt(3))
    one = bench.paired_comparison({0: 1.0}, {0: 0.5})
    assert one["mean_diff"] == 0.5 and one["se"] is None and one["z"] is None


def test_an_ablation_that_wins_misses_the_target(bench):
    rows = [{"method": m, "distill_seed": s, "rsum_mean": v, "seeds": [v - 1, v + 1]}
            for m, vals in (("mdw", [100, 104, 102]), ("mdw_no_ceo", [103, 106, 105]), ("mdw_no_corr", [90, 95, 91]))
            for s, v in enumerate(vals)]
    summary, comps = bench.summarise(rows, ["mdw", "mdw_no_ceo", "mdw_no_corr"])
    assert summary["mdw"]["rsum_mean"] == pytest.approx(102.0)
    assert summary["mdw"]["rsum_sd_over_distill_seeds"] == pytest.approx(2.0)
    by = {c["ablation"]: c for c in comps}
    assert by["mdw_no_ceo"]["mean_diff"] < 0 and by["mdw_no_ceo"]["met"] is False
    assert by["mdw_no_corr"]["mean_diff"] == pytest.approx(10.0) and by["mdw_no_corr"]["met"] is True


def _fake_cell(root, seed, method, rsum, distill=None, experts=None):
    over = dict(distill or {}, **({"seed": seed} if seed else {}))
    settings = X.grid_settings("default", noise=[0.5], budgets=[100], methods=[method], distill=over,
                               experts=experts)
    d = X.cell_dir(root, settings, 0.5, method, 100)
    d.mkdir(parents=True)
    spec = METHODS[method]
    config = spec.distill_config(100, X.cell_distill_options(settings)).to_dict()
    (d / "result.json").write_text(json.dumps({
        "method": method, "budget": 100, "kind": "distill", "spec": asdict(spec), "distill": {"config": config},
        "mean": {"R-sum": rsum}, "sd": {"R-sum": 1.0}, "val_mean": {"R-sum": rsum + 1},
        "per_seed": [{"seed": 0, "test": {"R-sum": rsum - 1}}, {"seed": 1, "test": {"R-sum": rsum + 1}}]}))


def test_collect_only_reads_the_cells_of_each_distillation_seed(bench, tmp_path):
    for seed, (a, b) in enumerate(((100.0, 90.0), (104.0, 95.0))):
        _fake_cell(tmp_path, seed, "mdw", a)
        _fake_cell(tmp_path, seed, "mdw_no_corr", b)
    out = tmp_path / "a.json"
    argv = ["--collect-only", "--work-dir", str(tmp_path), "--distill-seeds", "0", "1", "2",
            "--methods", "mdw", "mdw_no_corr", "--out", str(out)]
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"] == "python benchmarks/bench_ablation_seeds.py " + " ".join(argv)
    assert sorted((r["method"], r["distill_seed"]) for r in doc["rows"]) == [
        ("mdw", 0), ("mdw", 1), ("mdw_no_corr", 0), ("mdw_no_corr", 1)]
    (c,) = doc["comparisons"]
    assert c["diffs"] == [10.0, 9.0] and c["mean_diff"] == 9.5
    assert "seed" not in doc["distill_settings"]["0"] and doc["distill_settings"]["1"]["seed"] == 1


def test_the_seed_is_not_a_distill_option(bench, tmp_path):
    with pytest.raises(SystemExit, match="--distill-seeds"):
        bench.main(["--collect-only", "--work-dir", str(tmp_path), "--distill-option", "seed=3"])


def test_a_variant_is_a_method_with_its_own_distill_fields(bench, tmp_path):
    for seed, (a, b) in enumerate(((100.0, 97.0), (104.0, 103.0))):
        _fake_cell(tmp_path, seed, "mdw_no_ceo", a)
        _fake_cell(tmp_path, seed, "mdw", b, {"ceo_beta": 0.2})
    _fake_cell(tmp_path, 0, "mdw", 50.0)  # the default strength: another cell, not read by the variant
    out = tmp_path / "a.json"
    assert bench.main(["--collect-only", "--work-dir", str(tmp_path), "--distill-seeds", "0", "1",
                       "--methods", "mdw_no_ceo", "--variant", 'b02={"method": "mdw", "distill": {"ceo_beta": 0.2}}',
                       "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["variants"]["b02"] == {"method": "mdw", "distill": {"ceo_beta": 0.2}}
    (c,) = doc["comparisons"]
    assert c["reference"] == "mdw_no_ceo" and c["ablation"] == "b02" and c["diffs"] == [3.0, 1.0]


def test_bad_variants_are_refused_before_anything_runs(bench, tmp_path):
    with pytest.raises(SystemExit, match="without CEO"):
        bench.main(["--work-dir", str(tmp_path), "--methods", "mdw",
                    "--variant", 'x={"method": "lors", "distill": {"ceo_beta": 0.2}}'])
    with pytest.raises(SystemExit, match="name is taken"):
        bench.main(["--work-dir", str(tmp_path), "--methods", "mdw", "--variant", 'mdw={"method": "mdw"}'])
    with pytest.raises(SystemExit):
        bench.main(["--work-dir", str(tmp_path), "--variant", "x={not json"])
    assert not (tmp_path / "cells").exists()


def test_expert_runs_select_the_cells_of_that_buffer(bench, tmp_path):
    _fake_cell(tmp_path, 0, "mdw", 100.0)
    _fake_cell(tmp_path, 0, "mdw", 120.0, experts={"num_runs": 8})
    out = tmp_path / "a.json"
    assert bench.main(["--collect-only", "--work-dir", str(tmp_path), "--distill-seeds", "0", "--methods", "mdw",
                       "--expert-runs", "8", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["rsum_mean"] for r in doc["rows"]] == [120.0] and doc["experts"]["num_runs"] == 8
