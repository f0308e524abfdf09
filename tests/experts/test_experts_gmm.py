"""The two-component mixture that turns per-pair losses into clean probabilities, and AUROC."""
import numpy as np
import pytest
import torch

from mdw_kit.experts.gmm import fit_clean_probability
from mdw_kit.experts.report import auroc, detection_metrics


def _bimodal(n_clean=600, n_noisy=400, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.gamma(4.0, 0.25, n_clean)           # low-loss mode, right-skewed
    noisy = rng.normal(4.5, 0.4, n_noisy)           # high-loss mode
    losses = np.concatenate([clean, noisy])
    truth = np.r_[np.ones(n_clean, bool), np.zeros(n_noisy, bool)]
    perm = rng.permutation(len(losses))
    return losses[perm], truth[perm]


def test_bimodal_losses_low_mode_is_clean():
    losses, truth = _bimodal()
    p, info = fit_clean_probability(torch.as_tensor(losses))
    assert p.dtype == torch.float64 and p.shape == (len(losses),)
    assert float(p[truth].mean()) > 0.95 and float(p[~truth].mean()) < 0.05
    assert auroc(1 - p.numpy(), ~truth) > 0.995
    assert info["raw_means"][0] < 2.0 < info["raw_means"][1]
    assert info["estimated_noise_rate"] == pytest.approx(0.4, abs=0.03)
    assert info["separation"] > 2 and not info["degenerate"]


def test_scale_and_shift_invariant_and_deterministic():
    losses, _ = _bimodal(seed=3)
    p1, _ = fit_clean_probability(losses)
    p2, _ = fit_clean_probability(losses * 7.0 + 3.0)
    p3, _ = fit_clean_probability(losses)
    assert torch.allclose(p1, p2, atol=1e-5)
    assert torch.equal(p1, p3)


def test_probability_is_non_increasing_in_the_loss():
    rng = np.random.default_rng(1)
    # a wide clean mode and a narrow noisy one: raw posteriors would call the far tail clean
    losses = np.concatenate([rng.gamma(2, 0.6, 700), rng.normal(5, 0.05, 300), [12.0, 14.0]])
    p, _ = fit_clean_probability(losses)
    order = np.argsort(losses)
    assert np.all(np.diff(p.numpy()[order]) <= 1e-7)
    assert float(p[-1]) < 0.01


@pytest.mark.parametrize("losses", [[2.0] * 50, [0.0] * 3, [5.0], []])
def test_degenerate_inputs_give_finite_constant_probabilities(losses):
    p, info = fit_clean_probability(losses)
    assert p.shape == (len(losses),)
    assert torch.isfinite(p).all()
    assert info["degenerate"] is True
    assert torch.all(p == 1.0)


def test_near_degenerate_input_has_no_nan():
    losses = np.full(200, 1.0)
    losses[7] = 1.0 + 1e-9  # a single distinct value
    p, _ = fit_clean_probability(losses)
    assert torch.isfinite(p).all() and float(p.min()) >= 0 and float(p.max()) <= 1


def test_non_finite_loss_is_an_error_naming_the_row():
    with pytest.raises(ValueError, match="row 2"):
        fit_clean_probability([0.1, 0.2, float("nan"), 0.3])


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, 500).astype(float)
    y = rng.random(500) < 0.3
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(auroc([0.1, 0.2], [True, True]))


def test_detection_metrics_of_a_known_flagging():
    p = np.array([0.9, 0.8, 0.3, 0.1, 0.2, 0.7])
    clean = np.array([True, True, True, False, False, False])
    m = detection_metrics(p, clean, threshold=0.5)
    # flagged: rows 2, 3, 4 -> two truly noisy of three; noisy rows 3, 4, 5 -> two of three found
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["true_residual_noise"] == pytest.approx(1 / 3)   # kept 0, 1, 5; row 5 is noisy
    assert m["true_noise_rate"] == pytest.approx(0.5)


def test_chance_gate_fires_only_below_the_chance_loss():
    rng = np.random.default_rng(0)
    hard_clean = np.concatenate([rng.normal(2.7, 0.4, 600), rng.normal(6.0, 0.8, 400)])   # both below log N
    noisy = np.concatenate([rng.normal(3.4, 0.4, 500), rng.normal(8.8, 0.6, 500)])        # one at chance
    chance = float(np.log(2779))
    p, info = fit_clean_probability(hard_clean, chance_loss=chance, chance_gate=0.85)
    assert info["noise_free"] and float(p.min()) == 1.0 and info["estimated_noise_rate"] == 0.0
    p0, _ = fit_clean_probability(hard_clean)
    assert float((p0 < 0.5).float().mean()) > 0.3  # without the check the hard clean pairs are called noisy
    p1, info1 = fit_clean_probability(noisy, chance_loss=chance, chance_gate=0.85)
    p2, info2 = fit_clean_probability(noisy)
    assert not info1["noise_free"] and torch.equal(p1, p2)
    assert info1["chance_loss"] == pytest.approx(chance) and not info2["noise_free"]
