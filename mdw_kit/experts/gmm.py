"""Clean probability of each pair from its loss: a two-component 1-D Gaussian mixture.

Mismatched pairs are hard to fit, so early in training their contrastive loss
is high; clean pairs sit in a low-loss mode. A two-component Gaussian mixture
on the min-max normalised losses, fitted by a small deterministic EM in
float64, gives every pair the posterior of the low-mean component: its clean
probability.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> losses = np.concatenate([rng.normal(1, 0.2, 500), rng.normal(4, 0.5, 500)])
    >>> p, info = fit_clean_probability(losses)
    >>> bool(p[:500].mean() > 0.95 and p[500:].mean() < 0.05)
    True
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

_LOG_2PI = float(np.log(2 * np.pi))


def _as_array(losses: torch.Tensor | np.ndarray | list[float]) -> np.ndarray:
    """Losses as a float64 vector; non-finite values are an error naming the first bad row."""
    x = losses.detach().cpu().double().numpy() if isinstance(losses, torch.Tensor) \
        else np.asarray(losses, dtype=np.float64)
    x = x.reshape(-1)
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise ValueError(f"losses: {len(bad)} non-finite value(s), first at row {int(bad[0])} "
                         f"({x[bad[0]]}); the scoring model probably diverged")
    return x


def _log_gauss(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``[N, 2]`` log densities of ``x`` under each component."""
    return -0.5 * (_LOG_2PI + np.log(var)[None] + (x[:, None] - mean[None]) ** 2 / var[None])


