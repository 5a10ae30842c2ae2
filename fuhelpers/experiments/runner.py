"""One runner for every experiment: per seed and scenario, train the starting point once, run every method,
measure everything with one :func:`~fuhelpers.experiments.measure.measure`, and write one record per seed.

Resuming: the record is saved after every method. Run again and the finished methods of an unfinished
scenario are kept; the starting point is trained again (same seed) and must measure exactly as stored,
otherwise (another machine's kernels, another commit) the scenario starts over, with a warning. A
finished scenario is not recomputed unless ``fresh=True``. Each model's entry names the commit that
produced it (``commits``), so a record resumed under a later commit says which numbers came from which.
A scenario recorded under other options of some methods (same setting) keeps the models that those options
do not touch and recomputes the others, with a warning naming both; one recorded under another setting is
not resumed (``fresh=True`` recomputes it).

Where the device only emulates a setting's bf16, the run trains in fp32 (:meth:`Setting.on`): the run's entry
in ``runs`` says ``"precision": {"bf16": "fp32"}`` and each scenario's entry its ``precision``; a scenario
begun in bf16 elsewhere then measures differently and starts over.
"""
from __future__ import annotations

import dataclasses
import json
import time
import warnings
from contextlib import contextmanager

from .. import audit
from ..cost import Cost
from ..device import resolve_device
from ..fl import client_runtime
from ..processes import ClientProcesses
from ..progress import progress
from ..results import _jsonable
from . import records
from .measures import measure, row
from .methods import METHODS, l2u_start, l2u_start_name, needs_history, options, run_variant
from .registry import Experiment, fingerprint, get, reusable, scenario_of
from .setting import prepare


def run(experiment: Experiment | str, scale: str = "smoke", seeds=None, *, scenarios=None, root=None,
        fresh: bool = False, device=None, show_progress: bool | None = None,
        client_processes: int = 0) -> list[dict]:
    """Run (or resume) ``experiment`` at ``scale``: one record per seed, saved as it goes.

    Parameters
    ----------
    experiment : Experiment or str
        An experiment or the name of one in :data:`fuhelpers.experiments.EXPERIMENTS`.
    scale : str
        ``"smoke"``, ``"cpu"`` or ``"gpu"`` (those the experiment defines).
    seeds : sequence of int, optional
        Default: the scale's reported seeds.
    scenarios : sequence of str, optional
        Default: all of the experiment's.
    root : path, optional
        Folder of the records (default: the repository's ``results/``).
    fresh : bool
        Recompute even what a record already holds: the whole record, or with ``scenarios`` only those
        scenarios (the record's others are kept, e.g. after one scenario's setting changed).
    device : torch.device or str, optional
    show_progress : bool, optional
        One bar over every (seed, scenario, method), with the time left.
    client_processes : int
        Train each round's clients in this many worker processes (:class:`fuhelpers.processes.ClientProcesses`,
        CPU only; this process's threads are shared out among them); 0: in this process.

    Returns
    -------
    list of dict
        The records, one per seed.
    """
    exp = get(experiment) if isinstance(experiment, str) else experiment
    if client_processes and resolve_device(device).type != "cpu":
        raise ValueError(f"client processes train on the CPU only, not on {device}: run without them")
    seeds = list(exp.seeds(scale) if seeds is None else seeds)
    scenarios = list(scenarios or exp.scenarios)
    steps = len(seeds) * sum(len(exp.variants(s)) + 1 for s in scenarios)
    bar = progress(total=steps, desc=f"{exp.name} ({scale})", enabled=show_progress)
    out = []
    with clients_in(client_processes):
        for seed in seeds:
            keep_others = fresh and set(scenarios) != set(exp.scenarios)
            record = records.load(exp.name, scale, seed, root) if keep_others or not fresh else None
            record = record or records.new(exp.name, scale, seed)
            this_run = records.start_run()
            if client_processes:
                this_run["client_processes"] = client_processes
            record["runs"].append(this_run)
            computed = False
            for scenario in scenarios:
                started = time.perf_counter()
                computed |= _run_scenario(exp, scale, scenario, seed, record, this_run, root, fresh, device, bar)
                this_run["wall_seconds"] += time.perf_counter() - started
            if computed:
                record["complete"] = all(record["scenarios"].get(s, {}).get("complete") for s in exp.scenarios)
                records.save(record, root)
            else:   # a finished record is left as it was: no run entry for an invocation that computed nothing
                record["runs"].pop()
            out.append(record)
    bar.close()
    return out


