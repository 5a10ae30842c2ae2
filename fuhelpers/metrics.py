"""Evaluation metrics for federated unlearning.

Everything here is a pure function of a model and data (or of plain numbers):
nothing is trained except the small attack classifiers of the membership
inference attacks, and those are seeded.

Contents
--------
- Model outputs: :func:`predict`, :func:`accuracy`, :func:`per_sample_loss`,
  :func:`attack_features`; opt-in faster variants for progress monitoring:
  :func:`fast_predict`, :func:`fast_accuracy`.
- Membership inference (MIA): :func:`mia_from_scores`, :func:`mia_loss_attack`
  (logistic regression on the loss, balanced and cross-validated), and
  :func:`mia_efficacy` / :func:`mia_efficacy_from_features` (Jia et al. 2023).
- Scores of the TIS paper (Balordi et al.): :func:`nta`, :func:`nfs`, :func:`rtr`,
  :func:`attack_success_rate`, :func:`backdoor_accuracy`.
- FOUL's time to forget :func:`time_to_forget`, NoT's average gap :func:`avg_gap`.
- Aggregation over seeds: :func:`summarize`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from torch.utils.data import DataLoader, Dataset

from .device import resolve_device

__all__ = [
    "predict",
    "accuracy",
    "fast_predict",
    "fast_accuracy",
    "per_sample_loss",
    "attack_features",
    "MIAResult",
    "mia_from_scores",
    "mia_loss_attack",
    "mia_efficacy_from_features",
    "mia_efficacy",
    "nta",
    "nfs",
    "rtr",
    "attack_success_rate",
    "backdoor_accuracy",
    "time_to_forget",
    "avg_gap",
    "summarize",
    "class_matched",
    "evaluate",
]

SVC_FEATURES = ("confidence", "entropy", "modified_entropy")
"""Default features of :func:`mia_efficacy`, in this column order."""

_LOG_LOSS_FLOOR = 1e-12  # memorised samples reach losses of 1e-8 and below
_ZERO_DENOMINATOR = 1e-12


# --------------------------------------------------------------------------- #
# Model outputs
# --------------------------------------------------------------------------- #
def _batches(data: Dataset, batch_size: int):
    """Yield (x, y) batches in dataset order; slices ``.x``/``.y`` directly when present."""
    if hasattr(data, "x") and hasattr(data, "y"):
        for start in range(0, len(data), batch_size):
            yield data.x[start : start + batch_size], data.y[start : start + batch_size]
    else:
        yield from DataLoader(data, batch_size=batch_size, shuffle=False)


def _predict_with_labels(model, data, batch_size=512, device=None):
    """Logits and labels of ``data`` (both on CPU) in one pass; see :func:`predict`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(data) == 0:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    device = resolve_device(device, model)
    # Remember every submodule's mode: a model may be partly frozen in eval mode.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    logits, labels = [], []
    try:
        with torch.no_grad():
            for x, y in _batches(data, batch_size):
                logits.append(model(x.to(device)).cpu())
                labels.append(torch.as_tensor(y).cpu())
    finally:
        for module, was_training in modes:
            module.training = was_training
    return torch.cat(logits), torch.cat(labels).long()


def predict(
    model: torch.nn.Module, data: Dataset, batch_size: int = 512, device=None
) -> torch.Tensor:
    """Logits of ``model`` on every sample of ``data``, in dataset order.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier mapping a batch of inputs to logits of shape (B, K).
        It runs in eval mode under ``torch.no_grad()``; the train/eval mode of
        every submodule is restored afterwards.
    data : torch.utils.data.Dataset
        Any dataset yielding ``(x, y)``. When it has ``.x`` and ``.y`` tensors
        (like ``fuhelpers.data.ArrayDataset``) they are sliced directly,
        otherwise a non-shuffling ``DataLoader`` is used.
    batch_size : int, default 512
    device : torch.device or str, optional
        Where to run the model; by default the device of its first parameter
        (CPU for a model without parameters).

    Returns
    -------
    torch.Tensor
        Logits of shape (N, K) on the CPU; shape (0, 0) for an empty dataset.
    """
    logits, _ = _predict_with_labels(model, data, batch_size, device)
    return logits


def accuracy(model: torch.nn.Module, data: Dataset, batch_size: int = 512, device=None) -> float:
    """Share of samples whose arg-max logit is the label.

    Returns
    -------
    float
        Accuracy in [0, 1]; ``nan`` for an empty dataset (an accuracy over no
        samples is undefined, and a 0 would look like a real result).
    """
    logits, labels = _predict_with_labels(model, data, batch_size, device)
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(dim=1) == labels).double().mean().item()


