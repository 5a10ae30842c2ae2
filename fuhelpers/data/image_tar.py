"""Image archives (``.tar.gz`` of JPEG/PNG files) decoded in one pass, and their ``.npz`` cache."""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..progress import PROGRESS_ENV_VAR, progress as progress_bar  # noqa: F401  (re-exported)
from .errors import CORRUPT_HINT, DataIntegrityError
from .roots import cache_dir


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
_CACHE_FORMAT = 1


def _natural_key(text: str) -> list[Any]:
    """Sort key that orders ``pic_2`` before ``pic_10``."""
    return [int(token) if token.isdigit() else token for token in re.split(r"(\d+)", text)]


def _is_image_member(member: tarfile.TarInfo) -> bool:
    name = Path(member.name)
    return member.isfile() and name.suffix.lower() in _IMAGE_SUFFIXES and not name.name.startswith(".")


def _decode_image(content: bytes, where: str, size: int) -> np.ndarray:
    """Decode one image to ``(size, size, 3)`` uint8 RGB."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataIntegrityError(f"{where} is not a readable image ({err}). {CORRUPT_HINT}") from err
    if pixels.shape != (size, size, 3):
        raise DataIntegrityError(f"{where}: expected a {size}x{size} image, got {pixels.shape[1]}x{pixels.shape[0]}")
    return pixels


def _decode_image_tar(
    path: Path, size: int, desc: str, expected_count: int | None = None
) -> list[tuple[list[str], np.ndarray]]:
    """Decode every image in a ``.tar.gz`` without extracting it: ``[(path parts, HWC uint8), ...]``.

    The archive is streamed once (``r|gz``); ``expected_count`` only sizes the progress bar.
    """
    decoded = []
    try:
        with tarfile.open(path, "r|gz") as archive, progress_bar(total=expected_count, desc=desc,
                                                                  unit="img") as progress:
            for member in archive:
                if not _is_image_member(member):
                    continue
                content = archive.extractfile(member).read()
                parts = [part for part in member.name.split("/") if part not in ("", ".")]
                decoded.append((parts, _decode_image(content, f"{path}:{member.name}", size)))
                progress.update()
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataIntegrityError(
            f"{path} is truncated or is not a valid .tar.gz ({type(err).__name__}: {err}). {CORRUPT_HINT}"
        ) from err
    except OSError as err:
        raise DataIntegrityError(f"Cannot read {path}: {err}") from err
    if not decoded:
        raise DataIntegrityError(f"{path} holds no images")
    return decoded


def _cache_file(stem: str) -> Path:
    return cache_dir() / f"{stem}.npz"


def _load_cache(path: Path, source_sha256: str) -> dict[str, np.ndarray] | None:
    """Arrays of a decoded-image cache, or None when absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"Ignoring unreadable cache {path} ({err}); rebuilding it.", stacklevel=3)
        return None
    fresh = (
        str(arrays.get("source_sha256", "")) == source_sha256
        and int(arrays.get("format", -1)) == _CACHE_FORMAT
    )
    return arrays if fresh else None


def _save_cache(path: Path, arrays: dict[str, np.ndarray], source_sha256: str) -> None:
    """Write a cache atomically; a read-only cache folder only costs speed, so it warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays, source_sha256=np.array(source_sha256), format=np.array(_CACHE_FORMAT))
        os.replace(temporary, path)
    except OSError as err:
        warnings.warn(f"Could not write the cache {path} ({err}); images will be decoded again next time.",
                      stacklevel=3)
