"""The unlearning settings the chapters share, built in one place.

A :class:`Scenario` bundles a federation, the unlearning request, and the data
on which "target accuracy" is measured. The settings follow the TIS paper
(Sec. 6.1) and the chapters of this book:

``"iid"``           IID split; client unlearning, judged by membership inference.
``"dirichlet"``     Dirichlet(alpha) label skew; client unlearning, judged by the
                    accuracy on the target client's training data.
``"categorical"``   the TIS paper's "preferential" split: shared classes on every client, one exclusive class per
                    client; forgetting the client forgets its class (categorical
                    unlearning), judged by the accuracy on test samples of that class.
``"backdoor"``      IID split; the target client stamps a trigger on part of its
                    data and relabels it; judged by attack success rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import partition
from .data import ArrayDataset, poison, triggered_testset
from .federation import Federation, Request

# The one vocabulary of scenarios (package, experiments, records, chapters). ``build`` makes the first four;
# ``"domain"`` (FOUL's: every client of one domain is forgotten) is built by
# :func:`fuhelpers.experiments.setting.build_task`.
SCENARIOS = ("iid", "dirichlet", "categorical", "backdoor", "domain")
SCENARIO_LABELS = {"iid": "client, IID", "dirichlet": "client, Dirichlet", "categorical": "categorical",
                   "backdoor": "backdoor", "domain": "domain"}   # what readers see in plots and tables
SETTINGS = SCENARIOS[:4]
# what each scenario's forgetting is judged on (NFS is computed on it). The attack enters through its AUC, not
# its accuracy: the accuracy thresholds at a level fitted on each model's retain losses, so it moves with how far a
# method lowered them; the AUC and TPR do not depend on the fitted threshold.
FORGETTING_METRIC = {"iid": "mia_auc", "dirichlet": "target_acc", "categorical": "target_acc", "backdoor": "asr",
                     "domain": "forget_acc"}


@dataclass
class Scenario:
    """A federation, what to forget, and how forgetting is judged.

    Attributes
    ----------
    name : str
        One of :data:`SETTINGS`.
    federation : Federation
    request : Request
        Always client unlearning of ``target_client`` here.
    target : ArrayDataset
        Where "target accuracy" is measured (see the module docstring).
    forgetting_metric : str
        The measure NFS is computed on: ``"target_acc"``, ``"mia_auc"`` (the attack's AUC, free of its
        threshold) or ``"asr"``.
    target_client : int
    """

    name: str
    federation: Federation
    request: Request
    target: ArrayDataset
    forgetting_metric: str
    target_client: int = 0


def build(setting: str, train: ArrayDataset, test: ArrayDataset, *, num_clients: int = 5, target_client: int = 0,
          seed: int = 0, alpha: float = 0.8, poison_fraction: float = 0.5, backdoor_target: int = 9,
          split: str | None = None) -> Scenario:
    """Build one of :data:`SETTINGS` from a training and a test set.

    Parameters
    ----------
    setting : str
        ``"iid"``, ``"dirichlet"``, ``"categorical"`` or ``"backdoor"``.
    train, test : ArrayDataset
    num_clients : int
        Five in the TIS paper.
    target_client : int
        The client that asks to be forgotten.
    seed : int
        Seed of the partition and of the poisoning.
    alpha : float
        Dirichlet concentration (0.8 in the TIS paper).
    poison_fraction, backdoor_target : float, int
        Backdoor: share of the target client's eligible samples that are
        triggered, and the label they are given (9 in the TIS paper).
    split : {"iid", "dirichlet"}, optional
        Override the setting's partition, e.g. a backdoor on a Dirichlet split
        (DPUL's protocol); default: the setting's own (see the module docstring).
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
    if not 0 <= target_client < num_clients:
        raise ValueError(f"target_client must be in [0, {num_clients}), got {target_client}")
    labels = train.y.numpy()
    scheme = split or {"iid": "iid", "backdoor": "iid", "dirichlet": "dirichlet", "categorical": "preferential"}[setting]
    if scheme not in ("iid", "dirichlet", "preferential"):
        raise ValueError(f"unknown split {split!r}; expected 'iid', 'dirichlet' or 'preferential'")
    kwargs = {"alpha": alpha} if scheme == "dirichlet" else {}
    parts = partition.partition(labels, num_clients, scheme, seed=seed, **kwargs)
    fed = Federation.from_partition(train, parts, test)
    request = Request.client(target_client)
    if setting == "categorical":
        exclusive = _exclusive_class(labels, parts, target_client)
        target = test.subset(np.flatnonzero(test.y.numpy() == exclusive))
        return Scenario(setting, fed, request, target, FORGETTING_METRIC[setting], target_client)
    if setting == "backdoor":
        fed.clients[target_client], _ = poison(fed.clients[target_client], poison_fraction, backdoor_target, seed)
        fed.triggered_test = triggered_testset(test, backdoor_target)
        fed.triggered_test_true = triggered_testset(test, backdoor_target, relabel=False)
        return Scenario(setting, fed, request, fed.triggered_test, FORGETTING_METRIC[setting], target_client)
    return Scenario(setting, fed, request, fed.clients[target_client], FORGETTING_METRIC[setting], target_client)


def _exclusive_class(labels: np.ndarray, parts, client: int) -> int:
    """The class that only ``client`` holds."""
    others = np.concatenate([p for c, p in enumerate(parts) if c != client])
    own = np.setdiff1d(np.unique(labels[parts[client]]), np.unique(labels[others]))
    if len(own) != 1:
        raise ValueError(f"client {client} holds {len(own)} exclusive classes, expected 1")
    return int(own[0])
