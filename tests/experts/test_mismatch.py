"""The ranked mismatch report: library table, CSV, HTML section and widget, on hand-made inputs."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mdw_kit.experts.mismatch import (best_other_captions, mismatch_report, mismatch_table, track_embeddings,
                                      write_mismatch_report)
from mdw_kit.experts.report import report_from_scores
from mdw_kit.report import HtmlReport
from widgets.mismatch import MismatchReport, filter_rows


@pytest.fixture
def case():
    """6 pairs; pairs 1 and 4 carry each other's caption; embeddings make each image match its true text."""
    true_text = torch.eye(6)
    given = true_text[[0, 4, 2, 3, 1, 5]]
    captions = ["red circle", "blue star", "green dot", "big square", "small cross", "pink ring"]
    given_caps = [captions[i] for i in [0, 4, 2, 3, 1, 5]]
    clean = np.array([True, False, True, True, False, True])
    rep = report_from_scores(np.where(clean, 0.9, 0.1), captions=given_caps, true_clean=clean,
                             noise_rank_a=[0.1, 0.9, 0.2, 0.3, 1.0, 0.0])
    return rep, true_text, given, given_caps


def test_table_ranks_by_noise_score_and_suggests_the_true_caption(case):
    rep, img, txt, caps = case
    t = mismatch_table(rep, img, txt)
    assert t["pair"].tolist()[:2] == [4, 1] and t["rank"].tolist() == list(range(1, 7))
    assert t["noise_score"].is_monotonic_decreasing
    top = t.set_index("pair")
    # pair 4's image is "small cross"'s; the caption that carries it now sits on pair 1
    assert top.loc[4, "caption"] == "blue star" and top.loc[4, "best_other_caption"] == "small cross"
    assert top.loc[4, "best_other_pair"] == 1 and top.loc[4, "best_similarity"] > top.loc[4, "given_similarity"]
    assert not top.loc[4, "true_clean"] and top.loc[0, "true_clean"]


def test_best_other_caption_skips_copies_of_the_own_caption():
    e = torch.eye(3)
    _, best, _ = best_other_captions(e, e, ["a", "a", "b"])
    assert best[0] == 2 and best[1] == 2          # pair 1 has the same text as pair 0: not "another" caption
    with pytest.raises(ValueError, match="must agree"):
        best_other_captions(e, e[:2], ["a", "b", "c"])


def test_report_writes_csv_and_scores_with_track_states(case, tmp_path):
    from mdw_kit.models.retrieval import ImageTower, RetrievalModel
    rep, _, txt, _ = case
    fn = lambda: RetrievalModel(ImageTower(nn.Identity(), nn.Conv2d(3, 4, 3, padding=1), 4), 6, 8)
    states = {"A": fn().state_dict(), "B": fn().state_dict()}
    img, t_emb = track_embeddings(states, fn, torch.rand(6, 3, 8, 8), txt)
    assert img.shape == (6, 16) and torch.allclose(img.norm(dim=1), torch.ones(6))
    t = mismatch_report(rep, states, fn, torch.rand(6, 3, 8, 8), txt, out_dir=tmp_path)
    back = pd.read_csv(tmp_path / "mismatch_report.csv")
    assert list(back["pair"]) == list(t["pair"]) and "best_other_caption" in back
    with pytest.raises(ValueError, match="model_fn"):
        mismatch_report(rep, states)
    with pytest.raises(ValueError, match="6 pairs"):
        mismatch_table(rep, captions=["x"])


def test_html_report_has_the_ranked_table(case, tmp_path):
    rep, img, txt, _ = case
    r = HtmlReport("x")
    r.add_mismatch_table(mismatch_table(rep, img, txt), images=torch.rand(6, 3, 8, 8), top=3)
    page = r.save(tmp_path / "r.html").read_text()
    assert page.count("<tr>") == 4 and "best-matching other caption" in page and "small cross" in page
    assert page.count("data:image/png") == 3


def test_widget_filters_pages_and_exports(case, tmp_path):
    rep, img, txt, _ = case
    w = MismatchReport(mismatch_table(rep, img, txt), images=torch.rand(6, 3, 8, 8), page_size=2, csv_dir=tmp_path)
    assert w.page_label.value == "page 1 / 3 (6 of 6 pairs)" and w.rows_html.value.count("<img") == 2
    w.next_btn.click()
    assert w.page == 1 and w.page_rows()["rank"].tolist() == [3, 4]
    w.truth_filter.value = "truly mismatched"
    assert w.page == 0 and w.matches["pair"].tolist() == [4, 1]
    w.search.value = "CROSS"
    assert w.matches["pair"].tolist() == [4, 1]   # "small cross" is pair 1's caption and pair 4's suggestion
    w.search.value = "blue"
    path = w.export()
    assert path == tmp_path / "mismatch_report.csv" and len(pd.read_csv(path)) == len(w.matches) == 2
    assert "2 rows" in w.export_label.value
    w.search.value = "nothing like this"
    assert "no pairs match" in w.rows_html.value and w.n_pages == 1
    assert "text/html" in w._bundle(True) and "image/png" not in w._bundle(True)
    with pytest.raises(ValueError, match="true_clean"):
        filter_rows(pd.DataFrame({"is_noisy": [True]}), truth="truly clean")
    with pytest.raises(ValueError, match="noise_score"):
        MismatchReport(pd.DataFrame({"pair": [0]}))


def test_noise_report_command_writes_the_ranked_csv(tmp_path):
    from mdw_kit.cli import main
    out = tmp_path / "noise"
    assert main(["noise-report", "--source", "shapes", "--option", "num_images=60", "--encoder", "hash",
                 "--noise", "0.4", "--expert-epochs", "2", "--out", str(out)]) == 0
    t = pd.read_csv(out / "mismatch_report.csv")
    assert len(t) == len(pd.read_csv(out / "noise_report.csv")) and t["noise_score"].is_monotonic_decreasing
    assert {"caption", "best_other_caption", "best_similarity", "true_clean"} <= set(t.columns)