def _fast_predict_with_labels(model, data, batch_size, device, precision):
    """Like :func:`_predict_with_labels`, under ``inference_mode`` with ``precision``; one host sync at the end."""
    from .precision import Precision

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(data) == 0:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    device = resolve_device(device, model)
    prec = Precision(precision, device)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    logits, labels = [], []
    try:
        with prec.memory_format(model):  # entered outside inference_mode: parameters stay normal tensors
            with torch.inference_mode():
                for x, y in _batches(data, batch_size):
                    with prec.autocast():
                        out = model(prec.inputs(x.to(device, non_blocking=True)))
                    logits.append(out.float())
                    labels.append(torch.as_tensor(y))
                logits = torch.cat(logits).cpu()
    finally:
        for module, was_training in modes:
            module.training = was_training
    return logits, torch.cat(labels).cpu().long()


def fast_predict(model: torch.nn.Module, data: Dataset, *, precision: str = "fp32", batch_size: int = 4096,
                 device=None) -> torch.Tensor:
    """Logits like :func:`predict`, faster, for monitoring training (the experiments' per-round curves).

    Runs under ``torch.inference_mode()`` with a larger default batch and, with ``precision="bf16"``,
    the autocast and channels-last format of :class:`fuhelpers.precision.Precision`; logits are
    gathered on the device and copied to the host once. The numbers are *not* those of
    :func:`predict`: another batch size lets the kernels round differently (last bits in fp32,
    about 1e-2 relative in bf16), so an arg-max can flip on a near-tie. The measures of committed
    results use :func:`predict` / :func:`accuracy`; only their curves use this. The model's train/eval
    modes and memory format are restored afterwards.

    Returns
    -------
    torch.Tensor
        fp32 logits of shape (N, K) on the CPU; shape (0, 0) for an empty dataset.
    """
    logits, _ = _fast_predict_with_labels(model, data, batch_size, device, precision)
    return logits


def fast_accuracy(model: torch.nn.Module, data: Dataset, *, precision: str = "fp32", batch_size: int = 4096,
                  device=None) -> float:
    """:func:`accuracy` computed with :func:`fast_predict` (opt-in; may differ on near-ties)."""
    logits, labels = _fast_predict_with_labels(model, data, batch_size, device, precision)
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(dim=1) == labels).double().mean().item()


def per_sample_loss(
    model: torch.nn.Module, data: Dataset, batch_size: int = 512, device=None
) -> np.ndarray:
    """Cross-entropy of every sample, ``-log softmax(f(x))_y`` (no reduction).

    Returns
    -------
    numpy.ndarray
        Shape (N,), float64; empty for an empty dataset.
    """
    logits, labels = _predict_with_labels(model, data, batch_size, device)
    if len(labels) == 0:
        return np.empty(0)
    losses = F.cross_entropy(logits.double(), labels, reduction="none")
    return losses.numpy()


def attack_features(
    model: torch.nn.Module, data: Dataset, batch_size: int = 512, device=None
) -> dict[str, np.ndarray]:
    """Per-sample output statistics used by membership inference attacks.

    With p = softmax(f(x)) and y the label:

    - ``loss``: -log p_y (cross-entropy);
    - ``confidence``: p_y;
    - ``entropy``: -sum_i p_i log p_i;
    - ``modified_entropy`` (Mentr, Song & Mittal 2021):
      -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).
      Unlike the entropy it uses the label: it is 0 only for a confident
      correct prediction and grows for a confident wrong one.

    Returns
    -------
    dict of str to numpy.ndarray
        Four float64 arrays of shape (N,).
    """
    logits, labels = _predict_with_labels(model, data, batch_size, device)
    if len(labels) == 0:
        return {name: np.empty(0) for name in ("loss", *SVC_FEATURES)}
    log_p = F.log_softmax(logits.double(), dim=1)
    p = log_p.exp()
    # log(1 - p) = log(-expm1(log p)): exact also where p is close to 1.
    log_one_minus_p = torch.log(torch.clamp(-torch.expm1(log_p), min=1e-300))
    is_label = F.one_hot(labels, num_classes=logits.shape[1]).bool()
    log_p_y = log_p[is_label]
    p_y = p[is_label]
    entropy = -torch.special.xlogy(p, p).sum(dim=1)  # -sum p_i log p_i, with 0 log 0 = 0
    mentr = -(1 - p_y) * log_p_y - torch.where(is_label, 0.0, p * log_one_minus_p).sum(dim=1)
    return {
        "loss": (-log_p_y).numpy(),
        "confidence": p_y.numpy(),
        "entropy": entropy.numpy(),
        "modified_entropy": mentr.numpy(),
    }


