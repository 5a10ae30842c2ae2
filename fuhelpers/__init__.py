"""fuhelpers: the helper package of the open book on federated unlearning.

Modules, in the order data flows through them::

    data -> partition -> federation -> fl (FedAvg) -> unlearn.<method> -> metrics -> results
"""
from . import (cost, curvature, data, device, federation, fl, history, metrics, models, partition, results,
               scenarios, unlearn)
from .cost import Cost
from .device import seed_everything, set_threads, try_gpu
from .federation import Federation, Request
from .fl import FedConfig, train
from .history import History
from .notebook import setup_notebook
from .progress import progress

__version__ = "0.1.0"

__all__ = [
    "Cost", "FedConfig", "Federation", "History", "Request", "cost", "curvature", "data",
    "device", "federation", "fl", "history", "metrics", "models", "partition", "progress", "results",
    "scenarios", "seed_everything", "set_threads", "setup_notebook", "train", "try_gpu", "unlearn",
]
