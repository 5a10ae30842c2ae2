"""Datasets read from files: find them in the data roots, else download them, else explain what to do."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .cifar10 import _locate_cifar10, _read_cifar10
from .dataset import ArrayDataset
from .download import _download
from .errors import FIX_HINT, DatasetNotFoundError, _DownloadUnavailable
from .idx import _locate_idx, _read_idx_dataset
from .pacs import _locate_pacs, _read_pacs_tar
from .roots import DATA_ENV_VAR, _labelled_roots, cache_dir

_LOCATORS: dict[str, Callable[[Path, str], Path | None]] = {
    "mnist": lambda folder, split: _locate_idx(folder, "mnist", split),
    "fashion_mnist": lambda folder, split: _locate_idx(folder, "fashion_mnist", split),
    "cifar10": _locate_cifar10,
    "pacs": _locate_pacs,
}


def _read_located(name: str, source: Path, split: str, root: Path) -> ArrayDataset:
    if name in ("mnist", "fashion_mnist"):
        return _read_idx_dataset(source, name, split)
    if name == "cifar10":
        return _read_cifar10(source, split, root)
    return _read_pacs_tar(source, root)


def _not_found_message(name: str, looked: list[tuple[Path, str]], download_note: str) -> str:
    lines = [f"Dataset {name!r} was not found. Looked in:"]
    lines += [f"  - {path / name}  ({label})" for path, label in looked]
    if not os.environ.get(DATA_ENV_VAR):
        lines.append(f"  ({DATA_ENV_VAR} is not set.)")
    lines.append(f"Download: {download_note}.")
    lines.append(FIX_HINT)
    return "\n".join(lines)


def _load_file_dataset(name: str, split: str, root: str | os.PathLike | None, download: bool | None) -> ArrayDataset:
    looked = [(Path(root).expanduser(), "root argument")] if root is not None else _labelled_roots()
    for path, _ in looked:
        source = _LOCATORS[name](path / name, split)
        if source is not None:
            return _read_located(name, source, split, path)
    if download is False:
        raise DatasetNotFoundError(_not_found_message(name, looked, "not attempted (download=False)"))
    target_root = looked[0][0] if root is not None else cache_dir()
    try:
        _download(name, split, target_root)
    except _DownloadUnavailable as err:
        raise DatasetNotFoundError(_not_found_message(name, looked, f"not possible: {err}")) from err
    source = _LOCATORS[name](target_root / name, split)
    if source is None:
        raise DatasetNotFoundError(
            _not_found_message(name, looked, f"finished but no files were found in {target_root / name}")
        )
    return _read_located(name, source, split, target_root)


def _is_on_disk(name: str, roots: list[Path]) -> bool:
    """Whether the train split of file dataset ``name`` sits in one of ``roots``."""
    return any(_LOCATORS[name](root / name, "train") is not None for root in roots)
