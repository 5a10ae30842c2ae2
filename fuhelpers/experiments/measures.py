"""One ``measure`` for every model of every experiment, and the scores derived from it.

One row per method: accuracies, the membership attack, ASR where a trigger is set, NFS and NTA
against Retrain, the average gap to Retrain, and costs as ratios to Retrain measured in the same run.
Every derived score that involves the membership attack uses its AUC (``mia_auc``), never its accuracy:
the accuracy thresholds at a level fitted on the model's own retain losses, so it moves with how far a
method lowered them, while the AUC (and TPR at low FPR) does not depend on that threshold.
``mia_acc`` is still reported, as a raw measure.
"""
from __future__ import annotations

import torch

from .. import metrics
from ..cost import MB, Cost
from .setting import Prepared

MEASURES = ("retain_acc", "forget_acc", "test_acc", "mia_acc", "mia_auc", "target_acc", "asr", "backdoor_acc")
MEASURE_LABELS = {"retain_acc": "retain accuracy", "forget_acc": "forget accuracy", "test_acc": "test accuracy",
                  "mia_acc": "attack accuracy", "mia_auc": "attack AUC", "target_acc": "forgotten-class accuracy",
                  "asr": "attack success", "backdoor_acc": "accuracy on triggered images"}  # for plots and tables
GAP_KEYS = ("retain_acc", "forget_acc", "test_acc", "mia_auc")  # NoT's average gap, with the attack's AUC
COSTS = ("seconds", "rounds", "comm_mb", "flops")
# where the forgetting shows, per scenario: the privacy side of the privacy-utility plot
PRIVACY_KEYS = {"iid": ("forget_acc", "mia_auc"), "dirichlet": ("forget_acc", "mia_auc"),
                "categorical": ("forget_acc", "mia_auc", "target_acc"), "backdoor": ("forget_acc", "mia_auc", "asr"),
                "domain": ("forget_acc", "mia_auc")}
UTILITY_KEYS = ("retain_acc", "test_acc")


def is_finite(model) -> bool:
    """Whether every floating-point tensor of the model's state is finite (a diverged run is not)."""
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def diverged_measures(p: Prepared) -> dict[str, float]:
    """What a model with non-finite weights scores: no utility, and no comparable forgetting.

    Its outputs are NaN. The utility measures (``retain_acc``, ``test_acc``, ``backdoor_acc``) are 0,
    which charges the method for diverging. The forgetting measures (``forget_acc``, ``target_acc``,
    ``asr``, ``mia_acc``, ``mia_auc``) are NaN: a collapsed model's low forget accuracy, or an attack
    at chance, would otherwise look like Retrain. NFS, ``avg_gap`` and ``privacy_gap`` follow as NaN,
    so the row is not comparable and :func:`fuhelpers.experiments.tables.ranking` leaves the method out.
    """
    nan = float("nan")
    m = {"retain_acc": 0.0, "test_acc": 0.0, "forget_acc": nan, "mia_acc": nan, "mia_auc": nan}
    if p.federation.triggered_test is not None:
        m.update(asr=nan, backdoor_acc=0.0)
    if p.forgetting_metric == "target_acc":
        m["target_acc"] = nan
    return {**m, "diverged": 1.0}


def measure(p: Prepared, model) -> dict[str, float]:
    """Every measure of ``model``: one call of :func:`fuhelpers.metrics.evaluate`, the same attack for all.

    ``diverged`` is 1 for a model with non-finite weights, which gets :func:`diverged_measures`.
    In the domain scenario the attack's non-members are the forgotten domain's test samples; its
    ``mia_acc`` is then biased by the domain shift, its ``mia_auc`` is not (see
    :func:`fuhelpers.experiments.setting._domain_task`).
    """
    if not is_finite(model):
        return diverged_measures(p)
    own_attack = p.mia_federation is p.federation
    m = metrics.evaluate(model, p.federation, p.request, mia=own_attack, efficacy=False, seed=p.seed,
                         device=p.device)
    if not own_attack:  # non-members from the forgotten domain's test samples (chapter 4)
        attack = metrics.evaluate(model, p.mia_federation, p.request, efficacy=False, seed=p.seed, device=p.device)
        m.update(mia_acc=attack["mia_acc"], mia_auc=attack["mia_auc"])
    if p.forgetting_metric == "target_acc":
        m["target_acc"] = metrics.accuracy(model, p.target, device=p.device)
    return {**{k: m[k] for k in MEASURES if k in m}, "diverged": 0.0}


def scores(p: Prepared, m: dict, original: dict, reference: dict) -> dict[str, float]:
    """NTA and NFS (TIS paper) and the gaps to Retrain, in percentage points (NoT's average gap).

    NFS uses the scenario's forgetting measure (``mia_auc`` in the IID scenario); the gaps use
    :data:`GAP_KEYS`, :data:`PRIVACY_KEYS` and :data:`UTILITY_KEYS`, the attack through its AUC.
    A NaN measure (a diverged model) gives NaN scores, "not comparable".
    """
    key = p.forgetting_metric
    gap = lambda keys: metrics.avg_gap(m, reference, keys=[k for k in keys if k in m])
    return {"nta": metrics.nta(m["test_acc"], reference["test_acc"]),
            "nfs": metrics.nfs(original[key], m[key], reference[key]),
            "avg_gap": gap(GAP_KEYS), "privacy_gap": gap(PRIVACY_KEYS[p.scenario]), "utility_gap": gap(UTILITY_KEYS)}


def cost_columns(cost: Cost, reference: Cost) -> dict[str, float]:
    """Seconds, rounds, MB and FLOPs, each also as a ratio to Retrain's; storage in MB."""
    ratio = cost.ratio_to(reference)
    return {"seconds": cost.seconds, "rounds": cost.rounds, "comm_mb": cost.comm_mb, "flops": cost.flops,
            "storage_mb": cost.storage_bytes / MB, **{f"{k}_ratio": ratio[k] for k in COSTS}}


def row(p: Prepared, m: dict, original: dict, reference: dict, cost: Cost, retrain_cost: Cost) -> dict:
    """One record row: the measures, the scores against Original and Retrain, and the costs."""
    return {**m, **scores(p, m, original, reference), **cost_columns(cost, retrain_cost)}
