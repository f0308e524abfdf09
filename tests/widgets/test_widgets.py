"""Widgets driven from plain Python: set a control, read the state. Inputs are built by hand (no training)."""
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from mdw_kit import viz
from mdw_kit.evaluation import pointing
from widgets import (AblationPanel, CorrespondenceHeatmap, NoiseExplorer, PairGallery, RegionViewer,
                     TrainingMonitor, matrix_order, threshold_metrics)
from widgets._static import png_bytes


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def pairs():
    """30 pairs over 30 images: 20 train / 5 val / 5 test; every third training pair is noisy."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 16, 16), generator=g, dtype=torch.uint8)
    split = np.array(["train"] * 20 + ["val"] * 5 + ["test"] * 5, dtype=object)
    noisy = np.zeros(30, dtype=bool)
    noisy[:20:3] = True
    p_clean = np.where(noisy, 0.1, 0.9) + np.linspace(-0.05, 0.05, 30)
    return images, [f"caption {i}" for i in range(30)], split, noisy, p_clean


@pytest.fixture
def noise_table():
    """200 pairs; truth 40% noisy; clean pairs score high, noisy low, with a known overlap."""
    rng = np.random.default_rng(0)
    clean = rng.random(200) > 0.4
    pa = np.clip(np.where(clean, rng.normal(0.8, 0.15, 200), rng.normal(0.25, 0.15, 200)), 0, 1)
    pb = np.clip(pa + rng.normal(0, 0.05, 200), 0, 1)
    losses = {"A": np.where(clean, 1.0, 3.0) + rng.normal(0, 0.3, 200),
              "B": np.where(clean, 1.0, 3.0) + rng.normal(0, 0.3, 200)}
    return pd.DataFrame({"p_clean_A": pa, "p_clean_B": pb, "true_clean": clean}), losses


# ---------------------------------------------------------------- gallery
def test_gallery_filters_change_contents(pairs):
    images, caps, split, noisy, p = pairs
    g = PairGallery(images, caps, split=split, injected_noise=noisy, p_clean=p, page_size=8)
    assert len(g.matches) == 30 and len(g.grid.children) == 8 and g.n_pages == 4
    g.split_filter.value = "val"
    assert g.matches.tolist() == [20, 21, 22, 23, 24]
    assert len(g.grid.children) == 5 and "5 pairs" in g.page_label.value
    g.split_filter.value = "train"
    g.noise_filter.value = "injected noise"
    assert g.matches.tolist() == list(range(0, 20, 3))
    g.noise_filter.value = "clean"
    g.p_range.value = (0.9, 1.0)
    assert all(p[i] >= 0.9 and not noisy[i] and split[i] == "train" for i in g.matches)
    assert 0 < len(g.matches) < 13


def test_gallery_paging_and_selection(pairs):
    images, caps, split, noisy, p = pairs
    g = PairGallery(images, caps, split=split, page_size=8)
    g.next_btn.click()
    assert g.page == 1 and g.page_pairs().tolist() == list(range(8, 16))
    g.go_to(99)
    assert g.page == 3 and g.page_pairs().tolist() == list(range(24, 30)) and g.next_btn.disabled
    g.show_pairs([3, 25, 7])
    assert g.matches.tolist() == [3, 7, 25] and g.page == 0
    g.split_filter.value = "train"
    assert g.matches.tolist() == [3, 7]
    g.clear_btn.click()
    assert len(g.matches) == 20


def test_gallery_from_dataset_scatters_training_scores():
    from mdw_kit.data.base import PairDataset
    ds = PairDataset(images=torch.zeros(4, 3, 8, 8, dtype=torch.uint8), image_ids=list("abcd"),
                     image_split=["train", "val", "train", "test"], captions=["w", "x", "y", "z"],
                     pair_image=torch.arange(4))
    g = PairGallery.from_dataset(ds, report=np.array([0.2, 0.7]))
    assert np.allclose(g.p_clean[[0, 2]], [0.2, 0.7]) and np.isnan(g.p_clean[[1, 3]]).all()
    g.p_range.value = (0.5, 1.0)
    assert g.matches.tolist() == [2]
    with pytest.raises(ValueError, match="3 scores"):
        PairGallery.from_dataset(ds, report=np.ones(3))


# ---------------------------------------------------------------- noise explorer
def test_threshold_slider_changes_precision_recall(noise_table):
    table, _ = noise_table
    ex = NoiseExplorer(table, threshold=0.5)
    at_half = dict(ex.metrics)
    expected = threshold_metrics(table[["p_clean_A", "p_clean_B"]].mean(axis=1).to_numpy(),
                                 table["true_clean"].to_numpy(), 0.5)
    assert at_half["precision"] == expected["precision"] and at_half["recall"] == expected["recall"]
    ex.threshold.value = 0.2
    low = dict(ex.metrics)
    assert low["flagged"] < at_half["flagged"]
    assert low["recall"] < at_half["recall"]                       # fewer noisy pairs caught
    assert low["precision"] >= at_half["precision"]                # but the ones flagged are surer
    assert low["tp"] + low["fn"] == int((~table["true_clean"]).sum())
    assert f"{low['recall']:.3f}" in ex.stats.value
    assert ex.metrics["true_noise_rate"] == round(float((~table["true_clean"]).mean()), 4)
    shapes = ex.pane.fig.layout.shapes
    assert len(shapes) == 3 and shapes[0].x0 == pytest.approx(0.2)


def test_noise_explorer_bin_click_fills_gallery(noise_table, pairs):
    table, losses = noise_table
    images = torch.zeros(200, 3, 8, 8, dtype=torch.uint8)
    g = PairGallery(images, [f"c{i}" for i in range(200)], injected_noise=~table["true_clean"].to_numpy())
    ex = NoiseExplorer(table, losses=losses, gallery=g,
                       mixtures={"A": {"weights": [0.6, 0.4], "means": [0.3, 0.7], "stds": [0.1, 0.1]}})
    sel = ex.select_bin("A", 2, "noisy (truth)")
    vals = table["p_clean_A"].to_numpy()[sel]
    assert len(sel) > 0 and ((vals >= 0.10) & (vals < 0.15)).all()
    assert (~table["true_clean"].to_numpy()[sel]).all()
    assert g.matches.tolist() == sel.tolist()
    # the loss view: normalised losses in [0, 1], a mixture drawn for track A only
    ex.quantity.value = ex.quantity.options[1]
    assert ex.panels() == ["A", "B"]
    names = [tr.name for tr in ex.pane.fig.data]
    assert names.count("clean component") == 1 and ex.pane.fig.layout.shapes == ()
    assert ex.values("A").min() == 0.0 and ex.values("A").max() == 1.0
    assert isinstance(ex.static_figure(), Figure)


def test_noise_explorer_without_truth_and_bad_input():
    ex = NoiseExplorer(pd.DataFrame({"p_clean_A": [0.9, 0.1, 0.3], "p_clean_B": [0.8, 0.2, 0.6]}))
    assert "precision" not in ex.metrics and ex.metrics["flagged"] == 2     # consensus 0.85, 0.15, 0.45
    ex.threshold.value = 0.3
    assert ex.metrics["flagged"] == 1 and ex.metrics["estimated_noise_rate"] == round(1 / 3, 4)
    with pytest.raises(ValueError, match="p_clean_B"):
        NoiseExplorer(pd.DataFrame({"p_clean_A": [0.5]}))


# ---------------------------------------------------------------- monitor
def test_monitor_accepts_core_callback_shapes():
    m = TrainingMonitor.for_dual_track(verbose=False)
    for epoch in (1, 2, 3):
        for track in ("A", "B"):
            m.callback(track, epoch, None, {"epoch": epoch, "loss": 3.0 / epoch, "val": {"R-sum": 10.0 * epoch}})
        m.callback(epoch, {"epoch": epoch, "p_clean": {"A": torch.rand(5)},
                           "detection": {"epoch": epoch, "A": {"auroc": 0.5 + epoch / 10}, "B": {"auroc": 0.6}}})
    assert m.series["A/loss"] == [(1.0, 3.0), (2.0, 1.5), (3.0, 1.0)]
    assert m.series["detection/A/auroc"][-1] == (3.0, 0.8)
    assert "p_clean/A" not in m.series                  # tensors of many values are not curves
    drawn = {m.pane.fig.data[k].name + "@" + m.locate(n)[0]: list(m.pane.fig.data[k].y) for n, k in m._traces.items()}
    assert drawn["A@loss"] == [3.0, 1.5, 1.0] and "B@auroc" in drawn and "A@R-sum" in drawn
    assert len(m.history()) == 9
    d = TrainingMonitor.for_distillation(verbose=False)
    d.callback(1, {"iteration": 1, "loss": 0.9, "eta_image": 0.01, "event": None})
    d.callback(2, {"iteration": 2, "loss": 0.7, "eta_image": 0.02, "eta_text": 0.03, "grad_images": 5.0})
    assert d.series["loss"] == [(1.0, 0.9), (2.0, 0.7)] and d.series["eta_image"][-1] == (2.0, 0.02)
    assert d.locate("eta_text") == ("eta", "text") and d.plotted() == ["eta_image", "eta_text", "loss"]
    assert isinstance(m.static_figure(), Figure)


def test_monitor_plain_fallback_prints(capsys):
    m = TrainingMonitor(panels=None, title="run", verbose=True)
    m.callback(5, {"matching_loss": 0.25})
    assert "[run] step 5: matching_loss 0.25" in capsys.readouterr().out
    assert m.panel_names == ["matching_loss"]


def test_monitor_runs_periodic_evaluation():
    calls = []
    m = TrainingMonitor.for_distillation(verbose=False, evaluate=lambda: calls.append(1) or {"val": {"R-sum": 42.0}},
                                         evaluate_every=2)
    for it in range(1, 6):
        m.callback(it, {"iteration": it, "loss": 1.0 / it})
    assert len(calls) == 2 and m.series["val/R-sum"] == [(2.0, 42.0), (4.0, 42.0)]
    assert "val/R-sum" in m.plotted() and m.locate("val/R-sum") == ("R-sum", "val")


# ---------------------------------------------------------------- heatmap
def test_matrix_orders():
    P = np.array([[0.2, 0.9, 0.0, 0.0], [0.9, 0.3, 0.0, 0.0], [0.0, 0.0, 0.8, 0.7], [0.0, 0.0, 0.7, 0.5]])
    assert matrix_order(P, "diagonal strength").tolist() == [2, 3, 1, 0]
    clustered = matrix_order(P, "clustered").tolist()
    assert sorted(clustered) == [0, 1, 2, 3]
    pos = {v: k for k, v in enumerate(clustered)}
    assert abs(pos[0] - pos[1]) == 1 and abs(pos[2] - pos[3]) == 1   # the two blocks stay together
    with pytest.raises(ValueError, match="unknown order"):
        matrix_order(P, "alphabetical")


def test_heatmap_click_selects_right_cell():
    M = 6
    P = torch.full((M, M), 0.05)
    P[torch.arange(M), torch.arange(M)] = torch.tensor([0.3, 0.9, 0.5, 0.7, 0.2, 0.6])
    P[1, 4] = 0.45
    images = torch.stack([torch.full((3, 8, 8), i / M) for i in range(M)])
    h = CorrespondenceHeatmap(P, images=images, text_labels=[f"text of pair {j}" for j in range(M)],
                              init_matrix=torch.eye(M), init_images=images)
    h.order.value = "diagonal strength"
    assert h.permutation.tolist() == [1, 3, 5, 2, 0, 4]
    # a click reports display coordinates; display row 0 / column 5 is image 1 / text 4
    click = type("Points", (), {"xs": [5], "ys": [0]})()
    h._on_point(None, click, None)
    assert h.selected == (1, 4) and h.value == pytest.approx(0.45)
    assert "P[1, 4] = 0.450" in h.detail.value and "text of pair 4" in h.detail.value
    assert h.img.value == png_bytes(images[1], min_side=128)
    marker = h.pane.fig.data[1]
    assert list(marker.x) == [5] and list(marker.y) == [0]
    h.order.value = "init order"                      # the marker follows the cell, not the position
    assert list(h.pane.fig.data[1].x) == [4] and list(h.pane.fig.data[1].y) == [1]
    h.view.value = "learned - initial"
    z = np.asarray(h.pane.fig.data[0].z)
    assert z[1, 1] == pytest.approx(0.9 - 1.0) and z[1, 4] == pytest.approx(0.45)
    with pytest.raises(IndexError):
        h.select(M, 0)


# ---------------------------------------------------------------- region viewer
def _region_inputs(M=3, size=16):
    hist = []
    for it in (0, 10, 20):
        maps = torch.zeros(M, size, size)
        maps[:, it // 10 * 4 + 1, 2] = 1.0          # the peak moves down 4 rows per saved iteration
        hist.append((it, maps))
    return torch.rand(M, 3, size, size), hist


def test_region_viewer_slider_changes_shown_iteration():
    images, hist = _region_inputs()
    v = RegionViewer(images, hist, init_images=images, labels=["a", "b", "c"],
                     boxes=[[{"label": "x", "box": [0, 0, 4, 4]}]] * 3)
    assert v.shown_iteration == 20 and "iteration 20" in v.caption.value and "y=9" in v.caption.value
    before = v.overlay_img.value
    v.iteration.value = 0
    assert v.shown_iteration == 0 and "iteration 0" in v.caption.value and "y=1" in v.caption.value
    assert v.overlay_img.value != before
    v.pair.value = 2
    assert "pair 2" in v.caption.value and torch.equal(v.current_map(), hist[0][1][2])
    plain = v.overlay_img.value
    v.opacity.value = 0.0
    assert v.overlay_img.value != plain
    assert v.overlay_img.value == png_bytes(viz.overlay_region(images[2], hist[0][1][2], 0.0), min_side=192)
    assert len(v.static_figure().axes) == 5          # start + 3 iterations + the colour bar
    v.iteration.value = 10                       # no saved image there: the final one, and the caption says so
    assert "final image" in v.caption.value and v.current_image() is not None


def test_region_viewer_starts_from_initial_images():
    final, hist = _region_inputs()
    init = torch.zeros_like(final)
    v = RegionViewer(final, hist, init_images=init)
    v.iteration.value = 0
    assert torch.equal(v.current_image(), init[0]) and "final image" not in v.caption.value
    v.iteration.value = 20
    assert torch.equal(v.current_image(), final[0])
    kept = {0: init, 10: final * 0.5, 20: final}
    w = RegionViewer(kept, hist)
    w.iteration.value = 10
    assert torch.equal(w.current_image(), final[0] * 0.5) and "final image" not in w.caption.value


def test_region_viewer_rejects_missing_maps():
    with pytest.raises(ValueError, match="no region maps"):
        RegionViewer(torch.rand(2, 3, 8, 8), [])


# ---------------------------------------------------------------- ablation panel
def test_ablation_panel_runs_and_collects():
    calls = []

    def run(method, budget, noise_rate, dual_track, learnable_corr, ceo, callback=None):
        calls.append((method, budget, noise_rate, dual_track, learnable_corr, ceo))
        callback(1, {"loss": 1.0})
        return {"R-sum": budget + 10 * ceo + 5 * dual_track, "detail": {"ignored": 1}}

    p = AblationPanel(run, methods=["mdw", "lors"], budgets=(10, 20))
    p.button.click()
    p.switches["ceo"].value = False
    p.budget.value = 20
    p.noise.value = 0.6
    row = p.run()
    assert calls[-1] == ("mdw", 20, 0.6, True, True, False)
    assert row["R-sum"] == 25 and list(p.results["R-sum"]) == [25, 25]
    assert "detail" not in p.results
    assert p.labels()[1].endswith("-ceo") and list(p.pane.fig.data[0].y) == [25, 25]
    assert "<table" in p.table.value and "done" in p.status.value
    assert "ceo" not in p.table.value and "seconds" in p.table.value


def test_ablation_panel_reports_failure():
    def broken(**cfg):
        raise RuntimeError("out of budget")
    p = AblationPanel(broken, methods=["mdw"], switches=())
    with pytest.raises(RuntimeError):
        p.run()
    assert "out of budget" in p.status.value and not p.button.disabled and len(p.results) == 0


# ---------------------------------------------------------------- viz helpers
def test_overlay_and_pointing_game():
    img = torch.zeros(3, 8, 8)
    region = torch.zeros(4, 4)
    region[0, 3] = 1.0                                     # top-right quarter
    out = viz.overlay_region(img, region, alpha=1.0)
    assert out.shape == (8, 8, 3) and out[0, 7].sum() > out[7, 0].sum()
    assert np.allclose(viz.overlay_region(img, region, alpha=0.0), 0.0)
    x, y = pointing.map_peak(region, 8)
    assert x >= 6 and y <= 1
    boxes = [[{"label": "red circle", "box": [5, 0, 8, 3]}, {"label": "blue square", "box": [0, 5, 3, 8]}]] * 2
    maps = torch.stack([region, region.flip(0, 1)])
    assert pointing.pointing_game_hits(maps, boxes, [["red circle"], ["red circle"]], image_size=8).tolist() == \
        [True, False]
    assert pointing.pointing_game(maps, boxes, [["blue square"], ["blue square"]], image_size=8) == 0.5
    assert pointing.named_labels("a small red circle left of a green star", boxes[0]) == ["red circle"]
    with pytest.raises(ValueError, match="must agree"):
        pointing.pointing_game(maps, boxes[:1], [["a"]])


def test_static_plots_build():
    assert len(viz.plot_pairs(torch.rand(3, 3, 8, 8), ["a", "b", "c"], flags=[True, False, True]).axes) == 3
    fig = viz.plot_noise_histograms({"A": np.random.rand(40)}, true_clean=np.arange(40) % 2 == 0, threshold=0.5)
    assert len(fig.axes) == 1
    assert len(viz.plot_correspondence(np.eye(3), init=np.eye(3)).axes) == 6  # 3 panels + 3 colour bars
    with pytest.raises(ValueError):
        viz.to_hwc(torch.zeros(4, 4))


def test_switches_resolve_to_registered_ablations():
    from mdw_kit.distill.methods import METHODS
    from widgets.ablation import resolve_method, switchable_methods
    assert "mdw" in switchable_methods(METHODS) and "random" not in switchable_methods(METHODS)
    on = {"dual_track": True, "learnable_corr": True, "ceo": True}
    assert resolve_method("mdw", on, METHODS) == "mdw"
    for switch, name in [("ceo", "mdw_no_ceo"), ("dual_track", "mdw_no_dual"), ("learnable_corr", "mdw_no_corr")]:
        assert resolve_method("mdw", dict(on, **{switch: False}), METHODS) == name
        assert METHODS[name].switches() != METHODS["mdw"].switches()
    with pytest.raises(ValueError, match="one switch off at a time"):
        resolve_method("mdw", dict(on, ceo=False, dual_track=False), METHODS)


def test_method_runner_runs_a_real_coreset_through_the_panel():
    from widgets.ablation import MethodRunner
    runner = MethodRunner(source="shapes", source_options={"num_images": 40}, encoder="hash",
                          eval_cfg={"epochs": 2, "eval_every": 1, "full_epochs": 1}, seeds=(0,))
    methods = runner.methods()
    assert "mdw" in methods and "random" in methods and "mdw_no_ceo" not in methods
    panel = AblationPanel(runner, budgets=(8,), noise_rate=0.5)
    panel.method.value = "random"
    assert all(w.disabled for w in panel.switches.values()) and "ceo" not in panel.config()
    row = panel.run()
    assert row["method"] == "random" and row["description"] and 0.0 <= row["R-sum"] <= 600.0 and row["noise_rate"] == 0.5
    assert runner.data(0.5).train.noise_known and runner._needed("random") == []
    panel.method.value = "mdw"
    assert not any(w.disabled for w in panel.switches.values()) and panel.config()["ceo"] is True
    assert runner._needed("mdw_no_dual") == ["naive"] and runner._needed("mdw") == ["dual_track"]


def test_distilled_pointing_game_scores_map_peaks_on_named_boxes():
    from mdw_kit.data import load_source
    from mdw_kit.distill.synthetic import DistilledSet

    ds = load_source("shapes", num_images=12, image_size=32, seed=0)
    train = ds.split("train")
    text = torch.randn(len(train.captions), 16, generator=torch.Generator().manual_seed(0))
    idx = list(range(4))
    syn = DistilledSet.from_pairs(train.pair_pixels(), text, idx, corr="identity")
    maps = torch.zeros(4, 32, 32)
    for i in range(4):  # images 0, 1 peak on the centre of their first object's box, 2, 3 on a corner
        box = train.boxes[int(train.pair_image[i])][0]["box"]
        x, y = ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2) if i < 2 else (0, 0)
        maps[i, int(y), int(x)] = 1.0
    syn.record_maps(0, maps)
    game = pointing.distilled_pointing_game(syn, train, text)
    assert game["named"] == 1.0 and game["num_images"] == 4  # clean captions name their own objects
    assert game["hits"][:2].all() and game["share"] <= 0.75 and game["share_named"] == game["share"]
    assert 0 < game["chance"] < 1


# ---------------------------------------------------------------- issue-18 defects
def test_monitor_legend_is_curve_names_and_status_skips_internals():
    m = TrainingMonitor.for_dual_track(verbose=False)
    for epoch in (1, 2, 3):
        for track in ("A", "B"):
            m.callback(track, epoch, None, {"epoch": epoch, "loss": 1.0, "lr": 0.03, "val": {"R-sum": 9.0, "TR@1": 1.0}})
        m.callback(epoch, {"epoch": epoch, "gmm": {"A": {"separation": 2.0, "n_iter": 30}},
                           "detection": {t: {"auroc": 0.7, "auroc_p_clean": 0.6, "precision": 0.5}
                                         for t in ("A", "B", "consensus")}})
    names = {tr.name for tr in m.pane.fig.data}
    assert names == {"A", "B", "consensus"}                     # no internal series names
    legend = [tr.name for tr in m.pane.fig.data if tr.showlegend]
    assert sorted(legend) == ["A", "B", "consensus"]            # one legend entry per curve
    assert len(m.pane.fig.data) == 7                            # loss x2, auroc x3, R-sum x2
    assert "separation" not in m.status.value and "p_clean" not in m.status.value
    assert "consensus auroc 0.7" in m.status.value
    assert m.pane.fig.layout.xaxis.dtick == 1 and m.pane.fig.layout.xaxis.tickformat == "d"
    assert "gmm/A/separation" in m.series                       # still recorded


def test_distillation_monitor_without_evaluate_has_no_rsum_panel():
    d = TrainingMonitor.for_distillation(verbose=False)
    assert d.panel_names == ["loss", "eta"]
    d.callback(1, {"loss": 2.1, "loss_image": 1.0, "loss_text": 1.1, "eta_image": 0.01, "eta_text": 0.02})
    assert [tr.name for tr in d.pane.fig.data] == ["total", "image", "text", "image", "text"]
    assert len(d.static_figure().axes) == 2
    e = TrainingMonitor.for_distillation(verbose=False, evaluate=lambda: {"val": {"R-sum": 1.0}}, evaluate_every=1)
    assert e.panel_names == ["loss", "eta", "R-sum"]


def test_show_gives_one_output_with_static_fallback(monkeypatch):
    """show() makes one output (widget + PNG fallback); snapshot() updates it in place."""
    import IPython.display as D
    calls = []

    class Handle:
        def update(self, obj, raw=False):
            calls.append(("update", obj))

    def fake_display(obj, raw=False, display_id=None):
        calls.append(("display", obj))
        return Handle()

    monkeypatch.setattr(D, "display", fake_display)
    m = TrainingMonitor.for_distillation(verbose=False)
    m.show(static=False)
    assert len(calls) == 1 and "image/png" not in calls[0][1]
    assert "application/vnd.jupyter.widget-view+json" in calls[0][1]
    m.callback(1, {"loss": 2.0})
    m.snapshot()
    assert len(calls) == 2 and calls[1][0] == "update" and "image/png" in calls[1][1]
    assert calls[1][1]["application/vnd.jupyter.widget-view+json"] == calls[0][1]["application/vnd.jupyter.widget-view+json"]


def test_noise_explorer_loss_view_rebuilds_panels(noise_table):
    table, losses = noise_table
    ex = NoiseExplorer(table, losses=losses)
    ex.quantity.value = ex.quantity.options[1]
    fig = ex.pane.fig
    assert [a.text for a in fig.layout.annotations] == ["track A", "track B"]
    assert "xaxis3" not in fig.layout.to_plotly_json()           # no third panel left over
    assert fig.layout.shapes == () and ex.threshold_row.layout.display == "none"
    assert {tr.xaxis for tr in fig.data} == {"x", "x2"}
    assert ex.pane.widget in ex.children
    ex.quantity.value = ex.quantity.options[0]
    assert len(ex.pane.fig.layout.shapes) == 3 and ex.threshold_row.layout.display is None
    assert [a.text for a in ex.pane.fig.layout.annotations] == ["track A", "track B", "track consensus"]


def test_gallery_hides_filters_without_data_and_marks_flagged(pairs):
    images, caps, split, noisy, p = pairs
    g = PairGallery(images[:4], caps[:4], page_size=4)
    assert g._filters == [] and len(g.children) == 2               # pager and grid only, nothing greyed out
    h = PairGallery(images[:4], caps[:4], injected_noise=[True, False, False, True], noise_label="started mismatched")
    assert h._filters == [h.noise_filter]
    h.noise_filter.value = "started mismatched"
    assert h.matches.tolist() == [0, 3]
    assert "started mismatched" in h.grid.children[0].children[1].value
    fig = h.static_figure()
    assert "started mismatched" in fig.axes[0].get_title()


def test_ablation_rows_name_the_method_that_ran():
    from widgets.ablation import result_row

    def run(method, budget, noise_rate, ceo=True, callback=None):
        return {"run": method if ceo else f"{method}_no_ceo", "description": "d", "R-sum": 1.0, "time_s": 2.0}

    p = AblationPanel(run, methods=["mdw"], switches=("ceo",), budgets=(10,))
    p.switches["ceo"].value = False
    row = p.run()
    assert row["method"] == "mdw_no_ceo" and "time_s" not in row and "run" not in row
    assert list(p.results.columns).count("seconds") == 1 and "R-sum sd" not in p.results
    assert result_row({"method": "x"}, {"R-sum": 2.0}, 1.0)["method"] == "x"