# --------------------------------------------------------------------------- #
# Membership inference
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class MIAResult:
    """Outcome of a balanced, cross-validated membership inference attack.

    Attributes
    ----------
    accuracy : float
        Accuracy of the out-of-fold member/non-member predictions; 0.5 is chance
        (the classes are balanced, so predicting the majority gives 0.5 too).
    auc : float
        ROC AUC of the out-of-fold membership scores.
    tpr_at_1pct_fpr, tpr_at_01pct_fpr : float
        True positive rate at a false positive rate of 1 % and 0.1 %; ``nan``
        when fewer than 100 resp. 1000 non-members were attacked.
    n_members, n_nonmembers : int
        Samples of each group actually used (after balancing).
    """

    accuracy: float
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    n_members: int
    n_nonmembers: int

    def as_dict(self) -> dict:
        """The fields as a plain dict (for tables and JSON)."""
        return asdict(self)


def _as_feature_matrix(scores, name: str) -> np.ndarray:
    array = np.asarray(scores, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be 1-D (one score) or 2-D (samples x features), got {array.ndim}-D")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values")
    return array


def _balanced_subsample(members, nonmembers, rng: np.random.Generator, cap: int | None = None):
    """Subsample both groups, without replacement, to the smaller group's size (at most ``cap``)."""
    n = min(len(members), len(nonmembers))
    if cap is not None:
        n = min(n, cap)
    members = members[np.sort(rng.choice(len(members), n, replace=False))]
    nonmembers = nonmembers[np.sort(rng.choice(len(nonmembers), n, replace=False))]
    return members, nonmembers


def _tpr_at_fpr(labels, scores, target_fpr: float, n_nonmembers: int) -> float:
    """Highest TPR whose FPR does not exceed ``target_fpr`` (nan if too few non-members)."""
    if n_nonmembers < round(1 / target_fpr):
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= target_fpr].max())


def mia_from_scores(
    member_scores,
    nonmember_scores,
    *,
    seed: int = 0,
    n_splits: int = 5,
    balance: bool = True,
    fit_members=None,
    fit_nonmembers=None,
) -> MIAResult:
    """Membership inference from per-sample scores, without fitting on scored samples.

    The attack is a logistic regression (on standardised features) that
    separates members (label 1) from non-members (label 0):

    1. if ``balance``, the larger group is subsampled (seeded) to the size of
       the smaller, so that chance level is 0.5 whatever the group sizes;
    2. stratified K-fold: for each fold the attack is fitted on the other K-1
       folds and scores the held-out fold;
    3. the out-of-fold scores P(member | x) of all folds are pooled, and
       accuracy (threshold 0.5), ROC AUC and TPR at low FPR are computed on them.

    Every sample is thus scored by an attack that never saw it. Averaged over
    samples this is unbiased, but *for one fixed sample* with no signal the
    folds are anti-correlated (what the held-out fold lacks, the others have),
    and the estimate sits below 0.5 (0.46-0.48 seen with 500-2000 per group).

    With ``fit_members`` and ``fit_nonmembers`` the attack is instead fitted
    once on that separate, disjoint calibration set (e.g. retain samples vs one
    half of the test set) and scores all of the evaluated samples. The
    evaluated samples then play no part in fitting, so there is no such
    anti-correlation: with no signal the accuracy is 0.5 up to sampling noise.
    This is the mode :func:`evaluate` uses.

    Parameters
    ----------
    member_scores, nonmember_scores : array-like
        Shape (n,) for one score per sample, or (n, d) for d features.
    seed : int, default 0
        Seeds the subsampling and the fold assignment.
    n_splits : int, default 5
        Number of folds K; each group needs at least K samples.
    balance : bool, default True
        ``False`` keeps every sample; the accuracy is then biased towards the
        share of the larger group (kept for comparison with unbalanced reports).
    fit_members, fit_nonmembers : array-like, optional
        A disjoint calibration set to fit the attack on (both or neither);
        balanced like the evaluated groups when ``balance``.

    Returns
    -------
    MIAResult
    """
    members = _as_feature_matrix(member_scores, "member_scores")
    nonmembers = _as_feature_matrix(nonmember_scores, "nonmember_scores")
    if members.shape[1] != nonmembers.shape[1]:
        raise ValueError(f"members have {members.shape[1]} features, non-members {nonmembers.shape[1]}")
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    rng = np.random.default_rng(seed)
    if balance:
        members, nonmembers = _balanced_subsample(members, nonmembers, rng)
    if (fit_members is None) != (fit_nonmembers is None):
        raise ValueError("give both fit_members and fit_nonmembers, or neither")
    needed = 1 if fit_members is not None else n_splits  # folds need n_splits per group; fit-once needs one
    if min(len(members), len(nonmembers)) < needed:
        raise ValueError(
            f"each group needs at least {needed} sample(s) (n_splits={n_splits} when cross-validating), "
            f"got {len(members)} members and {len(nonmembers)} non-members"
        )
    features = np.concatenate([members, nonmembers])
    labels = np.concatenate([np.ones(len(members), int), np.zeros(len(nonmembers), int)])
    if fit_members is not None:
        out_of_fold = _fit_once_and_score(fit_members, fit_nonmembers, features, balance, rng)
        return _mia_result(labels, out_of_fold, len(members), len(nonmembers))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=int(rng.integers(2**31)))
    out_of_fold = np.empty(len(labels))
    for fit_idx, score_idx in folds.split(features, labels):
        attack = make_pipeline(StandardScaler(), LogisticRegression())
        attack.fit(features[fit_idx], labels[fit_idx])
        out_of_fold[score_idx] = attack.predict_proba(features[score_idx])[:, 1]
    return _mia_result(labels, out_of_fold, len(members), len(nonmembers))


