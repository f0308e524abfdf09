"""benchmarks/bench_mechanisms.py: variant parsing and the per-variant summary against the targets."""
from __future__ import annotations

import argparse

import pytest

BENCHMARK = "bench_mechanisms"


def test_variants_parse_and_bad_ones_are_named(bench):
    assert bench.parse_variant('dsa={"augment_strength": 1.0}') == ("dsa", {"augment_strength": 1.0})
    assert bench.parse_variant("plain=") == ("plain", {})
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=JSON"):
        bench.parse_variant("plain")
    with pytest.raises(argparse.ArgumentTypeError, match="--variant tv: not JSON"):
        bench.parse_variant("tv={tv_weight: 1}")


def test_summary_has_mean_sd_and_marks_each_target(bench):
    rows = [{"variant": "a", "seed": s, "off_share": v, "caption_spearman": 0.1, "pointing_final": 0.9}
            for s, v in enumerate([0.04, 0.08])]
    out = bench.summarise(rows)
    assert out["off_share"][0] == pytest.approx(0.06) and out["off_share"][1] > 0
    assert out["targets_met"] == {"off_share": True, "caption_spearman": False, "pointing_final": True}
    assert "seed" not in out


def test_summary_skips_a_figure_undefined_for_one_seed(bench):
    # the maps' accuracy among named images is undefined (None) when no top text names an object
    rows = [{"variant": "a", "seed": 0, "pointing_final_named": 0.8},
            {"variant": "a", "seed": 1, "pointing_final_named": None},
            {"variant": "a", "seed": 2, "pointing_final_named": 0.6}]
    out = bench.summarise(rows)
    assert out["pointing_final_named"][0] == pytest.approx(0.7)
    assert "variant" not in out


class FakeDistiller:
    def __init__(self, cfg):
        self.cfg = cfg

    def run(self):
        return "set"


def stages(calls: list, **cfg_kw):
    """Stands in for mdw_kit: records what distil_one asks the stage API for."""
    from mdw_kit.distill.distiller import DistillConfig

    class Stages:
        @staticmethod
        def distiller(data, buf, method, budget, config, run_dir):
            calls.append((method, config))
            return FakeDistiller(DistillConfig(num_pairs=budget, **cfg_kw))
    return Stages


def test_a_variant_can_name_another_method(bench, tmp_path):
    calls = []
    _, cfg = bench.parse_variant('no_ceo={"method": "mdw_no_ceo", "lr_img": 0.001}')
    assert bench.distil_one(stages(calls), None, None, cfg, 2, 5, tmp_path / "a") == "set"
    assert bench.distil_one(stages(calls), None, None, {}, 0, 5, tmp_path / "b") == "set"
    (m1, c1), (m2, _) = calls
    assert (m1, m2) == ("mdw_no_ceo", "mdw")
    assert "method" not in c1 and c1["lr_img"] == 0.001 and c1["seed"] == 2 and c1["iterations"] == 5
    assert cfg == {"method": "mdw_no_ceo", "lr_img": 0.001}  # the variant itself is not changed


def test_a_finished_set_is_reused_only_when_made_with_the_same_settings(bench, tmp_path):
    import torch
    from mdw_kit.distill.distiller import DistillConfig
    from mdw_kit.distill.synthetic import DistilledSet
    folder = tmp_path / "v" / "seed0"
    made = DistillConfig(num_pairs=100, lr_img=0.001)
    DistilledSet.from_pairs(torch.rand(4, 3, 8, 8), torch.randn(4, 6), [0, 1, 2],
                            meta={"config": made.to_dict()}).save(folder / "artifacts" / "distilled")
    same = bench.distil_one(stages([], lr_img=0.001), None, None, {}, 0, 5, folder)
    assert isinstance(same, DistilledSet) and same.num_pairs == 3
    with pytest.raises(SystemExit, match=r"other settings \(corr_prior_scale\)"):
        bench.distil_one(stages([], lr_img=0.001, corr_prior_scale=1.0), None, None, {}, 0, 5, folder)
