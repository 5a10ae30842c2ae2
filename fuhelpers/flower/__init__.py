"""Run the book's experiments on Flower (an optional extra: ``pip install -e ".[flower]"``).

The server's code is the package's own: :func:`fuhelpers.experiments.prepare` trains the original model and
every method runs as in process, inside :func:`fuhelpers.fl.client_runtime` with a :class:`FlowerClients`
runtime, which sends each round's local training (FedAvg, Retrain, FT, NoT's recovery, FedEraser's
calibration, TIS's targeted retraining) and TIS's curvature query to Flower's clients as messages. Each client
builds the same task from the run configuration and answers with its own partition (``partition-id``).

Modules: :mod:`.config` (the run configuration both sides read), :mod:`.runtime` (the server's side of the
messages), :mod:`.server_app` and :mod:`.client_app` (the Flower apps, for ``flwr run``).
"""
from .config import Run

__all__ = ["Run"]
