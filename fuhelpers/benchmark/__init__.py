"""All methods on one benchmark (chapter 6): the same data, partition, model, pre-training and seeds.

Flow::

    setting_for(scenario, scale) -> run_scenario (prepare, every method, measure) -> stats -> record -> results JSON

From the command line (writes ``results/06_benchmark.json``, one entry per scale, one key per scenario)::

    python -m fuhelpers.benchmark --scenario iid --scale smoke
"""
from __future__ import annotations

import dataclasses

from .methods import DEFAULTS, METHODS, Method, classifier_head, options
from .run import MEASURES, SeedResult, measure, run_scenario, run_seed
from .setting import SCALES, SCENARIOS, Prepared, Setting, build_task, prepare, setting_for
from .stats import (frame, mean_curves, overall_ranking, paired_better, rank_table, ranking, record_means,
                    record_table, summary)

STEM = "06_benchmark"


def record(results, setting: Setting, seconds: float | None = None) -> dict:
    """The results record of one scenario: per method, every measure's mean, std, n and ci95.

    Also kept: the ranking by average gap, the per-round mean curves, why methods were skipped, and
    the setting (so that a reader can rebuild it). ``seconds`` is the scenario's wall time.
    """
    df = frame(results)
    scenario = df.scenario.iloc[0]
    ranks = ranking(df)
    ranks = ranks.xs(scenario) if len(ranks) else ranks.droplevel("scenario")  # empty: Retrain alone ran
    return {"methods": summary(df)[scenario],
            "ranking": {m: {"rank": int(r["rank"]), "beaten_by": r["beaten_by"]} for m, r in ranks.iterrows()},
            "curves": mean_curves(results).get(scenario, {}),
            "skipped": results[0].skipped,
            "seeds": [r.seed for r in results],
            "setting": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(setting).items()},
            "wall_seconds": seconds}


__all__ = ["DEFAULTS", "MEASURES", "METHODS", "Method", "Prepared", "SCALES", "SCENARIOS", "STEM", "SeedResult",
           "Setting", "build_task", "classifier_head", "frame", "mean_curves", "measure", "options",
           "overall_ranking", "paired_better", "prepare", "rank_table", "ranking", "record", "record_means",
           "record_table", "run_scenario", "run_seed", "setting_for", "summary"]
