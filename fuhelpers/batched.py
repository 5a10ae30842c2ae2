"""Many small models trained at once: a client runtime that stacks a round's clients and takes one vmapped step.

For a model of a few ten thousand parameters a training step on a CPU is mostly overhead (Python, dispatch,
small kernels), not arithmetic. :class:`BatchedClients` trains all ``G`` clients of a round together: their
parameters stacked along a new leading dimension, one ``torch.func.vmap`` of the gradient per step (a
convolution with a stacked weight runs as one grouped convolution), SGD with momentum written on the stacked
tensors. Every client draws exactly the batches it draws in :func:`fuhelpers.fl.local_train` (the same
``derive_seed(seed, round, client)``); clients with fewer batches, and the short last batch of an epoch, are
padded and masked, so the result equals the sequential loop up to float rounding (``tests/test_batched.py``).

Use it like any runtime::

    with fl.client_runtime(BatchedClients()):
        fl.train(net, clients, config)          # FedAvg, Retrain, FT, recoveries: unchanged code

Where it wins is measured by ``benchmarks/batched_clients.py``; the README quotes the numbers. It accepts
fp32 models without buffers (no BatchNorm), and no custom local trainer.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from .fl import FedConfig, State, Trained, _batches, derive_seed, flops_per_sample, state_copy

__all__ = ["BatchedClients", "padded_batches"]


def padded_batches(sizes: Sequence[int], generators: Sequence[torch.Generator], config: FedConfig,
                   offsets: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every client's batch indices for one round, padded to a common shape.

    Returns
    -------
    index : LongTensor, shape (S, G, B)
        Step ``s`` of client ``g`` reads rows ``index[s, g]`` of the clients' concatenated data
        (``offsets[g]`` is where client ``g`` starts); padding points at the client's first row.
    weight : Tensor, shape (S, G, B)
        1 for a real sample, 0 for padding; a client with no batch left at step ``s`` has an all-zero row.
    """
    per_client = [list(_batches(n, config, gen)) for n, gen in zip(sizes, generators)]
    steps, b = max(len(bs) for bs in per_client), config.batch_size
    index = torch.zeros(steps, len(sizes), b, dtype=torch.long)
    weight = torch.zeros(steps, len(sizes), b)
    for g, (bs, off) in enumerate(zip(per_client, offsets)):
        index[:, g] = off
        for s, idx in enumerate(bs):
            index[s, g, : len(idx)] = idx + off
            weight[s, g, : len(idx)] = 1.0
    return index, weight


@dataclass
class BatchedClients:
    """A client runtime that trains a round's clients together (see the module docstring)."""

    def train_round(self, model: nn.Module, state: State, clients: Sequence, client_ids: Sequence[int],
                    config: FedConfig, round_: int, device: torch.device,
                    mask: Mapping[str, torch.Tensor] | None = None) -> list[Trained]:
        if config.precision != "fp32":
            raise ValueError(f"BatchedClients trains in fp32 only, got precision={config.precision!r}")
        if any(True for _ in model.buffers()):
            raise ValueError("BatchedClients needs a model without buffers (no BatchNorm)")
        model.load_state_dict(state)
        model.to(device).train()
        fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        G = len(clients)
        params = {n: p.detach().unsqueeze(0).repeat(G, *[1] * p.dim()) for n, p in model.named_parameters()
                  if p.requires_grad}                                             # each (G, ...)
        start = {n: p.clone() for n, p in params.items()}
        bufs = {n: torch.zeros_like(p) for n, p in params.items()}
        keep = {n: m.to(device) for n, m in (mask or {}).items()}

        x = torch.cat([c.x for c in clients]).to(device)                          # (N, ...) all clients' data
        y = torch.cat([c.y for c in clients]).to(device)
        sizes = [len(c) for c in clients]
        offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0).tolist()
        gens = [torch.Generator().manual_seed(derive_seed(config.seed, round_, cid)) for cid in client_ids]
        index, weight = padded_batches(sizes, gens, config, offsets)             # (S, G, B) each
        index, weight = index.to(device), weight.to(device)

        def loss(p, xb, yb, wb):                                                  # one client: mean CE of real rows
            out = functional_call(model, {**p, **fixed}, (xb,))
            return (nn.functional.cross_entropy(out, yb, reduction="none") * wb).sum() / wb.sum().clamp(min=1)

        step_grad = vmap(grad(loss))
        lr, mom, wd = config.lr, config.momentum, config.weight_decay
        for s in range(index.shape[0]):
            idx, wb = index[s], weight[s]                                         # (G, B)
            active = (wb.sum(1) > 0).float()                                      # (G,) has a batch at step s
            grads = step_grad(params, x[idx], y[idx], wb)
            for n, p in params.items():
                a = active.view(-1, *[1] * (p.dim() - 1))
                d = grads[n] + wd * p if wd else grads[n]
                bufs[n] = mom * bufs[n] + d if mom else d     # torch.optim.SGD, dampening 0 (idle steps come last)
                params[n] = p - a * lr * bufs[n]
                if n in keep:                                                     # TRIM-style targeted retraining
                    params[n] = torch.where(keep[n], params[n], start[n])
        seen = weight.sum((0, 2)).long().tolist()
        out = []
        for g, data in enumerate(clients):
            model.load_state_dict({**state, **{n: p[g] for n, p in params.items()}})
            out.append(Trained(state_copy(model), seen[g],
                               flops_per_sample(model, data, config.batch_size, device)))
        return out
