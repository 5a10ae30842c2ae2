"""Results records: each chapter writes its headline numbers to ``results/<notebook-stem>.json``.

One file per chapter holds one entry per scale (``"smoke"``, ``"full"``), so a
smoke run never overwrites the committed full-scale numbers. Each entry keeps
its provenance: seed, device, git commit, wall time, date and versions.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import subprocess
from pathlib import Path

import torch

from .device import describe_environment


def repo_root() -> Path:
    """The repository holding the package (``fuhelpers/..``)."""
    return Path(__file__).resolve().parents[1]


def results_dir(root: str | Path | None = None) -> Path:
    """``<repo>/results`` unless ``root`` is given."""
    return Path(root) if root is not None else repo_root() / "results"


def git_commit() -> str:
    """Short hash of ``HEAD``, with ``-dirty`` when tracked files outside ``results/`` changed; ``"unknown"`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
                              text=True, check=True).stdout.strip()
        # records being written (results/) are not code: they do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=repo_root(), capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_results(stem: str, record: dict, *, scale: str, seed: int, wall_seconds: float,
                 root: str | Path | None = None, **provenance) -> Path:
    """Write ``record`` under ``scale`` in ``results/<stem>.json``, keeping the other scales.

    Parameters
    ----------
    stem : str
        The notebook's file stem, e.g. ``"01_federated_learning"``.
    record : dict
        The chapter's headline numbers (floats, ints, nested dicts).
    scale : {"smoke", "full"}
    seed : int
    wall_seconds : float
        Wall time of the whole notebook run.
    provenance : extra keys stored with the record (e.g. ``dataset="mnist"``).

    Returns
    -------
    Path of the written file.
    """
    path = results_dir(root) / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[scale] = {
        "provenance": {
            "seed": seed,
            "git_commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
            "wall_seconds": round(wall_seconds, 1),
            **describe_environment(),
            **provenance,
        },
        "results": _jsonable(record),
    }
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def load_results(stem: str, scale: str = "full", root: str | Path | None = None) -> dict | None:
    """The stored entry ``{"provenance": ..., "results": ...}`` for ``scale``, or None if absent."""
    path = results_dir(root) / f"{stem}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(scale)
