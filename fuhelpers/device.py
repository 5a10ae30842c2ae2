"""Devices, seeds and threads: the three things every chapter sets first."""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch


def try_gpu(i: int = 0) -> torch.device:
    """Return ``cuda:i`` when that GPU exists, else the CPU (as in d2l).

    Parameters
    ----------
    i : int
        Index of the GPU to use.
    """
    if torch.cuda.is_available() and torch.cuda.device_count() > i:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators.

    The library itself never relies on these global generators for data
    order or client sampling (it derives explicit generators from ``seed``
    arguments); seeding them makes model initialisation reproducible.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def set_threads(n: int | None = None) -> int:
    """Fix the number of torch CPU threads and return it.

    Two torch threads collapse when another CPU-bound process shares the
    machine, so tests and parallel runs set this deliberately.

    Parameters
    ----------
    n : int, optional
        Threads to use; default: the ``FUHELPERS_THREADS`` environment
        variable, else the number of cores.
    """
    if n is None:
        n = int(os.environ.get("FUHELPERS_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def default_scale() -> str:
    """``"full"`` when a GPU is present, else ``"smoke"`` (the notebooks' default)."""
    return "full" if torch.cuda.is_available() else "smoke"


def describe_environment() -> dict[str, str]:
    """Versions and hardware, printed by every chapter's first cell."""
    import sklearn  # noqa: F401  (imported for its version only)

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "device": str(try_gpu()),
        "threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
