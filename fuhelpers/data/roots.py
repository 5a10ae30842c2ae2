"""Where data files live: the data roots searched, in order, and the user cache.

File datasets (``mnist``, ``fashion_mnist``, ``cifar10``, ``pacs``) are looked up, in this order, in

1. the folder named by the environment variable ``FUHELPERS_DATA``;
2. ``../shared/data`` beside the repository (the offline copies kept for CI and developer machines);
3. the user cache, ``$FUHELPERS_CACHE`` or ``$XDG_CACHE_HOME/fuhelpers`` (default ``~/.cache/fuhelpers``),
   which is also where downloads go.

A dataset is taken from the first root that holds its files.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "FUHELPERS_DATA"
CACHE_ENV_VAR = "FUHELPERS_CACHE"


def cache_dir() -> Path:
    """Return the user cache folder for downloads and decoded-image caches.

    Returns
    -------
    pathlib.Path
        ``$FUHELPERS_CACHE`` if set, else ``$XDG_CACHE_HOME/fuhelpers``, else ``~/.cache/fuhelpers``.
        The folder is not created.
    """
    explicit = os.environ.get(CACHE_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fuhelpers"


def _repo_data_dir() -> Path:
    """``<repo>/../shared/data``, where ``<repo>`` holds the ``fuhelpers`` package."""
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data"


def _labelled_roots() -> list[tuple[Path, str]]:
    roots = []
    explicit = os.environ.get(DATA_ENV_VAR)
    if explicit:
        roots.append((Path(explicit).expanduser(), f"${DATA_ENV_VAR}"))
    roots.append((_repo_data_dir(), "../shared/data beside the repository"))
    roots.append((cache_dir(), "user cache"))
    return roots


def candidate_roots() -> list[Path]:
    """List the data roots searched, in order.

    Returns
    -------
    list of pathlib.Path
        ``$FUHELPERS_DATA`` (only when set), ``<repo>/../shared/data``, then :func:`cache_dir`.
        Roots are listed whether or not they exist.
    """
    return [path for path, _ in _labelled_roots()]


def data_root(create: bool = False) -> Path:
    """Return the preferred data root.

    Parameters
    ----------
    create : bool, default False
        Create the returned folder if it does not exist.

    Returns
    -------
    pathlib.Path
        ``$FUHELPERS_DATA`` when set (even if missing: an explicit setting wins), else
        ``<repo>/../shared/data`` when it exists, else the user cache :func:`cache_dir`.
    """
    explicit = os.environ.get(DATA_ENV_VAR)
    if explicit:
        root = Path(explicit).expanduser()
    elif _repo_data_dir().is_dir():
        root = _repo_data_dir()
    else:
        root = cache_dir()
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root
