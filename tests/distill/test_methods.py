"""Every method switch runs end to end on tiny data and returns the expected keys."""
from __future__ import annotations

import json
import math
from dataclasses import fields

import pytest
import torch

import mdw_kit.distill.methods as methods_module
from mdw_kit.distill.distiller import DistillConfig, Distiller, TrajectoryList
from mdw_kit.distill.methods import (METHODS, FixedRateDistiller, MethodSpec, get_method, run_method,
                                     train_pairs)
from mdw_kit.experts.buffer import build_buffer
from mdw_kit.experts.dual_track import DualTrackConfig
from mdw_kit.models import ModelConfig
from mdw_kit.models.retrieval import get_flat
from mdw_kit.data.bundle import prepare_data
from mdw_kit.runs import ArtifactError

BUDGET = 8
DISTILL = dict(iterations=2, syn_steps=2, batch_syn=4, segment_epochs=1, max_start_epoch=1, lr_init=0.01, corr_rank=2,
               ceo_every=5, save_maps_every=0, checkpoint_every=0, progress=False, device="cpu")
EVAL = dict(epochs=2, eval_every=1, full_epochs=1, device="cpu")
RESULT_KEYS = {"method", "kind", "budget", "spec", "key", "mean", "sd", "val_mean", "per_seed", "eval",
               "time_s", "peak_rss_mib", "torch_threads", "cached"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = prepare_data("shapes", noise=0.5, source_options={"num_images": 40}, encoder="hash")
    mc = ModelConfig(tower="convnet3", text_dim=data.text_dim, image_size=32, embed_dim=16,
                     tower_kw={"width": 4})
    images, text = train_pairs(data)
    buffers = {}
    for kind in ("dual_track", "naive"):
        cfg = DualTrackConfig(epochs=2, warmup_epochs=1, batch_size=8, naive=kind == "naive", progress=False,
                              device="cpu")
        buffers[kind] = build_buffer(tmp_path_factory.mktemp(kind), mc, images, text, cfg, num_runs=1,
                                     data_fingerprint=data.fingerprint(), text_encoder_name=data.encoder_name,
                                     clean=data.train.clean, progress=False)
    return data, mc, buffers


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_runs_and_returns_expected_keys(name, setup, tmp_path):
    data, mc, buffers = setup
    r = run_method(name, data, BUDGET, buffers, distill=DISTILL, eval_cfg=EVAL, seeds=(0,), run_dir=tmp_path)
    spec = METHODS[name]
    assert RESULT_KEYS <= set(r)
    assert set(r["mean"]) == {"TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "R-sum"}
    assert 0.0 <= r["mean"]["R-sum"] <= 600.0 and r["sd"]["R-sum"] == 0.0
    assert (tmp_path / "result.json").exists()
    if spec.kind == "coreset":
        assert len(set(r["selection"]["indices"])) == BUDGET and r["eval"]["trainer"] == "adam"
    elif spec.kind == "distill":
        assert r["distill"]["iterations"] == DISTILL["iterations"]
        assert r["distill"]["plain_steps_s"] > 0 and r["distill"]["iteration_over_plain"] > 0
        assert r["eval"]["trainer"] == "sgd_learned_lr" and r["eval"]["num_pairs"] == BUDGET
        assert r["eval"]["soft_targets"] and set(r["eval"]["rates"]) == {"image", "text"}
        assert r["distilled_set"].corr.kind == spec.corr
        assert (tmp_path / "distill" / "artifacts" / "distilled" / "distilled.json").exists()
    else:
        assert r["budget"] is None
        n_train = len(data.train)
        want = int(data.train.clean.sum()) if name == "clean_oracle" else n_train
        assert r["selection"]["num_pairs"] == want == r["eval"]["num_pairs"]


def test_clean_random_uses_the_noise_report(setup):
    data, mc, buffers = setup
    p = buffers["dual_track"].consensus_p_clean
    r = run_method("clean_random", data, BUDGET, buffers, eval_cfg=EVAL, seeds=(0,))
    assert bool((p[r["selection"]["indices"]] >= 0.5).all()) or int((p >= 0.5).sum()) < BUDGET


def test_init_switch_decides_the_starting_pairs(setup):
    data, mc, buffers = setup
    p = buffers["dual_track"].consensus_p_clean
    r = run_method("mdw_no_ceo", data, BUDGET, buffers, distill=DISTILL, eval_cfg=EVAL, seeds=(0,))
    init = r["distilled_set"].init_indices
    if int((p >= 0.5).sum()) >= BUDGET:
        assert bool((p[init] >= 0.5).all())


def test_ablations_differ_from_mdw_in_one_switch():
    mdw = METHODS["mdw"].switches()
    # identity targets have no correspondence to start from a prior: the prior goes with P~
    for name, switch in (("mdw_no_dual", ["experts"]), ("mdw_no_ceo", ["ceo_beta"]),
                         ("mdw_no_corr", ["corr", "corr_prior_scale"]),
                         ("mdw_kcenter_init", ["init"]), ("mdw_balanced_init", ["init"])):
        other = METHODS[name].switches()
        assert [k for k in mdw if mdw[k] != other[k]] == switch
    assert METHODS["mtt_vl"].corr == "identity" and METHODS["mtt_vl"].experts == "naive"
    assert METHODS["lors"].corr == "lowrank" and METHODS["lors"].experts == "naive"


def test_a_renamed_method_says_its_new_name():
    with pytest.raises(ValueError, match="now called 'mdw'"):
        get_method("mdw_clean_random_init")
    assert METHODS["mdw"].init == "clean_random"


def test_init_switch_maps_to_the_stage2_selection():
    for init, want in (("clean_kcenter", "kcenter"), ("clean_balanced", "balanced"), ("clean_random", "random"),
                       ("random", "random")):
        assert MethodSpec("x", "distill", init=init).distill_config(10).init == want
    with pytest.raises(ValueError, match="init one of"):
        MethodSpec("x", "distill", init="kcenter")


def test_result_is_resumed_from_run_dir_and_guarded(setup, tmp_path):
    data, mc, buffers = setup
    a = run_method("herding", data, BUDGET, buffers, eval_cfg=EVAL, seeds=(0,), run_dir=tmp_path)
    b = run_method("herding", data, BUDGET, buffers, eval_cfg=EVAL, seeds=(0,), run_dir=tmp_path)
    assert not a["cached"] and b["cached"] and a["mean"] == b["mean"]
    with pytest.raises(ArtifactError, match="other settings"):
        run_method("herding", data, BUDGET + 1, buffers, eval_cfg=EVAL, seeds=(0,), run_dir=tmp_path)


def test_clear_errors(setup):
    data, mc, buffers = setup
    with pytest.raises(ValueError, match="'naive' expert buffer"):
        run_method("lors", data, BUDGET, {"dual_track": buffers["dual_track"]}, distill=DISTILL, eval_cfg=EVAL)
    with pytest.raises(ValueError, match="set by the method itself"):
        get_method("mdw").distill_config(BUDGET, {"corr": "identity"})
    with pytest.raises(ValueError, match="mdw_no_ceo"):
        get_method("mdw").distill_config(BUDGET, {"ceo_beta": 0})
    with pytest.raises(ValueError, match="without CEO"):
        get_method("lors").distill_config(BUDGET, {"ceo_beta": 0.2})
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")
    with pytest.raises(ValueError, match="kind"):
        MethodSpec("bad", "other")


def test_ceo_strength_is_tunable_where_ceo_is_on():
    assert get_method("mdw").distill_config(BUDGET, {"ceo_beta": 0.2}).ceo_beta == 0.2
    assert get_method("mdw").distill_config(BUDGET).ceo_beta == METHODS["mdw"].ceo_beta
    assert get_method("mdw_no_ceo").distill_config(BUDGET, {"ceo_beta": 0}).ceo_beta == 0


def test_fixed_rate_distiller_keeps_eta(setup):
    data, mc, buffers = setup
    images, text = train_pairs(data)
    model = mc.build()
    s = get_flat(model)
    g = torch.Generator().manual_seed(0)
    traj = torch.stack([s + 0.05 * i * torch.randn(s.shape, generator=g) for i in range(3)])
    cfg = DistillConfig(num_pairs=BUDGET, **DISTILL)
    fixed = FixedRateDistiller(cfg, TrajectoryList([traj]), mc, images, text).run()
    moved = Distiller(cfg, TrajectoryList([traj]), mc, images, text).run()
    assert torch.allclose(fixed.lr(), torch.full((2,), 0.01))
    assert not torch.allclose(moved.lr(), torch.full((2,), 0.01))
    assert all(math.isfinite(v) for v in fixed.learning_rates().values())


def test_spec_fields_are_documented():
    doc = methods_module.__doc__
    for f in fields(MethodSpec):
        if f.name in ("experts", "corr", "ceo_beta", "init", "learn_lr"):
            assert f"``{f.name}``" in doc


def test_selection_on_validation_runs_through_run_method(setup, tmp_path):
    data, mc, buffers = setup
    r = run_method("mdw", data, BUDGET, buffers, distill=dict(DISTILL, select_every=1, select_epochs=2),
                   eval_cfg=EVAL, seeds=(0,), run_dir=tmp_path)
    summary = r["distill"]["summary"]
    assert [it for it, _ in summary["val_rsum_by_iteration"]] == [0, 1, 2]
    assert summary["selected_iteration"] in (0, 1, 2)
    assert r["distilled_set"].meta["selection"]["best_iteration"] == summary["selected_iteration"]
    metrics = json.loads((tmp_path / "distill" / "metrics.json").read_text())
    assert metrics["distill"]["selected_iteration"] == summary["selected_iteration"]
    with_sel = run_method("mdw", data, BUDGET, buffers, distill=dict(DISTILL, select_every=1, select_epochs=3),
                          eval_cfg=EVAL, seeds=(0,))
    assert with_sel["key"] != r["key"]  # selection settings are part of the result's identity


def test_the_correspondence_prior_is_a_strength_of_methods_with_a_learnable_correspondence():
    from mdw_kit.distill.methods import get_method
    assert get_method("mdw").distill_config(20, {"corr_prior_scale": 0.5}).corr_prior_scale == 0.5
    assert get_method("lors").distill_config(20).corr_prior_scale == 0.0  # LoRS starts as LoRS does
    assert get_method("mdw").distill_config(20).corr_prior_scale == get_method("mdw").corr_prior_scale > 0
    for name in ("mtt_vl", "mdw_no_corr"):
        assert get_method(name).distill_config(20).corr_prior_scale == 0.0
        with pytest.raises(ValueError, match=f"{name}.*identity targets"):
            get_method(name).distill_config(20, {"corr_prior_scale": 1.0})
