"""Downloads through torchvision, used only where torchvision works (Colab); never required."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .errors import _DownloadUnavailable


@functools.cache
def _torchvision_problem() -> str | None:
    """Why torchvision cannot be used here, or None when it imports."""
    try:
        import torchvision.datasets  # noqa: F401  (only for downloads; optional)
    except (ImportError, OSError, RuntimeError) as err:
        return f"torchvision is not importable ({type(err).__name__}: {err})"
    return None


def _import_torchvision_datasets() -> Any:
    """Return ``torchvision.datasets`` or raise _DownloadUnavailable with the reason."""
    problem = _torchvision_problem()
    if problem is not None:
        raise _DownloadUnavailable(problem)
    import torchvision.datasets

    return torchvision.datasets


def _download(name: str, split: str, target_root: Path) -> None:
    """Download ``name`` into ``target_root/<name>`` with torchvision (raises _DownloadUnavailable)."""
    if name == "pacs":
        raise _DownloadUnavailable(
            "PACS cannot be downloaded by this package; place pacs/pacs-64.tar.gz in a data root"
        )
    tv_datasets = _import_torchvision_datasets()
    loader = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}[name]
    try:
        getattr(tv_datasets, loader)(root=str(target_root / name), train=(split == "train"), download=True)
    except (OSError, RuntimeError) as err:
        raise _DownloadUnavailable(f"download failed ({type(err).__name__}: {err})") from err