def _fit_once_and_score(fit_members, fit_nonmembers, features, balance: bool, rng) -> np.ndarray:
    """Fit the attack on a calibration set only; return P(member) for ``features``."""
    fit_m = _as_feature_matrix(fit_members, "fit_members")
    fit_n = _as_feature_matrix(fit_nonmembers, "fit_nonmembers")
    if balance:
        fit_m, fit_n = _balanced_subsample(fit_m, fit_n, rng)
    if min(len(fit_m), len(fit_n)) == 0:
        raise ValueError(f"the calibration set needs members and non-members, got {len(fit_m)} and {len(fit_n)}")
    attack = make_pipeline(StandardScaler(), LogisticRegression())
    attack.fit(np.concatenate([fit_m, fit_n]), np.r_[np.ones(len(fit_m), int), np.zeros(len(fit_n), int)])
    return attack.predict_proba(features)[:, 1]


def _mia_result(labels: np.ndarray, scores: np.ndarray, n_members: int, n_nonmembers: int) -> MIAResult:
    return MIAResult(
        accuracy=float(np.mean((scores > 0.5) == labels)),
        auc=float(roc_auc_score(labels, scores)),
        tpr_at_1pct_fpr=_tpr_at_fpr(labels, scores, 0.01, n_nonmembers),
        tpr_at_01pct_fpr=_tpr_at_fpr(labels, scores, 0.001, n_nonmembers),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
    )


def mia_loss_attack(
    model: torch.nn.Module,
    members: Dataset,
    nonmembers: Dataset,
    *,
    seed: int = 0,
    n_splits: int = 5,
    balance: bool = True,
    fit_members: Dataset | None = None,
    fit_nonmembers: Dataset | None = None,
    batch_size: int = 512,
    device=None,
) -> MIAResult:
    """Loss-based membership inference, balanced and cross-validated.

    The attack of the NeurIPS 2023 unlearning challenge starting kit
    (logistic regression on the per-sample loss, forget set vs test set), with
    both groups balanced and every sample scored out of fold; see
    :func:`mia_from_scores`. The single feature is ``log(max(loss, 1e-12))``:
    the logarithm spreads the losses of memorised samples, which all crowd
    near 0, and leaves the attack's ranking unchanged.

    Parameters
    ----------
    model : torch.nn.Module
    members : Dataset
        Samples whose membership is tested, e.g. the forget set.
    nonmembers : Dataset
        Samples the model never trained on, e.g. the test set.
    seed, n_splits, balance
        See :func:`mia_from_scores`.
    fit_members, fit_nonmembers : Dataset, optional
        Disjoint calibration data to fit the attack on instead of
        cross-validating (see :func:`mia_from_scores`).
    batch_size, device
        See :func:`predict`.

    Returns
    -------
    MIAResult
        For a model that never saw ``members`` the accuracy and AUC are near 0.5
        (the Retrain target); memorised members push them towards 1.
    """
    def log_loss(data):
        return None if data is None else np.log(np.maximum(per_sample_loss(model, data, batch_size, device),
                                                           _LOG_LOSS_FLOOR))

    return mia_from_scores(log_loss(members), log_loss(nonmembers), seed=seed, n_splits=n_splits,
                           balance=balance, fit_members=log_loss(fit_members), fit_nonmembers=log_loss(fit_nonmembers))


