"""The Random Reset baseline (TIS paper, Sec. 6.2).

Random Reset resets exactly as many entries per layer as a reference method
(TIS) did, chosen uniformly at random, isolating the value of *which* entries
are reset from *how many*. Those counts are not free: with TIS as the
reference they come from its curvature round with every client, whose cost
(``RandomResetConfig.counts_cost``) Random Reset is charged.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..cost import Cost, stopwatch
from .base import Unlearned
from .reset import apply_reset_, reset_storage_bytes

NEEDS: set[str] = set()  # plus "init_state" when resetting to the initial values


def random_masks(model: nn.Module, counts: Mapping[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """For each parameter name, a mask with exactly ``counts[name]`` True entries, uniformly at random."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    masks = {}
    for name, k in counts.items():
        n = params[name].numel()
        if not 0 <= k <= n:
            raise ValueError(f"count for {name} must be in [0, {n}], got {k}")
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=gen)[:k]] = True
        masks[name] = flat.view(params[name].shape)
    return masks


@dataclass
class RandomResetConfig:
    """Random Reset settings.

    Attributes
    ----------
    counts : dict of str to int
        Entries to reset per parameter tensor (usually those TIS reset).
    value : {"init", "zero"}
        What reset entries become.
    init_state : dict, optional
        Initial state, needed for ``value="init"``.
    seed : int
        Seed of the random choice.
    counts_cost : Cost, optional
        What obtaining ``counts`` cost, charged to Random Reset: with TIS as the
        reference, its curvature round (``tis.unlearn(...).info["scoring_cost"]``:
        one round with every client, its bytes and FLOPs). None: counts given for free.
    """

    counts: dict[str, int] = field(default_factory=dict)
    value: str = "init"
    init_state: dict | None = None
    seed: int = 0
    counts_cost: Cost | None = None


def unlearn(model, federation, request, config: RandomResetConfig, history=None) -> Unlearned:
    """Reset ``config.counts`` random entries per layer.

    Parameters
    ----------
    model : nn.Module
        The trained model (left unchanged; a copy is returned).
    federation, request, history
        Accepted for the common signature; not used.
    config : RandomResetConfig

    Returns
    -------
    Unlearned
        ``cost``: the reset itself, the stored initial state, plus ``config.counts_cost``
        (the reference's scoring round, if given). ``info``: ``reset``, ``reset_fraction``, ``masks``.
    """
    cost = Cost(storage_bytes=reset_storage_bytes(config.value, config.init_state))
    with stopwatch(cost):
        out = copy.deepcopy(model)
        masks = random_masks(out, config.counts, config.seed)
        n = apply_reset_(out, masks, config.value, config.init_state)
    if config.counts_cost is not None:
        cost = cost + config.counts_cost
    total = sum(p.numel() for p in out.parameters())
    return Unlearned(out, cost, {"reset": n, "reset_fraction": n / total, "masks": masks})
