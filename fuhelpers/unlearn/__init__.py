"""Unlearning methods, one module each, all with the face
``unlearn(model, federation, request, config, history=None) -> Unlearned``.
"""
from . import dpul, federaser, finetune, foul, negation, random_reset, retrain, tis
from .base import MissingRequirementError, Unlearned, reinitialize

METHODS = {
    "retrain": retrain,
    "finetune": finetune,
    "random_reset": random_reset,
    "tis": tis,
    "negation": negation,
    "federaser": federaser,
    "dpul": dpul,
    "foul": foul,
}


def needs(method: str) -> set[str]:
    """What ``method`` needs beyond the trained model (see :mod:`fuhelpers.unlearn.base`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    return set(METHODS[method].NEEDS)


__all__ = ["METHODS", "MissingRequirementError", "Unlearned", "needs", "reinitialize"]