@contextmanager
def clients_in(processes: int):
    """Inside: every round's clients train in ``processes`` worker processes (0: in this process)."""
    if not processes:
        yield
        return
    with ClientProcesses(processes) as runtime, client_runtime(runtime):
        yield


def _run_scenario(exp, scale, scenario, seed, record, this_run, root, fresh, device, bar) -> bool:
    """Run what ``record`` lacks of one scenario; False where it was finished already (nothing computed)."""
    config = exp.config(scenario, scale)
    fp = fingerprint(config)
    entry = record["scenarios"].get(scenario)
    if entry is not None and entry["fingerprint"] != fp and not fresh:
        entry = _carry_over(entry, config, fp, f"{records.path(exp.name, scale, seed, root)}, {scenario!r}")
        record["scenarios"][scenario] = entry
    variants = exp.variants(scenario)
    if entry is not None and entry["complete"] and not fresh:
        bar.update(len(variants) + 1)
        return False
    if entry is None or fresh:
        entry = record["scenarios"][scenario] = records.new_scenario(fp, config)
    started = time.perf_counter()
    todo = [v for v in variants if v.name not in entry["measures"] and v.name not in entry["skipped"]]
    bar.set_postfix_str(f"seed {seed}, {scenario}: original")
    setting = exp.setting(scenario, scale)
    p = prepare(scenario_of(scenario), setting, seed, record_history=needs_history(todo), device=device)
    ran_as = "" if p.setting.precision == setting.precision else f"-{p.setting.precision}"
    if ran_as:  # emulated bf16 ran as fp32: the run entry says so, and the scenario's entry below
        this_run.setdefault("precision", {})[setting.precision] = p.setting.precision
    if setting.audit_refs:
        bar.set_postfix_str(f"seed {seed}, {scenario}: reference federations of the audit")
        p.cache["audit"] = audit.load_or_train(p, setting.audit_refs, setting.audit_pairs,
                                               records.path(exp.name, scale, seed, root).parent / "audit" /
                                               f"seed{seed}_{scenario.replace('/', '-')}_{fp}{ran_as}.npz")
    original, details = _measure(p, p.model)
    if "original" in entry["measures"] and entry["measures"]["original"] != original:
        warnings.warn(f"seed {seed}, {scenario}: the starting point measures differently from the stored one "
                      "(another machine or commit); this scenario starts over", stacklevel=2)
        entry = record["scenarios"][scenario] = records.new_scenario(fp, config)
        todo = variants
    if "audit" in p.cache:  # what the record keeps of the reference federations; details per audited model
        entry["audit"] = {**_describe(p.cache["audit"]), "details": entry.get("audit", {}).get("details", {})}
        if details is not None:
            entry["audit"]["details"]["original"] = details
    entry["measures"]["original"], entry["costs"]["original"] = original, dataclasses.asdict(p.pretrain_cost)
    entry["precision"] = p.setting.precision   # the arithmetic of every model of the scenario
    entry["commits"].setdefault("original", this_run["git_commit"])
    bar.update(1 + len(variants) - len(todo))
    for v in todo:
        bar.set_postfix_str(f"seed {seed}, {scenario}: {v.name}")
        reason = METHODS[v.method].applies(p)
        if reason:
            entry["skipped"][v.name] = reason
        else:
            u = run_variant(p, v)
            entry["measures"][v.name], details = _measure(p, u.model)
            if details is not None:
                entry["audit"]["details"][v.name] = details
            entry["costs"][v.name] = dataclasses.asdict(u.cost)
            entry["commits"][v.name] = this_run["git_commit"]
            if u.log:
                entry["logs"][v.name] = u.log
            reported = {k: x for k, x in u.info.items() if _numbers(x)}
            if reported:  # e.g. the share of parameters TIS reset, DPUL froze, FOUL's cosines per round
                entry.setdefault("info", {})[v.name] = reported
            start = l2u_start_name(options(p.setting, "foul", v)) if v.method == "foul" else None
            if start and start not in entry["measures"]:  # FOUL starts from its own model, pre-trained like the original
                net, learned = l2u_start(p, options(p.setting, "foul", v))
                entry["measures"][start], details = _measure(p, net)
                if details is not None:
                    entry["audit"]["details"][start] = details
                entry["costs"][start] = dataclasses.asdict(learned.cost)
                entry["commits"][start] = this_run["git_commit"]
        entry["wall_seconds"] += time.perf_counter() - started
        started = time.perf_counter()
        records.save(record, root)
        bar.update(1)
    entry["rows"] = derive_rows(p, entry)
    entry["complete"] = True
    entry["wall_seconds"] += time.perf_counter() - started
    records.save(record, root)  # finished now, not only once the next scenario has saved something
    return True