def mia_efficacy_from_features(
    member_features, nonmember_features, target_features, *, seed: int = 0, max_samples: int | None = 2000
) -> float:
    """Share of target samples that an SVC attack labels non-member.

    The SVC (RBF kernel, C=3, gamma="auto" as in Jia et al.'s code) is fitted
    on standardised features of members (label 1) vs non-members (label 0),
    both subsampled (seeded) to the same size ``n = min(n_members,
    n_nonmembers, max_samples)``.

    Parameters
    ----------
    member_features, nonmember_features, target_features : array-like
        Shape (n,) or (n, d), the same d for all three.
    seed : int, default 0
    max_samples : int or None, default 2000
        Cap on the samples per class used to fit (the SVC fit is O(n^2) in
        memory and worse in time); ``None`` uses all.

    Returns
    -------
    float
        In [0, 1]; ``nan`` when there are no target samples.
    """
    members = _as_feature_matrix(member_features, "member_features")
    nonmembers = _as_feature_matrix(nonmember_features, "nonmember_features")
    targets = _as_feature_matrix(target_features, "target_features")
    if not members.shape[1] == nonmembers.shape[1] == targets.shape[1]:
        raise ValueError("member, non-member and target features need the same number of columns")
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("the attack needs at least one member and one non-member to fit")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    if len(targets) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    members, nonmembers = _balanced_subsample(members, nonmembers, rng, cap=max_samples)
    features = np.concatenate([members, nonmembers])
    labels = np.concatenate([np.ones(len(members), int), np.zeros(len(nonmembers), int)])
    attack = make_pipeline(StandardScaler(), SVC(C=3, gamma="auto", kernel="rbf"))
    attack.fit(features, labels)
    return float(np.mean(attack.predict(targets) == 0))


def mia_efficacy(
    model: torch.nn.Module,
    retain: Dataset,
    test: Dataset,
    forget: Dataset,
    *,
    seed: int = 0,
    max_samples: int | None = 2000,
    features: Sequence[str] = SVC_FEATURES,
    batch_size: int = 512,
    device=None,
) -> float:
    """MIA efficacy of Jia et al. 2023 ("Model sparsity can simplify machine unlearning").

    An SVC learns to tell the retain set (members, label 1) from the test set
    (non-members, label 0) using the model's outputs, and is then applied to
    the forget set. MIA efficacy = share of forget samples predicted as
    non-members: higher means more forgetting; Retrain's value is the target.

    Features (see :func:`attack_features`), by default all three of
    ``confidence`` (p_y), ``entropy`` and ``modified_entropy``, standardised,
    in one SVC. Jia et al.'s code fits one SVC per feature and reports the one
    on confidence: ``features=("confidence",)`` reproduces that choice.
    Their code does not standardise; here standardisation keeps the RBF
    kernel's width meaningful for features of different scales.

    Parameters
    ----------
    model : torch.nn.Module
    retain, test, forget : Dataset
    seed : int, default 0
    max_samples : int or None, default 2000
        See :func:`mia_efficacy_from_features`.
    features : sequence of str
        Any of ``"loss"``, ``"confidence"``, ``"entropy"``, ``"modified_entropy"``.
    batch_size, device
        See :func:`predict`.

    Returns
    -------
    float
        In [0, 1]; ``nan`` for an empty forget set.
    """
    known = ("loss", *SVC_FEATURES)
    unknown = [name for name in features if name not in known]
    if not features or unknown:
        raise ValueError(f"features must be a non-empty subset of {known}, got {tuple(features)}")

    def stacked(data):
        values = attack_features(model, data, batch_size, device)
        return np.stack([values[name] for name in features], axis=1)

    return mia_efficacy_from_features(
        stacked(retain), stacked(test), stacked(forget), seed=seed, max_samples=max_samples
    )


