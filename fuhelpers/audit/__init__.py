"""Per-example privacy audit: LiRA and RMIA with reference federations, judged by TPR at low FPR.

:mod:`~fuhelpers.audit.attacks` holds the statistics (arrays in, arrays out);
:mod:`~fuhelpers.audit.reference` trains the reference federations of one request and audits a model.
"""
from .attacks import FPRS, balanced_masks, evaluate, fpr_key, lira, logit_confidence, rmia, roc_points, tpr_at_fpr, \
    true_class_probability
from .reference import ATTACKS, References, attack_scores, audit, candidates, load_or_train, \
    train_references

__all__ = ["ATTACKS", "FPRS", "References", "attack_scores", "audit", "balanced_masks", "candidates",
           "evaluate", "fpr_key", "lira", "load_or_train", "logit_confidence", "rmia", "roc_points", "tpr_at_fpr",
           "train_references", "true_class_probability"]