def _carry_over(entry: dict, config: dict, fp: str, where: str) -> dict:
    """A new entry under ``config`` holding the models of ``entry`` that it would recompute identically
    (:func:`~fuhelpers.experiments.registry.reusable`); ValueError where the setting itself changed."""
    kept = reusable(entry["config"], config)
    if kept is None:
        raise ValueError(f"{where}: recorded under another setting; pass fresh=True (--fresh) to recompute it")
    new = records.new_scenario(fp, config)
    for key in ("measures", "costs", "logs", "commits", "info", "skipped"):
        new[key] = {name: x for name, x in entry.get(key, {}).items() if name in kept}
    if "audit" in entry:
        new["audit"] = {**entry["audit"], "details": {name: x for name, x in entry["audit"]["details"].items()
                                                      if name in kept}}
    new["wall_seconds"] = entry["wall_seconds"]   # the time spent on this entry over all runs
    again = sorted(set(config["methods"]) - kept)
    warnings.warn(f"{where}: recorded under other options; keeping {sorted(set(new['measures']) - {'original'})}, "
                  f"recomputing {again}", stacklevel=3)
    return new


def _describe(refs) -> dict:
    """What the record keeps of the audit's reference federations: their number, the candidates, their cost."""
    return {"references": int(refs.ref_in.shape[0]), "forget": int(refs.is_forget.sum()),
            "held_out": int((~refs.is_forget).sum()), "population": len(refs.population),
            "cost": dataclasses.asdict(refs.cost)}


def _measure(p, model) -> tuple[dict, dict | None]:
    """:func:`measure`, plus the audit's measures with reference federations; and the audit's details or None."""
    m = measure(p, model)
    refs = p.cache.get("audit")
    if refs is None or m["diverged"]:
        return _plain(m), None
    found, details = audit.audit(model, refs, p.device, seed=p.seed)
    return _plain({**m, **found}), details


def derive_rows(p, entry: dict) -> dict:
    """Scores against Original and Retrain, and cost ratios to Retrain, for every measured model."""
    m, c = entry["measures"], entry["costs"]
    nan = lambda d: {k: (float("nan") if v is None else v) for k, v in d.items()}
    return {name: row(p, nan(m[name]), nan(m["original"]), nan(m["retrain"]), Cost(**c[name]), Cost(**c["retrain"]))
            for name in m}


def _numbers(x, budget: int = 10_000) -> bool:
    """Whether ``x`` is a number, or a small list or dict made of numbers only (kept in the record's ``info``)."""
    if isinstance(x, bool):
        return False
    if isinstance(x, (int, float)):
        return True
    values = list(x.values()) if isinstance(x, dict) else x if isinstance(x, list) else None
    return values is not None and len(values) <= budget and all(_numbers(v, budget) for v in values)


def _plain(measures: dict) -> dict:
    """Measures as the JSON record stores them (NaN as None), so stored and fresh ones compare equal."""
    return json.loads(json.dumps(_jsonable(measures)))
