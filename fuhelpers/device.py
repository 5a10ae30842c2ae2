"""Devices, seeds and threads: the three things every chapter sets first."""
from __future__ import annotations

import hashlib
import os
import platform
import random

import numpy as np
import torch

from .precision import native_bf16


def resolve_device(device=None, model: torch.nn.Module | None = None) -> torch.device:
    """The one device rule of the package: ``device`` when given, else where ``model`` lives, else the CPU.

    Parameters
    ----------
    device : torch.device or str, optional
    model : torch.nn.Module, optional
        A model without parameters lives on the CPU.
    """
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None) if model is not None else None
    return first.device if first is not None else torch.device("cpu")


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
        variable, else ``OMP_NUM_THREADS``, else the number of cores.
    """
    if n is None:
        n = int(os.environ.get("FUHELPERS_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


# Environment variables that change which CPU kernels torch runs, hence the rounding of every float result.
NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def cpu_model() -> str:
    """The CPU as the kernel names it, with family/model/stepping and a hash of its feature flags.

    Two CPUs sold under one name (say "AMD EPYC") can differ in features and so in the kernels torch picks;
    the flags hash tells them apart. Falls back to :func:`platform.processor` where ``/proc/cpuinfo`` is absent.
    """
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = hashlib.sha1(fields.get("flags", "").encode()).hexdigest()[:8]
    ident = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    return f"{fields.get('model name', platform.machine())} ({ident}, flags {flags})"


def numerics() -> dict[str, str]:
    """What decides the rounding of a CPU run: the CPU, torch's kernels, their caps, the thread count."""
    info = {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "threads": str(torch.get_num_threads())}
    info.update({k.lower(): os.environ[k] for k in NUMERICS_ENV if k in os.environ})
    return info


def same_numerics(provenance: dict) -> str | None:
    """None when a record was made with this process's :func:`numerics`, else what differs.

    Seeded CPU results are bitwise reproducible only under the same numerics: another CPU, another kernel
    cap or another thread count rounds differently, and at small scale the rounding moves results a lot.
    """
    here = {**numerics(), "device": str(try_gpu())}
    keys = sorted(set(here) | {k.lower() for k in NUMERICS_ENV if k.lower() in provenance} | {"device"})
    diff = [f"{k}: {provenance.get(k)!r} there, {here.get(k)!r} here" for k in keys if provenance.get(k) != here.get(k)]
    return "; ".join(diff) or None


def describe_environment() -> dict[str, str]:
    """Versions, hardware, CPU numerics (:func:`numerics`) and bf16 support, printed by every chapter's first cell."""
    import sklearn  # noqa: F401  (imported for its version only)

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "device": str(try_gpu()),
        **numerics(),
        "bf16": "native" if native_bf16(try_gpu()) else "emulated (the bf16 fast path runs in fp32 here)",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
