"""Records: one JSON file per (experiment, scale, seed), written after every method so that a run resumes.

Layout: ``results/<experiment>/<scale>/seed<k>.json``::

    {"schema": 1, "experiment": str, "scale": str, "seed": int, "complete": bool,
     "provenance": {git_commit, date, versions, device, threads, CPU model and numerics, ...},
     "runs": [{"git_commit", "date", "wall_seconds"}, ...],        # one per invocation that computed something
     "scenarios": {scenario: {
         "fingerprint": str, "config": {"setting": ..., "methods": ...},
         "measures": {method: {measure: float}},   # raw, as each method finished
         "costs": {method: {seconds, rounds, bytes_up, bytes_down, flops, storage_bytes}},
         "logs": {method: [per-round dict, ...]}, "skipped": {method: reason},
         "commits": {method: git commit that produced it},
         "info": {method: {name: number}},         # optional: what a method reports (share reset, frozen, ...)
         "rows": {method: {measures, scores, cost columns}},  # derived once every method has run
         "complete": bool, "wall_seconds": float}}}

Non-finite floats are stored as ``null``.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ..device import describe_environment
from ..results import _jsonable, git_commit, results_dir

SCHEMA = 1
RECORD_KEYS = ("schema", "experiment", "scale", "seed", "complete", "provenance", "runs", "scenarios")
SCENARIO_KEYS = ("fingerprint", "config", "measures", "costs", "logs", "skipped", "commits", "rows", "complete",
                 "wall_seconds")


def path(experiment: str, scale: str, seed: int, root=None) -> Path:
    """Where the record of (experiment, scale, seed) lives."""
    return results_dir(root) / experiment / scale / f"seed{seed}.json"


def new(experiment: str, scale: str, seed: int) -> dict:
    """An empty record with this machine's provenance."""
    provenance = {"git_commit": git_commit(), "date": _today(), **describe_environment()}
    return {"schema": SCHEMA, "experiment": experiment, "scale": scale, "seed": seed, "complete": False,
            "provenance": provenance, "runs": [], "scenarios": {}}


def new_scenario(fingerprint: str, config: dict) -> dict:
    return {"fingerprint": fingerprint, "config": config, "measures": {}, "costs": {}, "logs": {}, "skipped": {},
            "commits": {}, "rows": {}, "complete": False, "wall_seconds": 0.0}


def save(record: dict, root=None) -> Path:
    """Write ``record`` atomically (a run killed mid-write leaves the previous file intact)."""
    validate(record)
    target = path(record["experiment"], record["scale"], record["seed"], root)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(record), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return target


def load(experiment: str, scale: str, seed: int, root=None) -> dict | None:
    """The record, or None if there is none."""
    p = path(experiment, scale, seed, root)
    if not p.exists():
        return None
    record = json.loads(p.read_text())
    validate(record)
    return record


def load_all(experiment: str, scale: str, root=None, complete_only: bool = True) -> list[dict]:
    """Every record of (experiment, scale), by seed; by default only finished ones."""
    folder = results_dir(root) / experiment / scale
    found = sorted(folder.glob("seed*.json"), key=lambda p: int(p.stem[4:])) if folder.exists() else []
    records = [load(experiment, scale, int(p.stem[4:]), root) for p in found]
    return [r for r in records if r["complete"] or not complete_only]


def validate(record: dict) -> None:
    """Raise ``ValueError`` if ``record`` does not follow the schema of this module."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")
    if record["schema"] != SCHEMA:
        raise ValueError(f"record schema {record['schema']}, this code reads {SCHEMA}")
    for name, sc in record["scenarios"].items():
        lacking = [k for k in SCENARIO_KEYS if k not in sc]
        if lacking:
            raise ValueError(f"scenario {name!r} of the record lacks {lacking}")
        if sc["complete"] and set(sc["rows"]) != set(sc["measures"]):
            raise ValueError(f"scenario {name!r} is complete but its rows and measures differ")
        for method, row in sc["rows"].items():
            if not isinstance(row, dict):
                raise ValueError(f"row {method!r} of scenario {name!r} is not a dict")


def start_run() -> dict:
    """One entry of ``runs``: this invocation's commit and date (its wall time is filled in as it goes)."""
    return {"git_commit": git_commit(), "date": _today(), "wall_seconds": 0.0}


def _today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