def _init_params(x: np.ndarray, reg_covar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic start: the lower and upper halves of the sorted losses."""
    xs = np.sort(x)
    lo, hi = xs[: len(xs) // 2], xs[len(xs) // 2:]
    mean = np.array([lo.mean(), hi.mean()])
    var = np.array([lo.var(), hi.var()]) + reg_covar
    return np.array([0.5, 0.5]), mean, var


def _em(x: np.ndarray, n_iter: int, tol: float, reg_covar: float) -> dict[str, Any]:
    """EM for a two-component 1-D Gaussian mixture; returns weights, means, variances, responsibilities."""
    weight, mean, var = _init_params(x, reg_covar)
    prev, converged, it = -np.inf, False, 0
    for it in range(1, n_iter + 1):
        logp = _log_gauss(x, mean, var) + np.log(np.maximum(weight, 1e-300))[None]
        norm = np.logaddexp(logp[:, 0], logp[:, 1])
        resp = np.exp(logp - norm[:, None])
        ll = float(norm.mean())
        nk = resp.sum(0) + 1e-12
        weight = nk / len(x)
        mean = (resp * x[:, None]).sum(0) / nk
        var = (resp * (x[:, None] - mean[None]) ** 2).sum(0) / nk + reg_covar
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
    logp = _log_gauss(x, mean, var) + np.log(np.maximum(weight, 1e-300))[None]
    resp = np.exp(logp - np.logaddexp(logp[:, 0], logp[:, 1])[:, None])
    return {"weight": weight, "mean": mean, "var": var, "resp": resp, "n_iter": it,
            "converged": converged, "log_likelihood": float(np.logaddexp(logp[:, 0], logp[:, 1]).mean())}


def _monotone(x: np.ndarray, p: np.ndarray, mu_clean: float) -> np.ndarray:
    """Make ``p`` non-increasing in ``x``.

    A wide component can win the far tail of a narrow one (a very high loss
    called clean, a very low one called noisy). Below the clean mean the
    probability is raised to its running maximum from the right, above it
    lowered to its running minimum from the left.
    """
    order = np.argsort(x, kind="stable")
    ps, xs = p[order].copy(), x[order]
    k = int(np.searchsorted(xs, mu_clean))
    if k < len(ps):
        ps[k:] = np.minimum.accumulate(ps[k:])
        if k > 0:
            ps[:k] = np.maximum(np.maximum.accumulate(ps[:k][::-1])[::-1], ps[k])
    elif k > 0:
        ps = np.maximum.accumulate(ps[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = ps
    return out


def fit_clean_probability(losses: torch.Tensor | np.ndarray | list[float], n_iter: int = 100,
                          tol: float = 1e-6, reg_covar: float = 5e-4, monotone: bool = True,
                          degenerate_value: float = 1.0, chance_loss: float | None = None,
                          chance_gate: float | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Clean probability of every pair: the posterior of the low-loss mixture component.

    Args:
        losses: ``[N]`` per-pair losses (any scale; min-max normalised inside).
        n_iter: most EM iterations.
        tol: stop when the mean log-likelihood changes less than this.
        reg_covar: added to both variances (on the normalised scale), as scikit-learn does.
        monotone: make the probability non-increasing in the loss (see :func:`_monotone`).
        degenerate_value: the probability given to every pair when the losses carry no
            information (fewer than 2 pairs, or all equal): 1.0 keeps everything.
        chance_loss: the loss of a model that cannot tell the pairs apart (``log N`` for a
            softmax over ``N`` candidates); with ``chance_gate``, the no-noise check below.
        chance_gate: a mismatched caption is fitted no better than chance, so the high-loss
            component is taken for noise only when its mean raw loss reaches
            ``chance_gate * chance_loss``. Below that both components are clean pairs (easy ones
            and hard ones): every pair gets probability 1 and ``info["noise_free"]`` is true.
            ``None`` (default) fits the mixture only.

    Returns:
        ``(prob_clean, info)``: a float64 tensor ``[N]`` in ``[0, 1]`` (float64 keeps the ranking of
        pairs deep in either tail, which float32 would round to exact 0 or 1) and a dict with the
        fitted ``means`` / ``stds`` / ``weights`` (normalised scale, clean first), ``raw_means``,
        ``separation`` (``|mu_noisy - mu_clean| / sqrt(var_clean + var_noisy)``, a label-free
        quality score), ``estimated_noise_rate`` (mean of ``1 - prob_clean``), ``n_iter``,
        ``converged``, ``degenerate`` and ``noise_free`` (the no-noise check fired).

    Example:
        >>> p, info = fit_clean_probability([0.1, 0.2, 0.15, 3.0, 3.2, 2.9])
        >>> [round(float(v)) for v in p]
        [1, 1, 1, 0, 0, 0]
        >>> fit_clean_probability([2.0, 2.0, 2.0])[1]["degenerate"]
        True

        Easy and hard pairs, all well below the chance loss ``log 1000``: nothing is called noisy.

        >>> p, info = fit_clean_probability([0.1, 0.2, 0.15, 3.0, 3.2, 2.9], chance_loss=np.log(1000),
        ...                                 chance_gate=0.85)
        >>> info["noise_free"], float(p.min())
        (True, 1.0)
    """
    x = _as_array(losses)
    lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
    if len(x) < 2 or hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return _degenerate(len(x), degenerate_value, lo)
    z = (x - lo) / (hi - lo)
    fit = _em(z, n_iter, tol, reg_covar)
    c, n = (0, 1) if fit["mean"][0] <= fit["mean"][1] else (1, 0)
    p = fit["resp"][:, c]
    if monotone:
        p = _monotone(z, p, float(fit["mean"][c]))
    p = np.clip(np.nan_to_num(p, nan=degenerate_value), 0.0, 1.0)
    mean, var, w = fit["mean"][[c, n]], fit["var"][[c, n]], fit["weight"][[c, n]]
    info = {"means": mean.tolist(), "stds": np.sqrt(var).tolist(), "weights": w.tolist(),
            "raw_means": (lo + mean * (hi - lo)).tolist(),
            "separation": float((mean[1] - mean[0]) / np.sqrt(var.sum())),
            "estimated_noise_rate": float(1.0 - p.mean()), "n_iter": fit["n_iter"],
            "converged": fit["converged"], "log_likelihood": fit["log_likelihood"], "degenerate": False,
            "noise_free": False}
    if chance_loss is not None:
        info["chance_loss"] = float(chance_loss)
        if chance_gate is not None and info["raw_means"][1] < chance_gate * chance_loss:
            p = np.ones_like(p)
            info.update(noise_free=True, estimated_noise_rate=0.0)
    return torch.from_numpy(p.astype(np.float64)), info


def _degenerate(n: int, value: float, level: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """The answer when the losses carry no information: every pair gets ``value``."""
    info = {"means": [0.0, 0.0], "stds": [0.0, 0.0], "weights": [1.0, 0.0], "raw_means": [level, level],
            "separation": 0.0, "estimated_noise_rate": float(1.0 - value) if n else 0.0, "n_iter": 0,
            "converged": True, "log_likelihood": 0.0, "degenerate": True, "noise_free": False}
    return torch.full((n,), float(value), dtype=torch.float64), info
