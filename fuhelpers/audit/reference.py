"""Reference federations for a per-example audit of one client-unlearning request.

Candidates are the forgotten client's samples (``F``) and as many held-out test samples of the same classes
(``H``, never trained on by the audited models). Reference federation ``r`` is the federation with the
forgotten client's data replaced by the candidates that ``r`` draws IN (each candidate IN in exactly half
of the federations); it is trained with the same FedAvg protocol from its own initialisation. Every other
client is unchanged, so a reference federation differs from Retrain only in what the forgotten client holds.

The audited question, per model: do the samples of ``F`` look like members (as under the original model) or
like the non-members ``H`` (as under Retrain)? Each attack scores every candidate; TPR is the share of ``F``
flagged at the threshold that flags the given share of ``H``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import metrics, models
from ..cost import Cost
from ..federation import concat
from ..fl import derive_seed, train
from ..progress import progress
from . import attacks

ATTACKS = ("lira", "lira_offline", "lira_fixed", "rmia", "loss")



@dataclass
class References:
    """Candidates, population and the reference models' scores of them.

    Attributes
    ----------
    candidates : ArrayDataset
        ``F`` then ``H`` (N samples).
    is_forget : np.ndarray
        (N,) True for the forgotten client's samples.
    population : ArrayDataset
        Test samples outside ``H`` (RMIA's ``z``), never trained on by any model.
    ref_in : np.ndarray
        (R, N) which candidates each reference federation trained on.
    conf, prob : np.ndarray
        (R, N) logit-scaled confidence and true-class probability of each candidate under each reference model.
    population_prob : np.ndarray
        (R, M) true-class probability of each population sample under each reference model.
    cost : Cost
        What training the reference federations cost.
    """

    candidates: object
    is_forget: np.ndarray
    population: object
    ref_in: np.ndarray
    conf: np.ndarray
    prob: np.ndarray
    population_prob: np.ndarray
    cost: Cost

    ARRAYS = ("is_forget", "ref_in", "conf", "prob", "population_prob")

    def save(self, path) -> None:
        """The scores as ``.npz`` (the datasets are rebuilt from the seed by :func:`candidates`)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{k: getattr(self, k) for k in self.ARRAYS},
                            cost=np.array(json.dumps(dataclasses.asdict(self.cost))))


def candidates(p, pairs: int | None = None):
    """``(candidates, is_forget, population)`` for a one-client request of the prepared run ``p``.

    ``F`` and ``H`` are class-matched (:func:`fuhelpers.metrics.class_matched`), at most ``pairs`` each, so
    an attack cannot win on the class mix of a non-IID client; the rest of the test set is the population.
    """
    if p.request.kind != "client" or len(p.request.clients) != 1:
        raise ValueError(f"the audit needs a request to forget one client, got {p.request}")
    forget, test = p.federation.forget_data(p.request), p.federation.test
    i_f, i_h = metrics.class_matched(forget.y.numpy(), test.y.numpy(), seed=p.seed, cap=pairs)
    rest = np.setdiff1d(np.arange(len(test)), i_h)
    cands = concat([forget.subset(i_f), test.subset(i_h)])
    is_forget = np.r_[np.ones(len(i_f), bool), np.zeros(len(i_h), bool)]
    return cands, is_forget, test.subset(rest)


def reference_clients(p, cands, inside: np.ndarray) -> list:
    """The federation's clients with the forgotten client's data replaced by the candidates ``inside``."""
    target = p.request.clients[0]
    return [cands.subset(np.flatnonzero(inside)) if c == target else data
            for c, data in enumerate(p.federation.clients)]


