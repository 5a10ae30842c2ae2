"""idx files, the format of MNIST and Fashion-MNIST: parsing, locating and checked reading."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .catalog import DIGIT_CLASSES, FASHION_MNIST_CLASSES
from .checksums import _read_sums, _verify_bytes_once
from .dataset import ArrayDataset, _images_dataset
from .errors import CORRUPT_HINT, DataIntegrityError, DatasetNotFoundError

# Published sha256 of the *decompressed* idx files. Gzip wrappers differ between mirrors, the content does not.
CANONICAL_IDX_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_file_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed when its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataIntegrityError(
            f"{path} is truncated or is not valid gzip ({type(err).__name__}: {err}). {CORRUPT_HINT}"
        ) from err
    except OSError as err:
        raise DataIntegrityError(f"Cannot read {path}: {err}") from err


def _parse_idx(content: bytes, source: str) -> np.ndarray:
    """Parse the bytes of an idx file; ``source`` names it in error messages."""
    if len(content) < 4 or content[:2] != b"\x00\x00" or content[2] not in _IDX_DTYPES or content[3] == 0:
        raise DataIntegrityError(
            f"{source} is not an idx file: bad magic number {content[:4].hex() or '(empty)'} "
            f"(expected 0000 then a type code in {sorted(hex(c) for c in _IDX_DTYPES)} and a dimension count)."
        )
    dtype, ndim = _IDX_DTYPES[content[2]], content[3]
    header_size = 4 + 4 * ndim
    try:
        dims = struct.unpack(f">{ndim}I", content[4:header_size])
    except struct.error as err:
        raise DataIntegrityError(f"{source}: header ends early, cannot read {ndim} dimensions") from err
    expected = math.prod(dims) * dtype.itemsize
    payload = len(content) - header_size
    if payload != expected:
        raise DataIntegrityError(
            f"{source}: dimensions {dims} need {expected} bytes of data but the file holds {payload}; "
            f"it is truncated or corrupt. {CORRUPT_HINT}"
        )
    return np.frombuffer(content, dtype=dtype, offset=header_size).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped (``.gz``) or raw.

    Parameters
    ----------
    path : str or path-like
        The file; a ``.gz`` suffix means gzip-compressed.

    Returns
    -------
    numpy.ndarray
        Array with the dtype and dimensions stored in the header (native byte order).

    Raises
    ------
    DataIntegrityError
        If the gzip stream is broken or truncated, the magic number is wrong, or the data size does not
        match the header.
    """
    path = Path(path)
    return _parse_idx(_read_file_bytes(path), str(path))


def _idx_folders(folder: Path, name: str) -> list[Path]:
    """Where idx files may sit: the dataset folder itself or torchvision's ``<Class>/raw`` layout."""
    torchvision_class = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name]
    return [folder, folder / torchvision_class / "raw"]


def _find_idx_file(folder: Path, base: str) -> Path | None:
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate_idx(folder: Path, name: str, split: str) -> Path | None:
    for candidate in _idx_folders(folder, name):
        if all(_find_idx_file(candidate, base) for base in _IDX_FILES[split]):
            return candidate
    return None


def _expected_idx_sha256(folder: Path, name: str, base: str) -> str:
    sums_file = folder / "SHA256SUMS.uncompressed"
    if sums_file.is_file():
        listed = _read_sums(sums_file).get(base)
        if listed is not None:
            return listed
    return CANONICAL_IDX_SHA256[name][base]


def _read_verified_idx(folder: Path, name: str, base: str) -> np.ndarray:
    path = _find_idx_file(folder, base)
    if path is None:
        raise DatasetNotFoundError(f"{folder / base}(.gz) is missing")
    content = _read_file_bytes(path)
    _verify_bytes_once(path, content, _expected_idx_sha256(folder, name, base), f"{path} (decompressed content)")
    return _parse_idx(content, str(path))


def _read_idx_dataset(folder: Path, name: str, split: str) -> ArrayDataset:
    images_base, labels_base = _IDX_FILES[split]
    images = _read_verified_idx(folder, name, images_base)
    labels = _read_verified_idx(folder, name, labels_base)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
        raise DataIntegrityError(
            f"{folder}: expected images (N, 28, 28) and labels (N,), got {images.shape} and {labels.shape}"
        )
    classes = DIGIT_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES
    return _images_dataset(images[:, None], labels.astype(np.int64), classes)
