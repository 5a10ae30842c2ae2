"""DPUL stage 3, projected boost: server-side SGD directions taken with historical step lengths."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ...cost import Cost, stopwatch, train_flops_per_sample
from ...fl import FedConfig, derive_seed, local_train, state_copy
from ...history import History
from .rollback import _check_round, _write_flat_, flat_state, state_names


# ---------------------------------------------------------------- stage 3: recovery


@torch.no_grad()
def _accuracy(model: nn.Module, data, batch_size: int = 512) -> float:
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        logits = model(data.x[start:start + batch_size].to(device))
        correct += int((logits.argmax(1) == data.y[start:start + batch_size].to(device)).sum())
    return correct / len(data)


def matching_round(model: nn.Module, data, history: History) -> int:
    """The first stored round whose global model is at least as accurate on ``data`` as ``model`` (else the last)."""
    target_accuracy = _accuracy(model, data)
    probe = copy.deepcopy(model)
    for t in range(1, history.num_rounds + 1):
        probe.load_state_dict(history.global_model(t))
        if _accuracy(probe, data) >= target_accuracy:
            return t
    return history.num_rounds


@dataclass
class Recovery:
    """What :func:`projected_recovery` returns.

    Attributes
    ----------
    model : nn.Module
        The recovered model (a new object).
    rounds : list of int
        Historical round whose update length each step took.
    cost : Cost
        Seconds (evaluation excluded) and FLOPs of the server's training.
    log : list of dict
        ``{"round": k, "history_round": t, **evaluate(model)}`` per step, when ``evaluate`` is given.
    """

    model: nn.Module
    rounds: list[int]
    cost: Cost = field(default_factory=Cost)
    log: list[dict] = field(default_factory=list)


def projected_recovery(
    model: nn.Module,
    server_data,
    history: History,
    steps: int,
    *,
    lr: float = 0.01,
    batch_size: int = 32,
    momentum: float = 0.9,
    names: Sequence[str] | None = None,
    start_round: int | None = None,
    seed: int = 0,
    evaluate: Callable[[nn.Module], dict] | None = None,
) -> Recovery:
    """DPUL's projected boost: server-side steps along SGD directions with historical lengths.

    Step ``k`` (from 0) trains a copy of the current model for one epoch on
    ``server_data`` (SGD) to get a direction ``d``, then moves the current model
    by ``d / ||d|| * ||M_t - M_{t-1}||`` with ``t = min(start + k, T)``.

    Parameters
    ----------
    model : nn.Module
        Starting model (not edited).
    server_data : ArrayDataset
        The server's auxiliary set, held out from every client.
    history : History
        Gives the historical update lengths ``||M_t - M_{t-1}||``.
    steps : int
        Number of steps.
    lr, batch_size, momentum : float, int, float
        SGD settings of the epoch that gives each direction.
    names : sequence of str, optional
        Parameters that move (others stay bit-identical, buffers too); default all.
        Norms are taken over these parameters only.
    start_round : int, optional
        First historical round; default :func:`matching_round` on ``server_data``.
    seed : int
        Seeds the batch order of each step.
    evaluate : callable, optional
        ``evaluate(model) -> dict`` after each step.

    Returns
    -------
    Recovery
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if len(server_data) == 0:
        raise ValueError("the server set is empty")
    out = copy.deepcopy(model)
    all_names = [n for n, _ in out.named_parameters()]
    names = all_names if names is None else state_names(dict(out.named_parameters()), names)
    mask = None
    if set(names) != set(all_names):
        mask = {n: torch.full_like(p, n in names, dtype=torch.bool) for n, p in out.named_parameters()}
    device = next(out.parameters()).device
    config = FedConfig(local_epochs=1, lr=lr, batch_size=batch_size, momentum=momentum, seed=seed)
    result = Recovery(model=out, rounds=[])
    with stopwatch(result.cost):
        start = matching_round(out, server_data, history) if start_round is None else start_round
    _check_round(history, start)
    for k in range(steps):
        t = min(start + k, history.num_rounds)
        with stopwatch(result.cost):
            _projected_step_(out, server_data, history, t, names, config, derive_seed(seed, k), mask, result.cost)
        result.rounds.append(t)
        if evaluate is not None:
            result.log.append({"round": k + 1, "history_round": t, **evaluate(out)})
    return result


def _projected_step_(model: nn.Module, data, history: History, t: int, names: list[str], config: FedConfig,
                     seed: int, mask, cost: Cost) -> None:
    """One projected-boost step in place: an SGD epoch's direction with the length of round ``t``'s update."""
    device = next(model.parameters()).device
    before = state_copy(model)
    seen = local_train(model, data, config, torch.Generator().manual_seed(seed), device, mask)
    xb, yb = data.x[: config.batch_size].to(device), data.y[: config.batch_size].to(device)
    cost.add_compute(seen, train_flops_per_sample(model, xb, yb))
    direction = flat_state(state_copy(model), names) - flat_state(before, names)
    length = (flat_state(history.global_model(t), names) - flat_state(history.global_model(t - 1), names)).norm()
    norm = direction.norm()
    step = direction * (length.to(device) / norm) if norm > 0 else torch.zeros_like(direction)
    if mask is not None:  # only the named parameters move: buffers are restored too
        model.load_state_dict(before)
    _write_flat_(model, names, flat_state(before, names) + step)
