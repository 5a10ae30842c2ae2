"""PACS at 64x64 (photo, art painting, cartoon, sketch), read from ``pacs-64.tar.gz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checksums import _verify_listed_file
from .dataset import ArrayDataset, _images_dataset
from .errors import DataIntegrityError
from .image_tar import _cache_file, _decode_image_tar, _load_cache, _natural_key, _save_cache


def _locate_pacs(folder: Path, split: str) -> Path | None:
    tar_path = folder / "pacs-64.tar.gz"
    return tar_path if tar_path.is_file() else None


def _read_pacs_tar(tar_path: Path, data_root_dir: Path) -> ArrayDataset:
    source_sha256 = _verify_listed_file(tar_path, data_root_dir)
    cached = _load_cache(_cache_file("pacs_all"), source_sha256)
    if cached is None:
        cached = _build_pacs_cache(tar_path)
        _save_cache(_cache_file("pacs_all"), cached, source_sha256)
    return _images_dataset(
        cached["x"], cached["y"], [str(c) for c in cached["classes"]],
        domains=cached["domains"], domain_names=[str(d) for d in cached["domain_names"]],
    )


def _build_pacs_cache(tar_path: Path) -> dict[str, np.ndarray]:
    """Decode ``<domain>/<class>/<file>``, ordered by domain, class, then file name (natural order)."""
    rows = []
    for parts, pixels in _decode_image_tar(tar_path, 64, "Decoding PACS (once)", 9991):
        if len(parts) < 3:
            raise DataIntegrityError(f"{tar_path}: member {'/'.join(parts)} is not <domain>/<class>/<file>")
        rows.append((parts[-3], parts[-2], _natural_key(parts[-1]), pixels))
    domain_names = sorted({row[0] for row in rows})
    classes = sorted({row[1] for row in rows})
    rows.sort(key=lambda row: (domain_names.index(row[0]), classes.index(row[1]), row[2]))
    return {
        "x": np.stack([row[3].transpose(2, 0, 1) for row in rows]),
        "y": np.array([classes.index(row[1]) for row in rows], dtype=np.int64),
        "domains": np.array([domain_names.index(row[0]) for row in rows], dtype=np.int64),
        "classes": np.array(classes),
        "domain_names": np.array(domain_names),
    }
