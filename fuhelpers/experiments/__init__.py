"""Experiments: every reproduction of the book and the benchmark, run by one runner into per-seed records.

Flow::

    EXPERIMENTS[name] (scenarios, methods, settings per scale, seeds)
      -> runner.run: per seed and scenario, prepare (data, partition, FedAvg pre-training) once,
         every method from the same model, one measure -> results/<name>/<scale>/seed<k>.json
      -> tables.summaries -> tables and plots

From the command line::

    python -m fuhelpers.experiments list
    python -m fuhelpers.experiments run benchmark --scale smoke --seeds 0 1 2
    python -m fuhelpers.experiments show benchmark --scale smoke
"""
from __future__ import annotations

from . import records
from .measures import MEASURE_LABELS, MEASURES, measure
from .methods import DEFAULTS, METHODS, Method, Variant, classifier_head, options
from .registry import EXPERIMENTS, TUNING_SEED, Experiment, Scale, get
from .runner import run
from .setting import Prepared, Setting, build_task, prepare
from .tables import (frame, mean_curves, overall_ranking, paired_better, rank_table, ranking, record_means,
                     record_table, summaries, summary)


def load(name: str, scale: str, root=None) -> list[dict]:
    """The finished records of experiment ``name`` at ``scale``, one per seed."""
    return records.load_all(name, scale, root)


__all__ = ["DEFAULTS", "EXPERIMENTS", "Experiment", "MEASURE_LABELS", "MEASURES", "METHODS", "Method", "Prepared", "Scale", "Setting",
           "TUNING_SEED", "Variant", "build_task", "classifier_head", "frame", "get", "load", "mean_curves",
           "measure", "options", "overall_ranking", "paired_better", "prepare", "rank_table", "ranking",
           "record_means", "record_table", "records", "run", "summaries", "summary"]