# --------------------------------------------------------------------------- #
# Normalised scores of the TIS paper (Balordi et al.)
# --------------------------------------------------------------------------- #
def nta(test_acc_unlearned: float, test_acc_retrain: float) -> float:
    """Normalised Test Accuracy, TIS paper Eq. 32.

    NTA = Accuracy(theta_u, D_test) / Accuracy(theta_r, D_test).
    1 is the Retrain level; values above 1 are possible.

    Returns
    -------
    float
        ``nan`` when the Retrain accuracy is (numerically) 0.
    """
    if abs(test_acc_retrain) < _ZERO_DENOMINATOR:
        return float("nan")
    return test_acc_unlearned / test_acc_retrain  # Eq. 32


def nfs(value_original: float, value_unlearned: float, value_retrain: float) -> float:
    """Normalised Forgetting Score, TIS paper Eqs. 33-34.

    NFS = (v(theta_i) - v(theta_u)) / (v(theta_i) - v(theta_r)), with theta_i
    the original model, theta_u the unlearned one and theta_r Retrain.

    - NFS_TargetAcc (Eq. 33): v = accuracy on the target (forgotten) data.
    - NFS_MIA (Eq. 34): v = MIA accuracy of members = target data vs the test set.
      The benchmark passes the attack's AUC instead (see :func:`evaluate`: the
      accuracy depends on a threshold fitted on each model's retain losses).

    1 means the unlearned model is where Retrain is; 0 that it has not moved
    from the original; it can leave [0, 1] (overshooting Retrain gives > 1).

    Returns
    -------
    float
        ``nan`` (silently, without a numpy warning) when
        ``|v(theta_i) - v(theta_r)| < 1e-12``: Retrain did not change the value,
        so there is no gap to close and the score is undefined. This happens,
        for example, with NFS_MIA in settings where the original model was
        not vulnerable in the first place.
    """
    gap = value_original - value_retrain
    if abs(gap) < _ZERO_DENOMINATOR:
        return float("nan")
    return (value_original - value_unlearned) / gap  # Eqs. 33-34


def rtr(unlearning_seconds: float, retrain_seconds: float) -> float:
    """Recovery Time Ratio, TIS paper Sec. 6.2.1: unlearning time / retraining time.

    Lower is better; 1 means unlearning costs as much as retraining.
    """
    if retrain_seconds <= 0:
        raise ValueError(f"retrain_seconds must be > 0, got {retrain_seconds}")
    if unlearning_seconds < 0:
        raise ValueError(f"unlearning_seconds must be >= 0, got {unlearning_seconds}")
    return unlearning_seconds / retrain_seconds  # RTR = t_unlearn / t_retrain


def attack_success_rate(model: torch.nn.Module, triggered_test_with_target_labels: Dataset, **kwargs) -> float:
    """Backdoor Attack Success Rate (ASR), TIS paper Sec. 6.2.4.

    Accuracy on test images carrying the trigger, relabelled to the attacker's
    target class. The data helper excludes test images whose true label is the
    target (they would count as successes without any backdoor). High for the
    poisoned model; after unlearning it should fall towards chance (1/K).
    ``kwargs`` go to :func:`accuracy`.
    """
    return accuracy(model, triggered_test_with_target_labels, **kwargs)


def backdoor_accuracy(model: torch.nn.Module, triggered_test_with_true_labels: Dataset, **kwargs) -> float:
    """Backdoor Accuracy, TIS paper Sec. 6.2.4.

    Accuracy on test images carrying the trigger, with their true labels. Low
    for the poisoned model; high once the backdoor has been neutralised.
    ``kwargs`` go to :func:`accuracy`.
    """
    return accuracy(model, triggered_test_with_true_labels, **kwargs)


# --------------------------------------------------------------------------- #
# FOUL and NoT
# --------------------------------------------------------------------------- #
def time_to_forget(forget_acc_per_round: Sequence[float]) -> float:
    """FOUL's Time to Forget (T2F): mean drop of forget accuracy per round until its lowest value.

    Our reading of "average drop of forget accuracy per round until its best
    value": with acc[0] the accuracy before unlearning and t* the first round
    at which acc is lowest,

        T2F = (acc[0] - acc[t*]) / t*.

    Higher means faster forgetting.

    Parameters
    ----------
    forget_acc_per_round : sequence of float
        acc[0] before unlearning, then one value per unlearning round.

    Returns
    -------
    float
        ``nan`` when t* = 0: no round was run, or no round went below acc[0].
    """
    acc = np.asarray(forget_acc_per_round, dtype=float)
    if acc.ndim != 1 or len(acc) == 0:
        raise ValueError("forget_acc_per_round must be a non-empty 1-D sequence (acc[0] is before unlearning)")
    best_round = int(np.argmin(acc))  # first occurrence of the minimum
    if best_round == 0:
        return float("nan")
    return float((acc[0] - acc[best_round]) / best_round)


