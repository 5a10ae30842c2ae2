"""Unlearning methods, one module each, all with the face
``unlearn(model, federation, request, config, history=None) -> Unlearned`` and a ``NEEDS`` set.

The one registry of methods (names, labels, options, where each applies) is
:data:`fuhelpers.experiments.METHODS`.
"""
from . import dpul, federaser, finetune, foul, negation, random_reset, reset, retrain, tis
from .base import MissingRequirementError, Unlearned, reinitialize

__all__ = ["MissingRequirementError", "Unlearned", "dpul", "federaser", "finetune", "foul", "negation",
           "random_reset", "reinitialize", "reset", "retrain", "tis"]
