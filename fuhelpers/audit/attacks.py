"""Per-example membership attacks from reference models, and how to judge them.

Every function here works on arrays of scores, so it can be checked against closed forms
(``tests/test_audit.py``). Notation: ``R`` reference models, ``N`` candidate samples;
``ref[r, i]`` is reference model ``r``'s score of candidate ``i`` and ``ref_in[r, i]`` says whether
candidate ``i`` was in ``r``'s training data.

LiRA (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022) models the
logit-scaled confidence of one sample under models that trained on it (IN) and models that did not
(OUT) as two Gaussians, and scores a target model's confidence by their likelihood ratio (their Eq. 4);
offline, only the OUT Gaussian is used (a one-sided test). RMIA (Zarifzadeh et al., "Low-Cost
High-Power Membership Inference Attacks", ICML 2024) compares the target's probability of a
candidate, relative to the reference models', with that of population samples (their Eq. 3-4).
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve

FPRS = (0.01, 0.001)  # the false-positive rates TPR is reported at


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence ``log p_y - log(1 - p_y)`` of the true label (LiRA's score).

    Computed as ``z_y - logsumexp_{j != y} z_j``, which stays finite when ``p_y`` rounds to 1.
    ``logits``: (N, C); ``labels``: (N,).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    true = z[np.arange(len(y)), y]
    others = z.copy()
    others[np.arange(len(y)), y] = -np.inf
    return true - np.logaddexp.reduce(others, axis=1)


def true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax probability of the true label (RMIA's ``Pr(x | theta)``), (N,)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    return np.exp(z[np.arange(len(y)), y] - np.logaddexp.reduce(z, axis=1))


def balanced_masks(num_refs: int, num_candidates: int, seed: int) -> np.ndarray:
    """(R, N) membership of candidates in reference models: each candidate IN exactly ``R // 2`` of them."""
    if num_refs < 4 or num_refs % 2:
        raise ValueError(f"LiRA needs an even number of at least 4 reference models, got {num_refs}")
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((num_refs, num_candidates)), axis=0)   # a random permutation per candidate
    return order < num_refs // 2


def _gaussians(ref: np.ndarray, ref_in: np.ndarray):
    """Per-candidate mean and standard deviation of the IN and OUT scores, (N,) each."""
    def moments(mask):
        n = mask.sum(0)
        if (n < 2).any():
            raise ValueError("every candidate needs at least two IN and two OUT reference models")
        mean = np.where(mask, ref, 0.0).sum(0) / n
        var = np.where(mask, (ref - mean) ** 2, 0.0).sum(0) / (n - 1)
        return mean, np.sqrt(var)
    return (*moments(ref_in), *moments(~ref_in))


def lira(target: np.ndarray, ref: np.ndarray, ref_in: np.ndarray, *, online: bool = True,
         fixed_variance: bool = False, min_std: float = 1e-6) -> np.ndarray:
    """LiRA's statistic for every candidate: higher means more likely a member.

    Parameters
    ----------
    target : (N,)
        The target model's logit-scaled confidences (:func:`logit_confidence`).
    ref, ref_in : (R, N)
        Reference models' confidences and who trained on what.
    online : bool
        Online: ``log N(target; mu_in, s_in) - log N(target; mu_out, s_out)``. Offline (no IN models needed):
        the one-sided standard score ``(target - mu_out) / s_out``, a monotone transform of the p-value
        Carlini et al. threshold.
    fixed_variance : bool
        One standard deviation for every candidate (and for IN and OUT): the root mean of the per-candidate
        variances, for few reference models. Carlini et al.'s code takes the standard deviation of all scores
        pooled; we pool within candidates so that differences between candidates' means do not inflate it.
    min_std : float
        Floor on every standard deviation.
    """
    mu_in, s_in, mu_out, s_out = _gaussians(np.asarray(ref, np.float64), np.asarray(ref_in, bool))
    if fixed_variance:
        pooled = np.sqrt(np.mean(np.concatenate([s_in, s_out]) ** 2))
        s_in = s_out = np.full_like(mu_in, pooled)
    s_in, s_out = np.maximum(s_in, min_std), np.maximum(s_out, min_std)
    target = np.asarray(target, np.float64)
    if not online:
        return (target - mu_out) / s_out
    return stats.norm.logpdf(target, mu_in, s_in) - stats.norm.logpdf(target, mu_out, s_out)