def avg_gap(
    metrics_a: Mapping[str, float],
    metrics_b: Mapping[str, float],
    keys: Sequence[str] = ("retain_acc", "forget_acc", "test_acc", "mia"),
    scale: float = 100.0,
) -> float:
    """NoT's average gap: mean absolute difference between two sets of metrics.

    avg_gap = scale * mean_k |a[k] - b[k]|. Compare a method with Retrain
    (lower is better). With the default ``scale=100`` metrics given as
    fractions in [0, 1] yield percentage points, the unit of NoT's tables;
    pass ``scale=1`` for metrics already in percent.
    """
    if not keys:
        raise ValueError("keys must not be empty")
    missing = [k for k in keys if k not in metrics_a or k not in metrics_b]
    if missing:
        raise ValueError(f"keys missing from the metrics: {missing}")
    return scale * float(np.mean([abs(metrics_a[k] - metrics_b[k]) for k in keys]))


# --------------------------------------------------------------------------- #
# Aggregation over seeds
# --------------------------------------------------------------------------- #
def summarize(values: Sequence[float]) -> dict:
    """Mean, spread and 95 % confidence interval of a metric over seeds.

    Returns
    -------
    dict
        ``mean``; ``std`` (sample standard deviation, ddof=1; 0 for n=1);
        ``n``; ``ci95``: half-width of the Student-t 95 % interval of the mean,
        t_{0.975, n-1} * std / sqrt(n) (``nan`` for n=1: one run says nothing
        about the spread). Report as mean +- ci95.
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError("values must be a non-empty 1-D sequence")
    n = len(array)
    if n == 1:
        return {"mean": float(array[0]), "std": 0.0, "n": 1, "ci95": float("nan")}
    std = float(array.std(ddof=1))
    half_width = float(stats.t.ppf(0.975, df=n - 1)) * std / math.sqrt(n)
    return {"mean": float(array.mean()), "std": std, "n": n, "ci95": half_width}


# --------------------------------------------------------------------------- #
# One dict of measures per model: what every chapter and the benchmark report
def class_matched(members_y, nonmembers_y, seed: int = 0, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of members and non-members with the same count in every class.

    For each class ``c``, ``min(#members_c, #nonmembers_c)`` samples are drawn
    from each group (seeded). A membership attack on the result cannot win by
    recognising the class mix of a non-IID client instead of membership.
    With ``cap``, at most ``cap`` pairs are kept, chosen as pairs of the same
    class, so the per-class counts still agree.
    """
    rng = np.random.default_rng(seed)
    members_y, nonmembers_y = np.asarray(members_y), np.asarray(nonmembers_y)
    pick_m, pick_n = [], []
    for c in np.union1d(members_y, nonmembers_y):
        im, inn = np.flatnonzero(members_y == c), np.flatnonzero(nonmembers_y == c)
        k = min(len(im), len(inn))
        pick_m.append(rng.choice(im, k, replace=False))
        pick_n.append(rng.choice(inn, k, replace=False))
    pick_m, pick_n = np.concatenate(pick_m), np.concatenate(pick_n)  # aligned: position j has one class
    if cap is not None and len(pick_m) > cap:
        keep = rng.choice(len(pick_m), cap, replace=False)
        pick_m, pick_n = pick_m[keep], pick_n[keep]
    return np.sort(pick_m).astype(np.int64), np.sort(pick_n).astype(np.int64)


def _matched_pair(members, nonmembers, seed: int, cap: int | None):
    """Class-matched subsets of two datasets, at most ``cap`` samples each."""
    im, inn = class_matched(members.y.numpy(), nonmembers.y.numpy(), seed, cap)
    return members.subset(im), nonmembers.subset(inn)


