"""One progress bar for every long loop, switched off with ``FUHELPERS_PROGRESS=0``.

CI and the committed notebook runs switch bars off: their text would differ
from run to run, and nbval compares text outputs.
"""
from __future__ import annotations

import os

from tqdm.auto import tqdm

PROGRESS_ENV_VAR = "FUHELPERS_PROGRESS"


def progress_enabled(progress: bool | None = None) -> bool:
    """``progress`` if given, else whether ``FUHELPERS_PROGRESS`` is not ``"0"``."""
    if progress is not None:
        return progress
    return os.environ.get(PROGRESS_ENV_VAR, "1") != "0"


def progress(iterable=None, *, desc: str | None = None, total: int | None = None, enabled: bool | None = None,
             **kwargs):
    """A ``tqdm.auto`` bar over ``iterable`` that respects :func:`progress_enabled`.

    Parameters
    ----------
    iterable : iterable, optional
    desc : str, optional
        Label shown before the bar.
    total : int, optional
        Length, when ``iterable`` has none.
    enabled : bool, optional
        Force the bar on or off.
    """
    return tqdm(iterable, desc=desc, total=total, disable=not progress_enabled(enabled), leave=False, **kwargs)
