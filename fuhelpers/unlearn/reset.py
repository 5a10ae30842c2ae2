"""Resetting chosen parameter entries: the primitive of TIS and of Random Reset.

TIS resets the entries that carry the most information about the target data;
Random Reset (its baseline) resets as many, chosen at random. Both reset to the
initial (pre-training) values, as the TIS paper does, or to zero, as its
authors' code does.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..cost import tensor_bytes
from .base import require

RESET_VALUES = ("init", "zero")


def apply_reset_(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    value: str = "init",
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> int:
    """Reset the entries of ``model``'s parameters where ``masks[name]`` is True; return how many.

    Parameters
    ----------
    masks : dict of str to bool tensor
        Parameter name -> mask of the parameter's shape.
    value : {"init", "zero"}
        Reset to the initial (pre-training) values (TIS paper) or to zero
        (the TIS authors' code).
    init_state : dict, optional
        The model's initial state; required for ``value="init"``.
    """
    if value not in RESET_VALUES:
        raise ValueError(f"value must be one of {RESET_VALUES}, got {value!r}")
    require(value == "zero" or init_state is not None, "reset to init", "the initial state",
            "pass init_state (FedResult.initial_state) or use value='zero'")
    params = dict(model.named_parameters())
    total = 0
    with torch.no_grad():
        for name, mask in masks.items():
            if name not in params:
                raise KeyError(f"{name!r} is not a parameter of the model")
            p = params[name]
            if mask.shape != p.shape:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, parameter {tuple(p.shape)}")
            mask = mask.to(p.device)
            new = torch.zeros_like(p) if value == "zero" else init_state[name].to(p.device, p.dtype)
            p.copy_(torch.where(mask, new, p))
            total += int(mask.sum())
    return total


def reset_storage_bytes(value: str, init_state) -> int:
    """What a reset method keeps from training: the initial state to reset to (nothing for zeros)."""
    return tensor_bytes(init_state.values()) if value == "init" else 0
