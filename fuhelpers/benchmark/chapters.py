"""Each method chapter's smoke setting, expressed as a benchmark :class:`Setting`.

The benchmark must give every method the numbers its own chapter gives. A
:class:`ChapterCheck` rebuilds one chapter's setting with the benchmark's code
path (:func:`run_seed`: ``prepare``, the method runners, ``measure``) and reads the chapter's committed record (``results/<stem>.json``), so that
the two can be compared number by number (``tests/test_benchmark_agreement.py``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import results as results_io
from .run import run_seed
from .setting import Setting

# the chapters' small CNN at smoke scale
CNN = dict(width=(16, 32), hidden=64)


@dataclass(frozen=True)
class ChapterCheck:
    """One chapter's smoke setting and where its numbers are.

    Attributes
    ----------
    stem : str
        The chapter's notebook stem (its record is ``results/<stem>.json``).
    scenario : str
        The benchmark scenario with the chapter's kind of request.
    setting : Setting
        The chapter's sizes, seeds offsets and method options.
    seeds : tuple of int
        The chapter's seeds at smoke scale (its record holds their mean).
    key : str or None
        The entry of the chapter's record holding the methods (None: the top level).
    methods : dict
        Chapter's method name -> benchmark row name (``"original"``, ``"foul_start"`` or a key of METHODS).
    measures : dict
        Chapter's measure name -> benchmark measure name.
    """

    stem: str
    scenario: str
    setting: Setting
    seeds: tuple
    key: str | None
    methods: dict
    measures: dict


CHAPTERS = {
    "02_tis": ChapterCheck(
        "02_tis", "categorical",
        # TIS at the gamma the chapter chose for each seed (gamma None: read from its record)
        Setting(dataset="fashion_mnist", n_train=2000, n_test=1000, n_server=0, test_seed_offset=1, num_clients=5,
                arch_kwargs=CNN, num_rounds=8, local_epochs=3, options={"tis": {"gamma": None}}),
        (0, 1), "fashion_mnist/preferential",
        {"original": "original", "retrain": "retrain", "tis": "tis", "random_reset": "random_reset"},
        {"test_acc": "test_acc", "target_acc": "target_acc"}),
    "03_not": ChapterCheck(
        "03_not", "iid",
        Setting(dataset="fashion_mnist", n_train=1000, n_test=1000, n_server=0, num_clients=10, arch_kwargs=CNN,
                num_rounds=10, local_epochs=5, recovery_rounds=5),
        (0,), "fashion_mnist/mnist_cnn/random",
        {"original": "original", "retrain": "retrain", "ft": "ft", "not": "not"},
        {"retain_acc": "retain_acc", "forget_acc": "forget_acc", "test_acc": "test_acc", "mia": "mia_acc"}),
    "04_foul": ChapterCheck(
        "04_foul", "domain",
        Setting(dataset="rotated_mnist", n_train=1600, n_test=1200, n_server=0, num_clients=8, arch_kwargs=CNN,
                num_rounds=10, local_epochs=2, recovery_rounds=5, options={"foul": {"num_rounds": 20}}),
        (0,), None,
        {"original": "original", "retrain": "retrain", "ft": "ft", "not": "not", "foul_l2u": "foul_start",
         "foul": "foul"},
        {"fa": "forget_acc", "ra": "retain_acc", "ta": "test_acc", "mia": "mia_acc"}),
    "05_dpul": ChapterCheck(
        "05_dpul", "backdoor",
        Setting(dataset="mnist", n_train=3000, n_test=1000, n_server=200, num_clients=10, target_client="largest",
                poison_fraction=0.8, split="dirichlet", arch_kwargs=CNN, num_rounds=10, local_epochs=3,
                recovery_rounds=5, recovery_seed_offset=1,
                options={"dpul": {"vae_epochs": 50, "recovery_steps": 5}}),
        (0,), None,
        {"original": "original", "retrain": "retrain", "ft": "ft", "federaser": "federaser",
         "federaser_direction": "federaser_direction", "dpul": "dpul"},
        {"test_acc": "test_acc", "backdoor_asr": "asr", "forget_acc": "forget_acc", "mia": "mia_acc"}),
}


def chapter_record(check: ChapterCheck, scale: str = "smoke", root=None) -> dict:
    """The chapter's committed methods record (``{method: {measure: value}}``) at ``scale``."""
    saved = results_io.load_results(check.stem, scale, root=root)
    if saved is None:
        raise FileNotFoundError(f"results/{check.stem}.json has no {scale!r} entry: run the chapter first")
    record = saved["results"]
    return record[check.key] if check.key else record


def seed_settings(check: ChapterCheck, record: dict) -> list[Setting]:
    """One setting per seed, with what the chapter chose at run time filled in from its record.

    Chapter 2 picks TIS's gamma per seed (closest (NTA, NFS) to (1, 1)); its record keeps them as
    ``tis.gammas``. Options left as None in ``check.setting`` are taken from there.
    """
    tis = check.setting.options.get("tis", {})
    if tis.get("gamma", 0.0) is not None:
        return [check.setting] * len(check.seeds)
    gammas = record["tis"].get("gammas")
    if gammas is None or len(gammas) != len(check.seeds):
        raise ValueError(f"results/{check.stem}.json has no per-seed TIS gammas: re-run the chapter")
    return [dataclasses.replace(check.setting, options={**check.setting.options, "tis": {**tis, "gamma": float(g)}})
            for g in gammas]


def benchmark_numbers(check: ChapterCheck, settings: list[Setting] | None = None, device=None) -> dict:
    """The benchmark's numbers for the chapter's methods: ``{method: {measure: mean over the seeds}}``.

    Only the chapter's methods run (no full benchmark), through :func:`run_seed`, the benchmark's own path.
    ``settings`` gives one setting per seed (default: ``check.setting`` for all).
    """
    settings = settings or [check.setting] * len(check.seeds)
    names = [m for m in check.methods.values() if m not in ("original", "foul_start")]
    per_seed = [{row["method"]: row for row in run_seed(check.scenario, setting, seed, names, device=device).rows}
                for seed, setting in zip(check.seeds, settings)]
    return {ch: {cm: float(np.mean([r[bm][check.measures[cm]] for r in per_seed])) for cm in check.measures}
            for ch, bm in check.methods.items()}


def agreement(check: ChapterCheck, root=None, device=None) -> pd.DataFrame:
    """Chapter and benchmark side by side: one row per (method, measure), with the absolute difference."""
    record = chapter_record(check, root=root)
    ours = benchmark_numbers(check, seed_settings(check, record), device=device)
    rows = [{"method": m, "measure": k, "chapter": float(record[m][k]), "benchmark": ours[m][k]}
            for m in check.methods for k in check.measures]
    out = pd.DataFrame(rows).set_index(["method", "measure"])
    out["abs_diff"] = (out.chapter - out.benchmark).abs()
    return out


__all__ = ["CHAPTERS", "ChapterCheck", "agreement", "benchmark_numbers", "chapter_record", "seed_settings"]
