"""The headline benchmark's iteration-cost probe: it times whole CEO refresh periods, so the
amortised ratio includes the map refreshes, and ``--costs-only`` writes it with its command."""
import json

import pytest

from mdw_kit import experiments as X

BENCHMARK = "bench_distill"


@pytest.fixture(scope="module")
def smoke_settings():
    return X.grid_settings("smoke", noise=[0.5], budgets=[20], methods=["mdw"],
                           distill={"ceo_every": 3, "syn_steps": 2})


def test_probe_times_whole_refresh_periods(bench, smoke_settings, tmp_path):
    out = tmp_path / "probe.json"
    bench.child_cost(tmp_path / "work", smoke_settings, out, cycles=2)
    p = json.loads(out.read_text())
    # iteration 1 (warm-up, first maps), then 2 periods of 3: refreshes at iterations 1, 4 and 7
    assert len(p["iteration_s"]) == len(p["backbone_fwd_bwd_s"]) == 7
    assert p["map_refresh"] == [True, False, False, True, False, False, True]
    amortised = sum(p["iteration_s"][1:]) / sum(p["backbone_fwd_bwd_s"][1:])
    assert p["iteration_over_backbone"] == pytest.approx(amortised)
    assert p["ceo_every"] == 3 and p["iteration_over_backbone_without_maps"] > 0


def test_costs_only_writes_the_probe_and_its_target(bench, tmp_path):
    out = tmp_path / "costs.json"
    argv = ["--preset", "smoke", "--noise", "0.5", "--budgets", "20", "--methods", "mdw", "--costs-only",
            "--distill-option", "ceo_every=2", "--distill-option", "syn_steps=2",
            "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].endswith(" ".join(argv))
    assert doc["met"] == (doc["probe"]["iteration_over_backbone"] <= 1.5)
    assert doc["regime"]["distill"]["ceo_every"] == 2
    assert not list((tmp_path / "work").glob("cells/*/*"))  # no grid cell ran