def rmia(target_p: np.ndarray, ref_p: np.ndarray, ref_in: np.ndarray, population_p: np.ndarray,
         population_ref_p: np.ndarray, *, a: float = 0.3, gamma: float = 2.0) -> np.ndarray:
    """RMIA's offline score: the share of population samples ``z`` that candidate ``x`` dominates.

    ``Pr(x)`` is estimated from the OUT reference models only, ``((1 + a) mean_OUT Pr(x | theta_r) + (1 - a)) / 2``
    (the paper's offline approximation; ``a`` is tuned, not learned); the score of ``x`` is the fraction of ``z``
    with ``[Pr(x | theta) / Pr(x)] / [Pr(z | theta) / Pr(z)] >= gamma``.

    Parameters
    ----------
    target_p : (N,)
        The target model's true-class probabilities of the candidates (:func:`true_class_probability`).
    ref_p, ref_in : (R, N)
        The reference models' probabilities of the candidates, and who trained on what.
    population_p : (M,)
        The target's probabilities of population samples (never trained on by any model).
    population_ref_p : (R, M)
        The reference models' probabilities of the population samples.
    """
    out = ~np.asarray(ref_in, bool)
    mean_out = np.where(out, ref_p, 0.0).sum(0) / out.sum(0)
    prior = lambda p_out: ((1 + a) * p_out + (1 - a)) / 2
    ratio_x = np.asarray(target_p, np.float64) / prior(mean_out)
    ratio_z = np.sort(np.asarray(population_p, np.float64) / prior(np.mean(population_ref_p, axis=0)))
    return np.searchsorted(ratio_z, ratio_x / gamma, side="right") / len(ratio_z)


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The highest TPR among thresholds whose FPR is at most ``fpr`` (members: ``labels == 1``)."""
    f, t, _ = roc_curve(labels, scores)
    return float(t[f <= fpr].max())


def roc_points(scores: np.ndarray, labels: np.ndarray, grid: np.ndarray | None = None) -> dict:
    """The ROC curve sampled at log-spaced FPRs (for plots on log axes): ``{"fpr": [...], "tpr": [...]}``."""
    grid = np.logspace(-3, 0, 31) if grid is None else grid
    return {"fpr": [float(x) for x in grid], "tpr": [tpr_at_fpr(scores, labels, x) for x in grid]}


def evaluate(scores: np.ndarray, labels: np.ndarray, *, fprs=FPRS, n_boot: int = 200, seed: int = 0) -> dict:
    """AUC and TPR at each FPR, each with a 95 % bootstrap interval (members and non-members resampled apart).

    Returns ``{"auc": (value, low, high), "tpr_1pct": ..., "tpr_0p1pct": ...}``. With ``n`` non-members an FPR
    below ``1 / n`` cannot be resolved: TPR at 0.1 % FPR needs at least 1000 of them.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    keys = ["auc", *(fpr_key(f) for f in fprs)]

    def measure(s, y):
        f, t, _ = roc_curve(y, s)
        return [np.trapezoid(t, f), *(t[f <= x].max() for x in fprs)]   # the AUC of roc_auc_score, ties included

    point = measure(scores, labels)
    rng = np.random.default_rng(seed)
    members, nonmembers = np.flatnonzero(labels), np.flatnonzero(~labels)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers))])
        boots.append(measure(scores[idx], labels[idx]))
    low, high = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
    return {k: (float(p), float(lo), float(hi)) for k, p, lo, hi in zip(keys, point, low, high)}


def fpr_key(fpr: float) -> str:
    """``0.01 -> "tpr_1pct"``, ``0.001 -> "tpr_0p1pct"``."""
    return f"tpr_{100 * fpr:g}pct".replace(".", "p")
