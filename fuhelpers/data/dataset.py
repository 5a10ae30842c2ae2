"""The in-memory container every loader returns, and the argument checks it relies on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch


@dataclass(eq=False, repr=False)
class ArrayDataset(torch.utils.data.Dataset):
    """A labelled dataset held entirely in memory as tensors.

    Parameters
    ----------
    x : torch.Tensor
        Inputs, ``(N, C, H, W)`` float32 in ``[0, 1]`` for images, or ``(N, F)`` for tabular data.
    y : torch.Tensor
        Labels, ``(N,)``; integer tensors are converted to int64. Every label indexes ``classes``.
    classes : list of str
        Class names; ``classes[k]`` names label ``k``.
    domains : torch.Tensor, optional
        Domain id of each sample, ``(N,)`` int64, for domain datasets (PACS, Rotated/Colored MNIST).
    domain_names : list of str, optional
        ``domain_names[d]`` names domain ``d``; only meaningful together with ``domains``.

    Raises
    ------
    TypeError
        If ``x``, ``y`` or ``domains`` is not a tensor.
    ValueError
        If lengths disagree, labels are not integers or fall outside ``range(len(classes))``.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    domains: torch.Tensor | None = None
    domain_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.y = _as_label_tensor(self.y, "y")
        self.classes = list(self.classes)
        if not isinstance(self.x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(self.x).__name__}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        _check_ids_in_range(self.y, len(self.classes), "label", "classes")
        if self.domains is not None:
            self.domains = _as_label_tensor(self.domains, "domains")
            if len(self.domains) != len(self.y):
                raise ValueError(f"domains has {len(self.domains)} entries but there are {len(self.y)} samples")
        if self.domain_names is not None:
            if self.domains is None:
                raise ValueError("domain_names given without domains")
            self.domain_names = list(self.domain_names)
            _check_ids_in_range(self.domains, len(self.domain_names), "domain id", "domain_names")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __repr__(self) -> str:
        domains = "" if self.domain_names is None else f", domains={self.domain_names}"
        return (
            f"ArrayDataset(n={len(self)}, x={tuple(self.x.shape)} {self.x.dtype}, "
            f"classes={len(self.classes)}{domains})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def num_domains(self) -> int | None:
        """Number of named domains, or ``None`` for a dataset without domains."""
        return None if self.domain_names is None else len(self.domain_names)

    def subset(self, idx: Any) -> "ArrayDataset":
        """Return the samples at ``idx`` as a new dataset (tensors are indexed copies).

        Parameters
        ----------
        idx : array-like of int, or boolean mask of length ``len(self)``
            Which samples to keep, in the order given.

        Returns
        -------
        ArrayDataset
            Same classes, domains and domain names as ``self``.
        """
        index = _as_index_tensor(idx, len(self))
        return ArrayDataset(
            x=self.x[index],
            y=self.y[index],
            classes=list(self.classes),
            domains=None if self.domains is None else self.domains[index],
            domain_names=None if self.domain_names is None else list(self.domain_names),
        )


def _as_label_tensor(values: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(values).__name__}")
    if values.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(values.shape)}")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got dtype {values.dtype}")
    return values.long()


def _check_ids_in_range(ids: torch.Tensor, count: int, what: str, names: str) -> None:
    if len(ids) == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= count:
        raise ValueError(f"{what}s must lie in [0, {count}) to index {names}; found range [{low}, {high}]")


def _as_index_tensor(idx: Any, length: int) -> torch.Tensor:
    array = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
    if array.dtype == bool:
        if array.shape != (length,):
            raise ValueError(f"a boolean mask must have shape ({length},), got {array.shape}")
        array = np.flatnonzero(array)
    elif array.size == 0:
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"indices must be integers or a boolean mask, got dtype {array.dtype}")
    return torch.as_tensor(array.reshape(-1), dtype=torch.long)


def _check_probability(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _images_dataset(
    images_uint8: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    domains: np.ndarray | None = None,
    domain_names: Sequence[str] | None = None,
) -> ArrayDataset:
    """Wrap uint8 images ``(N, C, H, W)`` as float32 in ``[0, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).float().div_(255.0)
    return ArrayDataset(
        x=x,
        y=torch.as_tensor(labels, dtype=torch.long),
        classes=list(classes),
        domains=None if domains is None else torch.as_tensor(domains, dtype=torch.long),
        domain_names=None if domain_names is None else list(domain_names),
    )
