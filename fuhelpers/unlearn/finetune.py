"""Fine-tuning (FT): keep training the original model with FedAvg on retained data only."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..fl import FedConfig, train
from .base import Unlearned

NEEDS = {"clients"}


@dataclass
class FinetuneConfig:
    """FedAvg settings of the fine-tuning rounds (typically far fewer rounds than training)."""

    fed: FedConfig = field(default_factory=lambda: FedConfig(num_rounds=5))


def unlearn(model, federation, request, config: FinetuneConfig, history=None, *, evaluate=None, device=None) -> Unlearned:
    """Continue FedAvg from ``model`` on the retained clients' retained data.

    Forgetting comes only from catastrophic forgetting of what is no longer
    seen; it is the weakest baseline and the cheapest one.
    """
    clients, ids = federation.retain_clients(request)
    result = train(copy.deepcopy(model), clients, config.fed, client_ids=ids, evaluate=evaluate, device=device,
                   desc="Fine-tune")
    return Unlearned(result.model, result.cost, {"clients": ids}, result.log)
