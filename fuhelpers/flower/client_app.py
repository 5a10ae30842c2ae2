"""The ClientApp: one Flower node holds one partition of the run's task and trains or answers on it.

Every handler builds (once per process) the task the run configuration names, keeps its own partition
(``partition-id`` in the node configuration), and replies with that partition id; see :mod:`.runtime` for
the messages.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .. import models
from ..device import try_gpu
from ..fl import FedConfig, flops_per_sample, local_train
from ..unlearn.tis import client_curvature
from .config import Run


def _partition(context: Context, run: Run | None):
    """``(run, partition id, the federation, the run's request)`` of this node."""
    run = run or Run.from_run_config(context.run_config)
    pid = int(context.node_config["partition-id"])
    fed, request = run.task()
    if not 0 <= pid < fed.num_clients:
        raise ValueError(f"partition-id {pid} outside the run's {fed.num_clients} clients")
    return run, pid, fed, request


def _model(run: Run, data, message: Message, device):
    setting = run.setting()
    net = models.model_for(data, setting.arch, **setting.arch_kwargs)
    net.load_state_dict(message.content["arrays"].to_torch_state_dict())
    return net.to(device)


@contextmanager
def _threads(message: Message):
    """Compute with the server's torch thread count (see :mod:`.runtime`), then restore this process's."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(message.content["config"]["threads"]))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _reply(message: Message, pid: int, arrays: dict, **metrics) -> Message:
    content = RecordDict({name: ArrayRecord(a) for name, a in arrays.items()})
    content["metrics"] = MetricRecord({"partition-id": pid, **metrics})
    return Message(content=content, reply_to=message)


def build(run: Run | None = None) -> ClientApp:
    """A ClientApp for ``run``, or (default) for the run configuration Flower passes in each message's context."""
    app = ClientApp()

    @app.query("describe")
    def describe(message: Message, context: Context) -> Message:
        """Which partition this node holds, and its size."""
        _, pid, fed, _ = _partition(context, run)
        return _reply(message, pid, {}, **{"num-examples": len(fed.clients[pid])})

    @app.train()
    def train(message: Message, context: Context) -> Message:
        """Local SGD on this partition from the received state, with the server's config and this client's seed."""
        this, pid, fed, _ = _partition(context, run)
        data, device = fed.clients[pid], try_gpu()
        net = _model(this, data, message, device)
        config = FedConfig(**json.loads(message.content["config"]["fed-config"]))
        mask = None
        if "mask" in message.content:
            mask = {k: v.bool() for k, v in message.content["mask"].to_torch_state_dict().items()}
        generator = torch.Generator().manual_seed(int(message.content["config"]["seed"]))
        with _threads(message):
            seen = local_train(net, data, config, generator, device, mask)
        flops = flops_per_sample(net, data, config.batch_size, device)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        return _reply(message, pid, {"arrays": state}, **{"num-examples": len(data), "seen": seen,
                                                          "flops-per-sample": float(flops)})

    @app.query("curvature")
    def curvature(message: Message, context: Context) -> Message:
        """TIS's query (Eq. 29): the Hessian diagonals of this partition's forget and retain parts."""
        this, pid, fed, request = _partition(context, run)
        data, device = fed.clients[pid], try_gpu()
        net = _model(this, data, message, device)
        c = message.content["config"]
        with _threads(message):
            answer = client_curvature(net, data, fed.forget_mask(pid, request), pid, str(c["method"]),
                                      seed=int(c["seed"]), batch_size=int(c["batch-size"]),
                                      mc_samples=int(c["mc-samples"]), device=device)
        parts = {p: {k: v.cpu() for k, v in d.items()} for p, d in (("forget", answer.forget),
                                                                    ("retain", answer.retain)) if d is not None}
        return _reply(message, pid, parts, **{"n-forget": answer.n_forget, "n-retain": answer.n_retain})

    return app


app = build()
