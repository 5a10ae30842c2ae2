"""Retrain from scratch without the forgotten data: the gold standard every method is judged against."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..fl import FedConfig, train
from .base import Unlearned, reinitialize

NEEDS = {"clients"}


@dataclass
class RetrainConfig:
    """How to retrain.

    Attributes
    ----------
    fed : FedConfig
        FedAvg settings; use the original training's so the comparison is fair.
    init_state : dict, optional
        Start from this state (e.g. the original run's initial model); default:
        fresh parameters drawn with ``init_seed``.
    init_seed : int
        Seed of the fresh initialisation when ``init_state`` is None.
    """

    fed: FedConfig = field(default_factory=FedConfig)
    init_state: dict | None = None
    init_seed: int = 0


def unlearn(model, federation, request, config: RetrainConfig, history=None, *, evaluate=None, device=None) -> Unlearned:
    """FedAvg from scratch on the retained clients' retained data.

    Parameters
    ----------
    model : nn.Module
        The trained model; only its architecture is used.
    federation : Federation
    request : Request
    config : RetrainConfig
    history : ignored
        Accepted for the common signature.
    evaluate : callable, optional
        Per-round evaluation, passed to :func:`fuhelpers.fl.train`.
    """
    if config.init_state is not None:
        fresh = copy.deepcopy(model)
        fresh.load_state_dict(config.init_state)
    else:
        fresh = reinitialize(model, config.init_seed)
    clients, ids = federation.retain_clients(request)
    result = train(fresh, clients, config.fed, client_ids=ids, evaluate=evaluate, device=device, desc="Retrain")
    return Unlearned(result.model, result.cost, {"clients": ids}, result.log)
