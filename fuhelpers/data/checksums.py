"""sha256 checks of data files, each done at most once per process."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import CORRUPT_HINT, DataIntegrityError

# Files already checked in this process, keyed by (path, size, mtime, expected hash).
_VERIFIED: set[tuple[str, int, int, str]] = set()
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process per (path, size, mtime)."""
    key = _file_key(path)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def _read_sums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum`` file (``<hash>  <name>`` per line) into ``{name: hash}``."""
    sums = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            raise DataIntegrityError(f"{path}, line {number}: expected '<sha256>  <file>', got {line!r}")
        sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def _check_sha256(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise DataIntegrityError(
            f"Checksum mismatch for {what}: expected sha256 {expected}, got {actual}. "
            f"The file is corrupt or is not the published version. {CORRUPT_HINT}"
        )


def _verify_bytes_once(path: Path, content: bytes, expected: str, what: str) -> None:
    key = (*_file_key(path), expected)
    if key in _VERIFIED:
        return
    _check_sha256(hashlib.sha256(content).hexdigest(), expected, what)
    _VERIFIED.add(key)


def _verify_listed_file(path: Path, data_root_dir: Path) -> str:
    """Check ``path`` against ``<data root>/SHA256SUMS`` when that lists it; return its sha256."""
    actual = _file_sha256(path)
    sums_file = data_root_dir / "SHA256SUMS"
    if sums_file.is_file():
        relative = path.relative_to(data_root_dir).as_posix()
        expected = _read_sums(sums_file).get(relative)
        if expected is not None:
            _check_sha256(actual, expected, f"{path} (listed in {sums_file})")
    return actual
