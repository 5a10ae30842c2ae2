"""The one face every unlearning method shares.

Each method module exposes ``unlearn(model, federation, request, config,
history=None) -> Unlearned`` and a ``NEEDS`` set naming what it requires
beyond the trained model:

``"clients"``   rounds with the retained clients,
``"history"``   a stored :class:`~fuhelpers.history.History`,
``"server_data"`` a held-out server set (``federation.server``),
``"target_data"`` access to the data to forget (on its clients),
``"init_state"`` the model before training.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..cost import Cost


class MissingRequirementError(RuntimeError):
    """A method was called without something it needs (history, server data, ...)."""


@dataclass
class Unlearned:
    """Result of an unlearning method.

    Attributes
    ----------
    model : nn.Module
        The unlearned model (a new object; the input model is never edited).
    cost : Cost
        What unlearning cost, counted the same way for every method.
    info : dict
        Method-specific diagnostics (e.g. the number of parameters reset).
    log : list of dict
        Per-round evaluations when the method trains in rounds.
    """

    model: nn.Module
    cost: Cost
    info: dict = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)


def require(condition: bool, method: str, what: str, how: str) -> None:
    """Raise :class:`MissingRequirementError` with a message that says how to fix it."""
    if not condition:
        raise MissingRequirementError(f"{method} needs {what}; {how}")


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with fresh parameters drawn under ``seed`` (global RNG left untouched)."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh
