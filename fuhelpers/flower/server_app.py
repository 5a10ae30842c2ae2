"""The ServerApp: FedAvg, then the run's unlearning requests, with every client round sent to Flower nodes.

:func:`serve` is the whole server: :func:`fuhelpers.experiments.prepare` and each method of
:mod:`fuhelpers.experiments` run unchanged inside ``client_runtime(FlowerClients(grid, ...))``. The server also
builds the task, which gives it the test data and the model, and the forgotten client's data *to measure* the
result, as every chapter's evaluation does; the training, the calibration and TIS's curvature run on the
nodes, and each reply's sample count is checked against the server's copy of the task.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from .. import experiments as ex
from ..experiments.methods import as_variant, needs_history, run_variant
from ..fl import client_runtime, state_copy
from .config import Run
from .runtime import FlowerClients

app = ServerApp()


def serve(grid: Grid, run: Run) -> dict:
    """Train the original model over Flower, serve every request of ``run``, write and return the result.

    Returns
    -------
    dict
        ``{"run", "measures": {model: {...}}, "seconds": {model: s}, "messages", "out_dir"}``; the models'
        states go to ``<out_dir>/states.pt`` (``{model: state_dict}``), the rest to ``<out_dir>/result.json``.
    """
    setting = run.setting()
    clients = FlowerClients(grid, setting.num_clients)
    seconds = {}
    with client_runtime(clients):
        start = time.perf_counter()
        p = ex.prepare(run.scenario, setting, run.seed, record_history=needs_history(run.methods))
        seconds["original"], models = time.perf_counter() - start, {"original": p.model}
        for entry in run.methods:
            name, start = as_variant(entry).name, time.perf_counter()
            models[name] = run_variant(p, entry).model
            seconds[name] = time.perf_counter() - start
    states = {name: state_copy(net) for name, net in models.items()}
    result = {"run": run.run_config(), "measures": {name: ex.measure(p, net) for name, net in models.items()},
              "seconds": seconds, "messages": clients.messages}
    out = Path(run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(states, out / "states.pt")
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return {**result, "out_dir": str(out)}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower's entry point: the run configuration names the task and the methods (see :mod:`.config`)."""
    serve(grid, Run.from_run_config(context.run_config))