def evaluate(model: torch.nn.Module, federation, request, *, mia: bool = True, efficacy: bool = True,
             seed: int = 0, max_mia_samples: int | None = 2000, device=None) -> dict[str, float]:
    """Every measure of one model on one unlearning request, as one flat dict.

    Keys: ``retain_acc``, ``forget_acc``, ``test_acc``; for class requests also
    ``test_retain_acc`` and ``test_forget_acc`` (test samples of kept and of
    forgotten classes); with ``mia``: ``mia_acc``, ``mia_auc``,
    ``mia_tpr_1pct``, ``mia_efficacy`` and ``mia_efficacy_ref``; where the
    federation has a triggered test set: ``asr`` and ``backdoor_acc``.

    The loss attack (``mia_*``) is calibrated on data disjoint from what it
    scores: the non-member pool (test set) is split into two stratified
    halves; the attack is fitted on retain samples (known members) against the
    first half, and scores the forget set against the second half, each pair
    class-matched with :func:`class_matched`. For a model that never saw the
    forget set, its accuracy is 0.5 up to sampling noise. ``mia_acc`` uses the
    threshold fitted on the calibration pair, so it also moves with how far the
    model lowered its retain losses; ``mia_auc`` and ``mia_tpr_1pct`` depend only
    on how the scored samples rank (one feature, a monotone attack). Compare
    methods with the AUC (the benchmark's derived scores do) and read the
    accuracy as a raw measure.
    ``mia_efficacy`` is the SVC attack of Jia et al. (:func:`mia_efficacy`),
    fitted on retain samples against the first half; ``mia_efficacy_ref`` is
    the share of the second, unseen half that the same SVC calls non-members.
    Read the first against the second: when the model does not separate
    members from non-members the SVC's boundary is arbitrary and both can be
    anywhere in [0, 1], but they stay close to each other.

    Parameters
    ----------
    model : nn.Module
    federation : Federation
    request : Request
    mia : bool
        Run the membership attacks (the slowest part).
    efficacy : bool
        With ``mia``, also run the SVC attack (``mia_efficacy`` and ``mia_efficacy_ref``);
        turn off in sweeps that only need the loss attack.
    seed : int
        Seed of the attacks' splits and subsampling.
    max_mia_samples : int, optional
        Cap on members (and on non-members) given to each attack.
    """
    forget, retain = federation.forget_data(request), federation.retain_data(request)
    out = {
        "retain_acc": accuracy(model, retain, device=device),
        "forget_acc": accuracy(model, forget, device=device),
        "test_acc": accuracy(model, federation.test, device=device),
    }
    test_keep, test_forget = federation.test_split(request)
    if test_forget is not None:
        out["test_retain_acc"] = accuracy(model, test_keep, device=device)
        out["test_forget_acc"] = accuracy(model, test_forget, device=device)
    if mia:
        pool = federation.test if test_forget is not None else test_keep
        fit_idx, score_idx = _stratified_halves(pool.y.numpy(), seed)
        fit_m, fit_n = _matched_pair(retain, pool.subset(fit_idx), seed, max_mia_samples)
        members, nonmembers = _matched_pair(forget, pool.subset(score_idx), seed + 1, max_mia_samples)
        attack = mia_loss_attack(model, members, nonmembers, fit_members=fit_m, fit_nonmembers=fit_n,
                                 seed=seed, device=device)
        out.update(mia_acc=attack.accuracy, mia_auc=attack.auc, mia_tpr_1pct=attack.tpr_at_1pct_fpr)
    if mia and efficacy:
        svc = dict(seed=seed, max_samples=max_mia_samples, device=device)
        out["mia_efficacy"] = mia_efficacy(model, retain, pool.subset(fit_idx), forget, **svc)
        out["mia_efficacy_ref"] = mia_efficacy(model, retain, pool.subset(fit_idx), pool.subset(score_idx), **svc)
    if federation.triggered_test is not None:
        out["asr"] = attack_success_rate(model, federation.triggered_test, device=device)
    if federation.triggered_test_true is not None:
        out["backdoor_acc"] = backdoor_accuracy(model, federation.triggered_test_true, device=device)
    return out


def _stratified_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of ``range(len(labels))`` with every class split evenly (seeded)."""
    rng = np.random.default_rng(seed)
    first = [rng.permutation(np.flatnonzero(labels == c))[: (labels == c).sum() // 2] for c in np.unique(labels)]
    first = np.sort(np.concatenate(first)).astype(np.int64)
    return first, np.setdiff1d(np.arange(len(labels)), first).astype(np.int64)
