"""CIFAR-10 in either layout: the offline JPEG archive or torchvision's python batches."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import CIFAR10_CLASSES
from .checksums import _verify_listed_file
from .dataset import ArrayDataset, _images_dataset
from .errors import CORRUPT_HINT, DataIntegrityError
from .image_tar import _cache_file, _decode_image_tar, _load_cache, _natural_key, _save_cache

_JPEG_TAR = "cifar10-jpeg.tar.gz"
_BATCHES_FOLDER = "cifar-10-batches-py"


def _batch_names(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _locate_cifar10(folder: Path, split: str) -> Path | None:
    tar_path = folder / _JPEG_TAR
    if tar_path.is_file():
        return tar_path
    batches = folder / _BATCHES_FOLDER
    if all((batches / name).is_file() for name in _batch_names(split)):
        return batches
    return None


def _read_cifar10(source: Path, split: str, data_root_dir: Path) -> ArrayDataset:
    """Read what :func:`_locate_cifar10` found: a batches folder or the JPEG archive."""
    if source.is_dir():
        return _read_cifar_python_batches(source, split)
    return _read_cifar_jpeg_tar(source, split, data_root_dir)


# ---------------------------------------------------------------------------------------------
# Class names
# ---------------------------------------------------------------------------------------------


def _read_cifar_meta(path: Path) -> list[str]:
    """Class names from ``batches.meta``: the canonical pickle, or one name per line."""
    if path.read_bytes()[:1] == b"\x80":  # every pickle of protocol 2 or later starts with PROTO
        meta = _safe_unpickle(path)
        if not isinstance(meta, dict) or "label_names" not in meta:
            raise DataIntegrityError(f"{path} has no 'label_names' entry")
        names = [name.decode() if isinstance(name, bytes) else str(name) for name in meta["label_names"]]
    else:
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as err:
            raise DataIntegrityError(f"{path} is neither a pickle nor a text list of class names") from err
    if not names or len(set(names)) != len(names):
        raise DataIntegrityError(f"{path}: expected distinct class names, got {names}")
    return names


def _cifar_classes(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    return _read_cifar_meta(meta) if meta.is_file() else list(CIFAR10_CLASSES)


# ---------------------------------------------------------------------------------------------
# The offline JPEG archive
# ---------------------------------------------------------------------------------------------


def _build_cifar_jpeg_cache(tar_path: Path, classes: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Decode ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg``, ordered by class then NNNN."""
    records: dict[str, list[tuple[int, list[Any], np.ndarray]]] = {"train": [], "test": []}
    for parts, pixels in _decode_image_tar(tar_path, 32, "Decoding CIFAR-10 (once)", 60000):
        if len(parts) < 3 or parts[-3] not in records or parts[-2] not in classes:
            raise DataIntegrityError(
                f"{tar_path}: unexpected member {'/'.join(parts)}; expected <train|test>/<class>/<NNNN>.jpg "
                f"with class in {classes}"
            )
        split, class_name, file_name = parts[-3:]
        records[split].append((classes.index(class_name), _natural_key(file_name), pixels))
    arrays = {}
    for split, rows in records.items():
        rows.sort(key=lambda row: (row[0], row[1]))
        arrays[split] = {
            "x": np.stack([pixels.transpose(2, 0, 1) for _, _, pixels in rows]) if rows
            else np.zeros((0, 3, 32, 32), np.uint8),
            "y": np.array([label for label, _, _ in rows], dtype=np.int64),
            "classes": np.array(classes),
        }
    return arrays


def _read_cifar_jpeg_tar(tar_path: Path, split: str, data_root_dir: Path) -> ArrayDataset:
    source_sha256 = _verify_listed_file(tar_path, data_root_dir)
    cached = _load_cache(_cache_file(f"cifar10_{split}"), source_sha256)
    if cached is None:
        built = _build_cifar_jpeg_cache(tar_path, _cifar_classes(tar_path.parent))
        for name, arrays in built.items():
            _save_cache(_cache_file(f"cifar10_{name}"), arrays, source_sha256)
        cached = built[split]
    return _images_dataset(cached["x"], cached["y"], [str(c) for c in cached["classes"]])


# ---------------------------------------------------------------------------------------------
# torchvision's python batches
# ---------------------------------------------------------------------------------------------


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays: pickles from a data folder are not trusted code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only the allowed numpy globals; refuse everything else."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 renamed numpy.core
        return super().find_class(module, name)


def _safe_unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return _SafeUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, struct.error) as err:
        raise DataIntegrityError(f"{path} is truncated or not a valid pickle ({err}). {CORRUPT_HINT}") from err
    except OSError as err:
        raise DataIntegrityError(f"Cannot read {path}: {err}") from err


def _read_cifar_python_batches(folder: Path, split: str) -> ArrayDataset:
    """Read ``cifar-10-batches-py`` (canonical order) into an ArrayDataset."""
    images, labels = [], []
    for name in _batch_names(split):
        batch = _safe_unpickle(folder / name)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(batch["labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as err:
            raise DataIntegrityError(f"{folder / name} is not a CIFAR-10 batch ({err})") from err
        if len(data) != len(batch_labels):
            raise DataIntegrityError(f"{folder / name}: {len(data)} images but {len(batch_labels)} labels")
        images.append(data)
        labels.append(batch_labels)
    return _images_dataset(np.concatenate(images), np.concatenate(labels), _cifar_classes(folder))
