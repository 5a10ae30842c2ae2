"""Deterministic ways to take part of a dataset: stratified train/test splits and subsampling."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import ArrayDataset


def stratified_split_indices(
    labels: np.ndarray | torch.Tensor, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and test, keeping each class's share in both.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class of each sample.
    test_fraction : float, default 0.2
        Share of each class sent to the test part (rounded per class), in ``(0, 1)``.
    seed : int, default 0
        Seed of the per-class permutation.

    Returns
    -------
    train_idx, test_idx : numpy.ndarray
        Disjoint, sorted int64 indices whose union is ``range(N)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_parts.append(members[: int(round(test_fraction * len(members)))])
    test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx).astype(np.int64)
    return train_idx, test_idx


def stratified_split(
    ds: ArrayDataset, test_fraction: float = 0.2, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset]:
    """Split a dataset into stratified, disjoint train and test parts.

    Parameters
    ----------
    ds : ArrayDataset
        Dataset to split.
    test_fraction : float, default 0.2
        Share of each class put in the test part.
    seed : int, default 0
        Seed of the split.

    Returns
    -------
    train, test : ArrayDataset
        See :func:`stratified_split_indices`.
    """
    train_idx, test_idx = stratified_split_indices(ds.y.numpy(), test_fraction, seed)
    return ds.subset(train_idx), ds.subset(test_idx)


def _proportional_counts(class_sizes: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes in proportion to their sizes (largest remainder, ties to lower class)."""
    exact = class_sizes * n / class_sizes.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def subsample(ds: ArrayDataset, n: int, seed: int, stratified: bool = True) -> ArrayDataset:
    """Draw ``n`` samples without replacement, deterministically.

    Parameters
    ----------
    ds : ArrayDataset
        Dataset to draw from.
    n : int
        Number of samples; ``n >= len(ds)`` returns a copy of the whole dataset.
    seed : int
        Seed of the draw.
    stratified : bool, default True
        Keep each class's share: class ``k`` gets ``n * n_k / N`` samples, rounded by largest remainder
        (so a balanced dataset stays balanced to within one sample per class).

    Returns
    -------
    ArrayDataset
        The drawn samples, in their original order.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if n >= len(ds):
        return ds.subset(np.arange(len(ds)))
    rng = np.random.default_rng(seed)
    if not stratified:
        return ds.subset(np.sort(rng.choice(len(ds), size=n, replace=False)))
    labels = ds.y.numpy()
    present = np.unique(labels)
    counts = _proportional_counts(np.array([(labels == c).sum() for c in present]), n)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(present, counts)]
    return ds.subset(np.sort(np.concatenate(chosen)))