def train_references(p, num_refs: int, pairs: int | None = None, *, partial=None,
                     show_progress: bool | None = None) -> References:
    """Train ``num_refs`` reference federations for the prepared run ``p`` and score the candidates.

    Each uses ``p``'s FedAvg configuration with its own seed and initialisation (``derive_seed(seed, 17, r)``).
    With ``partial`` (a path), the scores are saved there after every federation, and a run stopped halfway
    continues from the federations already there (same seeds, so the same numbers as an uninterrupted run).
    """
    cands, is_forget, population = candidates(p, pairs)
    ref_in = attacks.balanced_masks(num_refs, len(cands), seed=derive_seed(p.seed, 17))
    conf, prob, pop_prob, cost = [], [], [], Cost()
    if partial is not None and Path(partial).exists():
        arrays, cost = _read(partial, ref_in.shape, is_forget)
        if not np.array_equal(arrays["ref_in"], ref_in):
            raise ValueError(f"{partial} holds reference scores of other candidates; delete it to retrain")
        conf, prob, pop_prob = (list(arrays[k]) for k in ("conf", "prob", "population_prob"))
    for r in progress(range(len(conf), num_refs), desc="reference federations", enabled=show_progress):
        seed = derive_seed(p.seed, 17, r) % 2**31
        torch.manual_seed(seed)
        net = models.model_for(p.federation.clients[0], p.setting.arch, **p.setting.arch_kwargs).to(p.device)
        config = dataclasses.replace(p.fed_config, seed=seed)
        result = train(net, reference_clients(p, cands, ref_in[r]), config, device=p.device, progress=False,
                       desc=f"reference {r}")
        cost = cost + result.cost
        c, pr = scores(net, cands, p.device)
        conf.append(c)
        prob.append(pr)
        pop_prob.append(scores(net, population, p.device)[1])
        if partial is not None:
            References(cands, is_forget, population, ref_in, np.array(conf), np.array(prob), np.array(pop_prob),
                       cost).save(partial)
    return References(cands, is_forget, population, ref_in, np.array(conf), np.array(prob), np.array(pop_prob), cost)


def _read(path, shape, is_forget) -> tuple[dict, Cost]:
    """Cached scores and cost, checked against the candidates they must belong to."""
    with np.load(path) as z:
        arrays, cost = {k: z[k] for k in References.ARRAYS}, Cost(**json.loads(str(z["cost"])))
    if arrays["ref_in"].shape != shape or not np.array_equal(arrays.pop("is_forget"), is_forget):
        raise ValueError(f"{path} holds reference scores of other candidates; delete it to retrain")
    return arrays, cost


def load_or_train(p, num_refs: int, pairs: int | None, path) -> References:
    """:func:`train_references`, or its scores read back from ``path`` (written on first use).

    While training, ``<path>.partial.npz`` holds the federations finished so far (a stopped run resumes there).
    """
    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.stem + ".partial.npz")
        refs = train_references(p, num_refs, pairs, partial=partial)
        refs.save(path)
        partial.unlink(missing_ok=True)
        return refs
    cands, is_forget, population = candidates(p, pairs)
    arrays, cost = _read(path, (num_refs, len(cands)), is_forget)
    return References(cands, is_forget, population, cost=cost, **arrays)


def scores(model, data, device) -> tuple[np.ndarray, np.ndarray]:
    """Logit-scaled confidence and true-class probability of every sample of ``data``."""
    logits = metrics.predict(model, data, device=device).double().numpy()
    y = data.y.numpy()
    return attacks.logit_confidence(logits, y), attacks.true_class_probability(logits, y)


def attack_scores(model, refs: References, device=None) -> dict[str, np.ndarray]:
    """Every attack's membership score of every candidate under ``model`` (higher: more likely a member)."""
    conf, prob = scores(model, refs.candidates, device)
    population = scores(model, refs.population, device)[1]
    return {"lira": attacks.lira(conf, refs.conf, refs.ref_in),
            "lira_offline": attacks.lira(conf, refs.conf, refs.ref_in, online=False),
            "lira_fixed": attacks.lira(conf, refs.conf, refs.ref_in, fixed_variance=True),
            "rmia": attacks.rmia(prob, refs.prob, refs.ref_in, population, refs.population_prob),
            "loss": np.log(prob)}   # minus the cross-entropy: the population attack, without reference models


def audit(model, refs: References, device=None, *, n_boot: int = 200, seed: int = 0) -> tuple[dict, dict]:
    """Audit ``model``: forgotten samples (``F``) as members against held-out ones (``H``) as non-members.

    Returns
    -------
    measures : dict
        ``<attack>_auc``, ``<attack>_tpr_1pct``, ``<attack>_tpr_0p1pct`` for every attack of :data:`ATTACKS`.
    details : dict
        Per attack: the 95 % bootstrap interval of each measure (``[low, high]``) and the ROC curve at
        log-spaced FPRs.
    """
    measures, details = {}, {}
    for name, s in attack_scores(model, refs, device).items():
        ev = attacks.evaluate(s, refs.is_forget, n_boot=n_boot, seed=seed)
        measures.update({f"{name}_{k}": v[0] for k, v in ev.items()})
        details[name] = {**{k: [v[1], v[2]] for k, v in ev.items()}, "roc": attacks.roc_points(s, refs.is_forget)}
    return measures, details
