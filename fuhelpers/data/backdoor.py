"""Backdoor helpers: a white square in a corner (as in the TIS paper), poisoned training sets, triggered tests."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import ArrayDataset, _check_probability

_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _trigger_slices(height: int, width: int, size: int, corner: str) -> tuple[slice, slice]:
    if corner not in _CORNERS:
        raise ValueError(f"corner must be one of {_CORNERS}, got {corner!r}")
    if not 1 <= size <= min(height, width):
        raise ValueError(f"trigger size must lie in [1, {min(height, width)}] for {height}x{width} images, got {size}")
    rows = slice(0, size) if corner.startswith("top") else slice(height - size, height)
    cols = slice(0, size) if corner.endswith("left") else slice(width - size, width)
    return rows, cols


def _check_target(target: int, ds: ArrayDataset) -> None:
    if not 0 <= target < ds.num_classes:
        raise ValueError(f"target must be a class id in [0, {ds.num_classes}), got {target}")


def stamp_trigger(
    x: torch.Tensor, size: int = 3, corner: str = "bottom_right", value: float = 1.0
) -> torch.Tensor:
    """Stamp a ``size x size`` square of ``value`` into a corner of every image, in all channels.

    Parameters
    ----------
    x : torch.Tensor
        One image ``(C, H, W)`` or a batch ``(N, C, H, W)``; not modified.
    size : int, default 3
        Side of the square in pixels.
    corner : {"top_left", "top_right", "bottom_left", "bottom_right"}, default "bottom_right"
    value : float, default 1.0
        Pixel value of the trigger (1.0 is white).

    Returns
    -------
    torch.Tensor
        A stamped copy of ``x``.
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    rows, cols = _trigger_slices(x.shape[-2], x.shape[-1], size, corner)
    stamped = x.clone()
    stamped[..., rows, cols] = value
    return stamped


def poison(
    ds: ArrayDataset,
    fraction: float,
    target: int,
    seed: int,
    size: int = 3,
    corner: str = "bottom_right",
    exclude_target: bool = True,
) -> tuple[ArrayDataset, np.ndarray]:
    """Backdoor a dataset: stamp the trigger on some samples and relabel them to ``target``.

    Parameters
    ----------
    ds : ArrayDataset
        Clean images ``(N, C, H, W)``.
    fraction : float
        Share of the eligible samples to poison, in ``[0, 1]``; ``round(fraction * eligible)`` are drawn.
    target : int
        Label given to every poisoned sample.
    seed : int
        Seed of the draw.
    size, corner
        Trigger, as in :func:`stamp_trigger`.
    exclude_target : bool, default True
        Only samples whose label differs from ``target`` are eligible.

    Returns
    -------
    poisoned : ArrayDataset
        A copy of ``ds`` with the chosen samples stamped and relabelled.
    indices : numpy.ndarray
        Sorted int64 positions of the poisoned samples.
    """
    _check_probability(fraction, "fraction")
    _check_target(target, ds)
    labels = ds.y.numpy()
    eligible = np.flatnonzero(labels != target) if exclude_target else np.arange(len(ds))
    count = int(round(fraction * len(eligible)))
    chosen = np.sort(np.random.default_rng(seed).choice(eligible, size=count, replace=False)).astype(np.int64)
    index = torch.as_tensor(chosen)
    x, y = ds.x.clone(), ds.y.clone()
    x[index] = stamp_trigger(ds.x[index], size, corner)
    y[index] = target
    poisoned = ArrayDataset(x=x, y=y, classes=list(ds.classes),
                            domains=None if ds.domains is None else ds.domains.clone(),
                            domain_names=None if ds.domain_names is None else list(ds.domain_names))
    return poisoned, chosen


def triggered_testset(
    test: ArrayDataset, target: int, size: int = 3, corner: str = "bottom_right", relabel: bool = True
) -> ArrayDataset:
    """The test samples of every class but ``target``, stamped with the trigger.

    Parameters
    ----------
    test : ArrayDataset
        Clean test set.
    target : int
        The backdoor's target class; its samples are dropped.
    size, corner
        Trigger, as in :func:`stamp_trigger`.
    relabel : bool, default True
        ``True``: every label is ``target``, so accuracy on this set is the attack success rate.
        ``False``: true labels are kept, so accuracy is the backdoor accuracy (how often the model
        still predicts the right class despite the trigger).

    Returns
    -------
    ArrayDataset
    """
    _check_target(target, test)
    kept = test.subset(np.flatnonzero(test.y.numpy() != target))
    kept.x = stamp_trigger(kept.x, size, corner)
    if relabel:
        kept.y = torch.full_like(kept.y, target)
    return kept
