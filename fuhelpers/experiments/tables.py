"""Records to tables: mean, spread and 95 % interval of every measure over seeds, and a ranking that respects them.

:func:`summaries` turns the per-seed records of one experiment and scale into one summary per scenario
(``{"methods", "ranking", "curves", "skipped", "seeds"}``); :func:`record_table`, :func:`record_means` and
:func:`rank_table` render those summaries.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .. import metrics

NOT_RANKED = ("original", "foul_start", "retrain")  # starting points, and the reference itself


def frame(records) -> pd.DataFrame:
    """Every row of the records' finished scenarios, one per (scenario, seed, method); None read as NaN.

    What a method reported about itself (``info``: e.g. ``reset_fraction``) joins its row.
    """
    rows = [{"scenario": scenario, "seed": rec["seed"], "method": method,
             **{k: (np.nan if v is None else v) for k, v in {**_scalars(sc.get("info", {}).get(method, {})),
                                                            **r}.items()}}
            for rec in records for scenario, sc in rec["scenarios"].items() if sc["complete"]
            for method, r in sc["rows"].items()]
    return pd.DataFrame(rows)


def _scalars(info: dict) -> dict:
    return {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def summaries(records) -> dict:
    """``{scenario: {"methods", "ranking", "curves", "skipped", "seeds"}}`` over the records' seeds.

    ``methods``: per method, every measure's mean, std, n and ci95 (:func:`fuhelpers.metrics.summarize`);
    ``ranking``: rank and who beats it (:func:`ranking`); ``curves``: per-round means (:func:`mean_curves`).
    """
    df = frame(records)
    if df.empty:
        return {}
    ranks, curves, out = ranking(df), mean_curves(records), {}
    for scenario, stats_ in summary(df).items():
        r = ranks.xs(scenario) if scenario in ranks.index.get_level_values("scenario") else ranks.iloc[:0]
        done = [rec for rec in records if rec["scenarios"].get(scenario, {}).get("complete")]
        out[scenario] = {"methods": stats_,
                         "ranking": {m: {"rank": int(x["rank"]), "beaten_by": x["beaten_by"]} for m, x in r.iterrows()},
                         "curves": curves.get(scenario, {}),
                         "skipped": done[0]["scenarios"][scenario]["skipped"] if done else {},
                         "seeds": [rec["seed"] for rec in done]}
    return out


def numeric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in ("scenario", "seed", "method") and pd.api.types.is_numeric_dtype(df[c])]


def summary(df: pd.DataFrame) -> dict:
    """``{scenario: {method: {measure: {"mean", "std", "n", "ci95"}}}}`` over seeds (nan values left out)."""
    out = {}
    for (scenario, method), g in df.groupby(["scenario", "method"], sort=False):
        out.setdefault(scenario, {})[method] = {
            col: metrics.summarize(values) for col in numeric_columns(df)
            if len(values := g[col].dropna().to_numpy()) > 0}
    return out


def paired_better(a: np.ndarray, b: np.ndarray, lower_is_better: bool = True, level: float = 0.95) -> bool:
    """Whether ``a`` beats ``b`` over the same seeds: the t-interval of the mean paired difference excludes 0.

    With one seed nothing is ever significant; a zero spread of the differences makes any nonzero mean so.
    """
    d = (np.asarray(a, float) - np.asarray(b, float)) * (1 if lower_is_better else -1)
    if len(d) < 2:
        return False
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return bool(d.mean() + half < 0)


def ranking(df: pd.DataFrame, measure: str = "avg_gap", lower_is_better: bool = True,
            level: float = 0.95) -> pd.DataFrame:
    """Rank methods per scenario by ``measure``, ties where the seeds cannot tell them apart.

    A method's rank is 1 + the number of methods that beat it in a paired comparison over the same
    seeds (:func:`paired_better`); methods nobody beats share rank 1. Retrain (the reference) and the
    starting models are left out, and so is a method whose ``measure`` is NaN in any seed: it is not
    comparable (e.g. a diverged model, whose forgetting measures are NaN), and gets no rank rather than
    a good one.

    Returns
    -------
    pandas.DataFrame
        Index (scenario, method); columns ``mean``, ``ci95``, ``rank``, ``beaten_by``.
    """
    rows = []
    starts = df.method.isin(NOT_RANKED) | df.method.str.startswith("foul_start")  # every L2U starting point
    for scenario, g in df[~starts].groupby("scenario", sort=False):
        wide = g.pivot(index="seed", columns="method", values=measure).dropna(axis=1, how="any")
        beaten = {m: [o for o in wide.columns if o != m and paired_better(wide[o], wide[m], lower_is_better, level)]
                  for m in wide.columns}
        for m in wide.columns:
            s = metrics.summarize(wide[m].to_numpy())
            rows.append({"scenario": scenario, "method": m, "mean": s["mean"], "ci95": s["ci95"],
                         "rank": 1 + len(beaten[m]), "beaten_by": ", ".join(sorted(beaten[m]))})
    columns = ["scenario", "method", "mean", "ci95", "rank", "beaten_by"]
    out = pd.DataFrame(rows, columns=columns).set_index(["scenario", "method"])  # no rows: nothing to rank
    return out.sort_values(["scenario", "rank", "mean"], ascending=[True, True, lower_is_better])


def overall_ranking(ranks: pd.DataFrame) -> pd.DataFrame:
    """Mean rank of each method over the scenarios it ran in, with the number of scenarios.

    ``ranks`` is :func:`ranking`'s frame; the result has one column per scenario too.
    """
    return _with_mean_rank(ranks["rank"].unstack("scenario"))


def _with_mean_rank(wide: pd.DataFrame) -> pd.DataFrame:
    """Ranks (index method, one column per scenario) with their mean and count over scenarios, best first."""
    return wide.assign(**{"mean rank": wide.mean(axis=1), "scenarios": wide.notna().sum(axis=1)}) \
        .sort_values("mean rank")


def mean_curves(records, keys=("test_acc", "forget_acc", "retain_acc", "asr")) -> dict:
    """``{scenario: {method: {key: per-round mean over seeds}}}`` for methods that log rounds."""
    out: dict = {}
    for rec in records:
        for scenario, sc in rec["scenarios"].items():
            for method, log in sc["logs"].items() if sc["complete"] else ():
                for key in keys:
                    if key in log[0]:
                        out.setdefault(scenario, {}).setdefault(method, {}).setdefault(key, []).append(
                            [entry[key] for entry in log])
    return {s: {m: {k: np.mean(v, axis=0).tolist() for k, v in d.items()} for m, d in ms.items()}
            for s, ms in out.items()}




# ---------------------------------------------------------------- tables from summaries
def record_table(records: dict, columns, scale: float = 1.0, digits: int = 2) -> pd.DataFrame:
    """``mean ± ci95`` strings from summaries ``{scenario: summary}`` (:func:`summaries`); index (scenario, method).

    ``scale`` multiplies mean and interval (100 for percentages). Measures a method lacks show "".
    """
    def cell(s):
        if s is None:
            return ""
        mean, ci = s["mean"] * scale, s["ci95"] * scale
        return f"{mean:.{digits}f}" if s["n"] == 1 or not np.isfinite(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"

    rows = {(scenario, method): {c: cell(measures.get(c)) for c in columns}
            for scenario, rec in records.items() for method, measures in rec["methods"].items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns)).rename_axis(["scenario", "method"])


def record_means(records: dict, column: str) -> pd.DataFrame:
    """Means of one measure: index method, one column per scenario (NaN where a method did not run)."""
    return pd.DataFrame({scenario: {m: s[column]["mean"] for m, s in rec["methods"].items() if column in s}
                         for scenario, rec in records.items()})


def rank_table(records: dict) -> pd.DataFrame:
    """Rank per scenario (1 = nobody is significantly closer to Retrain) and the mean rank over scenarios."""
    return _with_mean_rank(pd.DataFrame({scenario: {m: r["rank"] for m, r in rec["ranking"].items()}
                                         for scenario, rec in records.items()}))


__all__ = ["NOT_RANKED", "frame", "mean_curves", "overall_ranking", "paired_better", "rank_table",
           "ranking", "record_means", "record_table", "summaries", "summary"]
