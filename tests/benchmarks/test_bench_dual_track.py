"""The dual-track benchmark's --merge: runs of the same settings on different seeds become one table,
and files that do not belong together are refused with a message naming them."""
import json
from pathlib import Path

import pytest

BENCHMARK = "bench_dual_track"


def _det(auroc: float) -> dict:
    m = {"auroc": auroc, "auroc_p_clean": auroc, "precision": 0.8, "recall": 0.9, "f1": 0.85,
         "true_residual_noise": 0.1}
    return {"A": m, "B": m, "consensus": m}


def _cell(seed: int, dual: float, naive: float) -> dict:
    return {"noise": 0.5, "seed": seed,
            "dual_track": {"detection_warmup": _det(0.88), "detection_final": _det(0.94), "test_rsum": dual,
                           "ensemble_test_rsum": dual + 5, "wall_time_s": 10.0},
            "naive": {"detection_warmup": _det(0.85), "detection_final": _det(0.80), "test_rsum": naive},
            "oracle": {"test_rsum": 120.0}}


def _doc(path: Path, seeds: list[int], dual: list[float], epochs: int = 30) -> str:
    cells = [_cell(s, d, 60.0) for s, d in zip(seeds, dual)]
    path.write_text(json.dumps({"command": f"python bench_dual_track.py --seeds {seeds}", "quick": False,
                                "epochs": epochs, "warmup_epochs": 2, "dual_config_overrides": {"mode": "weight"},
                                "source_options": {"image_size": 32}, "model": "m", "torch_threads": 1,
                                "wall_time_s": 100.0, "summary": [], "cells": cells}))
    return str(path)


def test_merge_joins_cells_and_summarises_them_together(bench, tmp_path):
    a = _doc(tmp_path / "a.json", [3, 4], [100.0, 110.0])
    b = _doc(tmp_path / "b.json", [0], [90.0])
    doc = bench.merge_results([a, b])
    assert [c["seed"] for c in doc["cells"]] == [0, 3, 4]
    final = next(r for r in doc["summary"] if r["when"] == "final")
    assert final["R-sum dual_track"][0] == pytest.approx(100.0)
    assert final["R-sum dual_track"][1] == pytest.approx(10.0)
    assert final["R-sum dual ensemble"][0] == pytest.approx(105.0)
    assert [m["file"] for m in doc["merged_from"]] == ["a.json", "b.json"]
    assert doc["wall_time_s"] == pytest.approx(200.0) and doc["epochs"] == 30


def test_merge_refuses_files_that_do_not_belong_together(bench, tmp_path):
    a = _doc(tmp_path / "a.json", [0], [90.0])
    with pytest.raises(SystemExit, match=r"b\.json has epochs=20"):
        bench.merge_results([a, _doc(tmp_path / "b.json", [1], [90.0], epochs=20)])
    with pytest.raises(SystemExit, match=r"seed 0 is in both .*a\.json and .*c\.json"):
        bench.merge_results([a, _doc(tmp_path / "c.json", [0], [95.0])])
    (tmp_path / "d.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match=r"d\.json is not a bench_dual_track\.py result"):
        bench.merge_results([a, str(tmp_path / "d.json")])
    with pytest.raises(SystemExit, match=r"cannot read .*missing\.json"):
        bench.merge_results([a, str(tmp_path / "missing.json")])
