"""What every chapter does before its first line of content."""
from __future__ import annotations

import time

import pandas as pd

from .device import describe_environment, set_threads


def setup_notebook(threads: int | None = None, precision: int = 3) -> float:
    """Fix the torch threads, set pandas' display precision, print the environment; return the start time.

    Parameters
    ----------
    threads : int, optional
        Passed to :func:`fuhelpers.device.set_threads`.
    precision : int
        Digits pandas shows.

    Returns
    -------
    float
        ``time.perf_counter()`` at the start, for the chapter's wall time.
    """
    start = time.perf_counter()
    set_threads(threads)
    pd.set_option("display.precision", precision)
    for key, value in describe_environment().items():
        print(f"{key:>8}: {value}")
    return start
