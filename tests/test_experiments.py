"""The experiments: statistics against scipy and hand-made cases, the shared setting, every method on a shrunk
setting of every scenario, the record schema, resuming, tables from records, and the command line."""
import dataclasses
import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from fuhelpers import audit, metrics, partition, precision
from fuhelpers import experiments as ex
from fuhelpers.experiments import __main__ as cli
from fuhelpers.experiments import measures as emeasure
from fuhelpers.experiments import records, registry, runner
from fuhelpers.experiments.methods import per_round
from fuhelpers.experiments import tables as bstats
from fuhelpers.scenarios import FORGETTING_METRIC, SCENARIOS

# The smoke setting shrunk further: every method runs, in seconds
TINY = dataclasses.replace(registry.SMOKE, n_train=300, n_test=200, n_server=40, num_clients=4, num_rounds=3,
                           local_epochs=1, recovery_rounds=1, options={"dpul": {"vae_epochs": 3, "recovery_steps": 1}})
TINY_DOMAIN = dataclasses.replace(registry.SMOKE_DOMAIN, n_train=320, n_test=160, num_rounds=2, local_epochs=1,
                                  recovery_rounds=1, options={"foul": {"num_rounds": 2}})
TIMING = ("seconds", "seconds_ratio")  # wall-clock columns: the only ones allowed to differ between runs


def tiny_experiment(name="tiny", scenarios=SCENARIOS, methods=tuple(ex.METHODS), seeds=(0,)):
    return ex.Experiment(name, "shrunk", "none", tuple(scenarios), tuple(methods),
                         {"smoke": ex.Scale(registry.per_scenario(TINY, TINY_DOMAIN), seeds)})


# ---------------------------------------------------------------- statistics
def test_paired_better_matches_a_one_sided_paired_t_test():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = rng.normal(size=5), rng.normal(0.8, 1.0, size=5)
        t = stats.ttest_rel(a, b)
        # the 95 % interval of mean(a - b) excludes 0 on the negative side <=> two-sided p < 0.05 and t < 0
        assert bstats.paired_better(a, b) == bool(t.pvalue < 0.05 and t.statistic < 0)
        assert bstats.paired_better(b, a, lower_is_better=False) == bstats.paired_better(a, b)


def test_paired_better_hand_made_cases():
    a = np.array([1.0, 2.0, 3.0])
    assert bstats.paired_better(a, a + 1)            # always lower by exactly 1: no spread, significant
    assert not bstats.paired_better(a + 1, a)
    assert not bstats.paired_better(a, a)            # equal is not better
    assert not bstats.paired_better([1.0], [5.0])    # one seed: nothing is significant
    assert not bstats.paired_better([0.0, 0.0], [1.0, -0.9])  # mean lower, but the interval holds 0


def _frame(values: dict[str, list[float]], scenario="iid") -> pd.DataFrame:
    return pd.DataFrame([{"scenario": scenario, "seed": s, "method": m, "avg_gap": v}
                         for m, vs in values.items() for s, v in enumerate(vs)])


def test_ranking_ties_what_the_seeds_cannot_separate():
    df = _frame({"retrain": [0, 0, 0, 0], "original": [9, 9, 9, 9],
                 "a": [1.0, 1.1, 0.9, 1.0], "b": [3.0, 3.2, 2.9, 3.1], "c": [3.1, 2.8, 3.3, 3.0],
                 "d": [0.5, 5.0, 0.2, 6.0]})
    ranks = bstats.ranking(df).loc["iid"]
    assert "retrain" not in ranks.index and "original" not in ranks.index
    assert ranks.loc["a", "rank"] == 1
    assert ranks.loc["b", "rank"] == ranks.loc["c", "rank"] == 2      # both beaten by a only
    assert ranks.loc["b", "beaten_by"] == "a"
    assert ranks.loc["d", "rank"] == 1                                 # too noisy to be beaten by anyone
    assert ranks.loc["a", "mean"] == pytest.approx(1.0)


def test_overall_ranking_averages_ranks_over_scenarios():
    df = pd.concat([_frame({"a": [1, 1.1, 0.9], "b": [2, 2.1, 1.9]}, "iid"),
                    _frame({"a": [2, 2.1, 1.9], "b": [1, 1.1, 0.9]}, "backdoor"),
                    _frame({"a": [1, 1.1, 0.9]}, "domain")])
    overall = bstats.overall_ranking(bstats.ranking(df))
    assert overall.loc["a", "mean rank"] == pytest.approx(4 / 3) and overall.loc["a", "scenarios"] == 3
    assert overall.loc["b", "mean rank"] == pytest.approx(1.5) and overall.loc["b", "scenarios"] == 2


def test_summary_and_table_use_the_t_interval():
    df = _frame({"a": [1.0, 2.0, 4.0]})
    s = bstats.summary(df)["iid"]["a"]["avg_gap"]
    half = stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / math.sqrt(3)
    assert s["mean"] == pytest.approx(7 / 3) and s["n"] == 3 and s["ci95"] == pytest.approx(half)
    cell = bstats.record_table({"iid": {"methods": bstats.summary(df)["iid"]}}, ["avg_gap"]).loc[("iid", "a"), "avg_gap"]
    assert cell == f"{7 / 3:.2f} ± {half:.2f}"


# ---------------------------------------------------------------- the registry and the shared setting
def test_registry_scales_and_scenarios():
    bench = ex.get("benchmark")
    assert bench.setting("domain", "smoke").dataset == "rotated_mnist" and bench.setting("iid", "smoke").n_server > 0
    assert bench.setting("backdoor", "gpu").arch == "resnet18"
    assert bench.setting("iid", "cpu").n_train is None                    # full data at cpu scale
    with pytest.raises(ValueError, match="no scenario"):
        bench.setting("label_flip", "smoke")
    with pytest.raises(ValueError, match="no scale"):
        bench.setting("iid", "huge")
    with pytest.raises(ValueError, match="unknown experiment"):
        ex.get("nothing")
    with pytest.raises(ValueError, match="unknown method"):
        tiny_experiment(methods=("magic",)).variants()


def test_every_registered_categorical_setting_keeps_classes_that_several_clients_share():
    # the preferential split gives each client one exclusive class and deals the others out; with as many
    # clients as classes nothing is shared, each client sees one class and FedAvg learns nothing
    labels = np.repeat(np.arange(10), 20)   # every dataset of the registry has ten classes
    for exp in ex.EXPERIMENTS.values():
        for scale_name, scale in exp.scales.items():
            for case, setting in scale.settings.items():
                if registry.scenario_of(case) != "categorical":
                    continue
                parts = partition.preferential(labels, setting.num_clients, seed=0)
                holders = [sum(bool((labels[p] == k).any()) for p in parts) for k in range(10)]
                assert max(holders) > 1, f"{exp.name} {scale_name} {case}: {setting.num_clients} clients, no shared class"


def test_a_variant_changes_only_its_options():
    exp = tiny_experiment(methods=("tis", ex.Variant("tis_g30", "tis", {"gamma": 0.3})))
    cfg = exp.config("iid", "smoke")["methods"]
    assert list(cfg) == ["retrain", "tis", "tis_g30"]
    assert cfg["tis_g30"]["options"] == {**cfg["tis"]["options"], "gamma": 0.3} and cfg["tis"]["options"]["gamma"] == 0.5
    plain = tiny_experiment(methods=("tis",)).config("iid", "smoke")
    assert registry.fingerprint(exp.config("iid", "smoke")) != registry.fingerprint(plain)


def test_options_layer_defaults_then_the_setting_then_the_variant():
    setting = ex.Setting(options={"foul": {"lr": 0.2, "num_rounds": 4}})
    kappa3 = ex.Variant("foul_kappa3", "foul", {"kappa": 3.0})
    assert ex.options(setting, "foul")["kappa"] == 1.5                      # the package's default
    assert ex.options(setting, "foul")["lr"] == 0.2 != ex.DEFAULTS["foul"]["lr"]   # the setting's beats the default
    got = ex.options(setting, "foul", kappa3)
    assert (got["kappa"], got["lr"], got["num_rounds"]) == (3.0, 0.2, 4)   # the variant's beats both
    assert ex.options(setting, "tis") == ex.DEFAULTS["tis"]                  # other methods untouched


def test_cases_run_one_scenario_under_several_settings(tmp_path):
    settings = {f"backdoor/{k}": dataclasses.replace(TINY, num_clients=k) for k in (3, 4)}
    methods = ("ft", ex.Variant("ft_iid", "ft", {}, where=("iid",)), ex.Variant("ft_bd", "ft", {}, where=("backdoor",)))
    exp = ex.Experiment("cases", "one scenario, two sizes", "none", tuple(settings), methods,
                        {"smoke": ex.Scale(settings, (0,))})
    rec, = ex.run(exp, "smoke", root=tmp_path, show_progress=False)
    assert list(rec["scenarios"]) == ["backdoor/3", "backdoor/4"] and rec["complete"]
    for k in (3, 4):
        case = rec["scenarios"][f"backdoor/{k}"]
        assert case["config"]["setting"]["num_clients"] == k
        assert set(case["measures"]) == {"original", "retrain", "ft", "ft_bd"}   # `where` reads the case's scenario
        assert "asr" in case["measures"]["original"]                              # measured as a backdoor
    assert rec["scenarios"]["backdoor/3"]["measures"]["original"] != rec["scenarios"]["backdoor/4"]["measures"]["original"]
    assert set(ex.summaries([rec])) == set(settings)
    with pytest.raises(ValueError, match="unknown scenarios"):
        ex.Experiment("bad", "", "none", ("label_flip/1",), ("ft",), {"smoke": ex.Scale({"label_flip/1": TINY}, (0,))})
    with pytest.raises(ValueError, match="settings missing"):
        ex.Experiment("bad", "", "none", ("iid/a",), ("ft",), {"smoke": ex.Scale({"iid": TINY}, (0,))})


def test_the_audit_scores_every_model_against_one_set_of_reference_federations(tmp_path, monkeypatch):
    setting = dataclasses.replace(TINY, audit_refs=4, audit_pairs=40)
    exp = ex.Experiment("audited", "shrunk", "none", ("iid",), ("ft",), {"smoke": ex.Scale({"iid": setting}, (0,))})
    rec, = ex.run(exp, "smoke", root=tmp_path, show_progress=False)
    sc = rec["scenarios"]["iid"]
    assert set(sc["audit"]["details"]) == {"original", "retrain", "ft"}
    assert sc["audit"]["references"] == 4 and sc["audit"]["forget"] == sc["audit"]["held_out"] == 40
    assert all("lira_tpr_0p1pct" in m and "rmia_auc" in m for m in sc["measures"].values())
    assert "lira_auc" in ex.frame([rec]).columns
    assert len(list((tmp_path / "audited" / "smoke" / "audit").glob("*.npz"))) == 1
    # run again: the reference federations are read back, not trained again, and every number repeats
    monkeypatch.setattr(audit.reference, "train_references", lambda *a, **k: pytest.fail("trained again"))
    again, = ex.run(exp, "smoke", root=tmp_path, fresh=True, show_progress=False)
    assert again["scenarios"]["iid"]["measures"] == sc["measures"]


def test_the_fingerprint_follows_the_values_not_the_fields_at_their_default():
    cfg = tiny_experiment().config("iid", "smoke")
    older = json.loads(json.dumps(cfg))
    del older["setting"]["precision"]             # a record made before the field existed (at its default)
    assert registry.fingerprint(older) == registry.fingerprint(cfg)
    changed = json.loads(json.dumps(cfg))
    changed["setting"]["lr"] = 0.1
    assert registry.fingerprint(changed) != registry.fingerprint(cfg)
    changed = json.loads(json.dumps(cfg))
    changed["methods"]["tis"]["options"]["gamma"] = 0.1
    assert registry.fingerprint(changed) != registry.fingerprint(cfg)


def test_server_set_is_held_out_from_every_client():
    fed, request, _, _ = ex.build_task("iid", TINY, seed=0)
    assert len(fed.server) == TINY.n_server and sum(fed.sizes) == TINY.n_train
    server = {tuple(row) for row in fed.server.x.flatten(1).numpy().round(4)}
    clients = {tuple(row) for c in fed.clients for row in c.x.flatten(1).numpy().round(4)}
    assert not server & clients
    assert tuple(request.clients) == (TINY.target_client,)


def test_the_categorical_server_set_holds_no_sample_of_the_forgotten_class():
    fed, request, target, _ = ex.build_task("categorical", TINY, seed=0)
    _, _, drawn = ex.setting.load_split(TINY, seed=0)     # the server set as drawn from the pool
    forgotten = int(target.y[0])              # the target: test samples of the forgotten client's exclusive class
    assert (target.y == forgotten).all() and (drawn.y == forgotten).sum() > 0
    assert (fed.server.y != forgotten).all()
    assert len(fed.server) == TINY.n_server - int((drawn.y == forgotten).sum())   # only that class left out
    iid, _, _, _ = ex.build_task("iid", TINY, seed=0)
    assert len(iid.server) == TINY.n_server                      # a client request in IID forgets no class


# ---------------------------------------------------------------- every method on every scenario
@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory):
    torch.set_num_threads(1)
    return ex.run(tiny_experiment(), "smoke", root=tmp_path_factory.mktemp("records"))


def rows_of(recs, scenario):
    return recs[0]["scenarios"][scenario]["rows"]


def test_every_method_runs_or_says_why_not_in_every_scenario(tiny_records):
    for scenario in SCENARIOS:
        sc = tiny_records[0]["scenarios"][scenario]
        ran = set(sc["rows"]) - {"original", "foul_start"}
        assert ran | set(sc["skipped"]) == set(ex.METHODS), scenario
        assert all(sc["rows"][m]["diverged"] == 0 for m in ran), scenario
    assert "L2U" in tiny_records[0]["scenarios"]["backdoor"]["skipped"]["foul"]
    assert "one client" in tiny_records[0]["scenarios"]["domain"]["skipped"]["dpul"]
    assert {"foul", "foul_start"} <= set(rows_of(tiny_records, "domain"))


def test_the_record_follows_the_schema(tiny_records, tmp_path):
    rec = tiny_records[0]
    records.validate(rec)
    assert rec["complete"] and rec["experiment"] == "tiny" and rec["seed"] == 0
    assert {"git_commit", "torch", "cpu", "cpu_capability", "threads"} <= set(rec["provenance"])
    sc = rec["scenarios"]["iid"]
    assert sc["config"]["setting"]["n_train"] == TINY.n_train and sc["fingerprint"] == registry.fingerprint(sc["config"])
    broken = json.loads(json.dumps(rec))
    del broken["scenarios"]["iid"]["rows"]["ft"]
    with pytest.raises(ValueError, match="rows and measures differ"):
        records.validate(broken)
    with pytest.raises(ValueError, match="schema"):
        records.validate({**rec, "schema": 99})


def test_every_method_starts_from_the_same_model(tiny_records):
    p = ex.prepare("backdoor", TINY, seed=0, record_history=False)
    original = rows_of(tiny_records, "backdoor")["original"]
    again = ex.measure(p, p.model)
    assert all(original[k] == pytest.approx(v) for k, v in again.items())


def test_retrain_is_the_reference(tiny_records):
    rows = rows_of(tiny_records, "backdoor")
    rt = rows["retrain"]
    assert rt["avg_gap"] == 0 and rt["privacy_gap"] == 0 and rt["nta"] == pytest.approx(1.0)
    assert all(rt[f"{k}_ratio"] == pytest.approx(1.0) for k in ("seconds", "rounds", "comm_mb", "flops"))
    # Random Reset's counts come from TIS's curvature round, and it is charged for it. By hand: one round;
    # each of the 4 clients gets the model and sends two diagonals, all float32 (the CNN has no buffers)
    model = ex.prepare("backdoor", TINY, seed=0, record_history=False).model
    assert not list(model.buffers())
    model_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
    for name in ("tis", "random_reset"):
        assert rows[name]["rounds"] == 1 and rows[name]["comm_mb"] == pytest.approx(4 * (1 + 2) * model_mb)
    assert "asr" in rt and 0 <= rt["asr"] <= 1
    # avg_gap is the mean absolute gap to Retrain in percentage points over the four NoT measures
    ft = rows["ft"]
    gap = np.mean([abs(ft[k] - rt[k]) for k in ("retain_acc", "forget_acc", "test_acc", "mia_auc")]) * 100
    assert ft["avg_gap"] == pytest.approx(gap)


def test_storage_counts_what_each_method_keeps(tiny_records):
    rows = rows_of(tiny_records, "backdoor")
    assert rows["ft"]["storage_mb"] == 0 and rows["not"]["storage_mb"] == 0
    assert rows["tis"]["storage_mb"] == rows["random_reset"]["storage_mb"] > 0   # the initial model
    assert rows["federaser"]["storage_mb"] > rows["dpul"]["storage_mb"] > rows["tis"]["storage_mb"]


def test_tis_variants_share_one_curvature_round_and_each_pays_for_it(tmp_path):
    exp = tiny_experiment(scenarios=("categorical", "iid"), methods=(
        "tis", ex.Variant("tis_g20", "tis", {"gamma": 0.2}), "random_reset",
        ex.Variant("rr_g20", "random_reset", {"gamma": 0.2}),
        ex.Variant("rr_g20_trim", "random_reset", {"gamma": 0.2, "retrain_rounds": 1}, where=("categorical",))))
    rec = ex.run(exp, "smoke", root=tmp_path)[0]
    assert "rr_g20_trim" in rec["scenarios"]["categorical"]["rows"]
    assert "rr_g20_trim" not in rec["scenarios"]["iid"]["rows"]                  # only where it is asked for
    info = rec["scenarios"]["categorical"]["info"]
    assert info["rr_g20"]["reset"] == info["tis_g20"]["reset"] != info["tis"]["reset"]   # TIS's counts at its gamma
    assert info["random_reset"]["reset"] == info["tis"]["reset"]
    rows = rec["scenarios"]["categorical"]["rows"]
    assert rows["rr_g20_trim"]["rounds"] == rows["rr_g20"]["rounds"] + 1                # one round of retraining
    assert rows["rr_g20_trim"]["comm_mb"] > rows["rr_g20"]["comm_mb"] and rows["rr_g20_trim"]["flops"] > rows["rr_g20"]["flops"]
    assert rows["tis_g20"]["flops"] == pytest.approx(rows["tis"]["flops"], rel=0.01)   # the same round charged
    assert rows["tis_g20"]["rounds"] == rows["tis"]["rounds"] == 1
    p = ex.prepare("categorical", TINY, seed=0, record_history=False)
    by_hand = ex.METHODS["tis"].run(p, {**ex.options(p.setting, "tis"), "gamma": 0.2})      # its own curvature round
    assert rows["tis_g20"]["test_acc"] == pytest.approx(ex.measure(p, by_hand.model)["test_acc"])


# ---------------------------------------------------------------- resuming
def _numbers(rec):
    """A record without what a clock, a calendar or the machine's provenance decides."""
    out = {}
    for scenario, sc in rec["scenarios"].items():
        out[scenario] = {m: {k: v for k, v in r.items() if k not in TIMING} for m, r in sc["rows"].items()}
        out[scenario]["logs"] = sc["logs"]
    return out


def test_a_stopped_run_resumes_to_the_uninterrupted_record(tmp_path, monkeypatch):
    exp = tiny_experiment(scenarios=("backdoor",), methods=("ft", "not", "federaser"))
    whole = ex.run(exp, "smoke", root=tmp_path / "whole")[0]

    def stop(p, o):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:   # stop the run after its first method (Retrain), inside the second
        m.setitem(ex.METHODS, "ft", dataclasses.replace(ex.METHODS["ft"], run=stop))
        with pytest.raises(KeyboardInterrupt):
            ex.run(exp, "smoke", root=tmp_path / "stopped")
    partial = records.load("tiny", "smoke", 0, tmp_path / "stopped")
    assert not partial["complete"] and set(partial["scenarios"]["backdoor"]["measures"]) == {"original", "retrain"}
    calls = []
    original_run = ex.METHODS["retrain"].run
    monkeypatch.setitem(ex.METHODS, "retrain", dataclasses.replace(
        ex.METHODS["retrain"], run=lambda p, o: calls.append(1) or original_run(p, o)))
    resumed = ex.run(exp, "smoke", root=tmp_path / "stopped")[0]
    assert not calls                                  # Retrain was kept, not recomputed
    assert resumed["complete"] and len(resumed["runs"]) == 2
    assert _numbers(resumed) == _numbers(whole)
    saved = records.path("tiny", "smoke", 0, tmp_path / "stopped").read_text()
    again = ex.run(exp, "smoke", root=tmp_path / "stopped")[0]   # finished: nothing runs, no run is added
    assert not calls and _numbers(again) == _numbers(whole) and len(again["runs"]) == 2
    assert records.path("tiny", "smoke", 0, tmp_path / "stopped").read_text() == saved


def test_a_finished_scenario_is_saved_complete_before_the_next_one_starts(tmp_path, monkeypatch):
    exp = tiny_experiment(scenarios=("iid", "dirichlet"), methods=("ft",))
    original_prepare = runner.prepare

    def stop_in_the_second(scenario, *args, **kwargs):   # killed while the second scenario pre-trains
        if scenario == "dirichlet":
            raise KeyboardInterrupt
        return original_prepare(scenario, *args, **kwargs)

    monkeypatch.setattr(runner, "prepare", stop_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        ex.run(exp, "smoke", root=tmp_path)
    saved = records.load("tiny", "smoke", 0, tmp_path)   # what a killed session leaves behind
    assert saved["scenarios"]["iid"]["complete"] and set(saved["scenarios"]["iid"]["rows"]) == {"original", "retrain", "ft"}
    assert not saved["complete"]
    assert list(ex.summaries([saved])) == ["iid"]


def test_a_record_of_another_setting_is_not_resumed(tmp_path):
    exp = tiny_experiment(scenarios=("iid",), methods=())
    ex.run(exp, "smoke", root=tmp_path)
    changed = dataclasses.replace(exp, scales={"smoke": ex.Scale(
        registry.per_scenario(dataclasses.replace(TINY, num_rounds=2), TINY_DOMAIN), (0,))})
    with pytest.raises(ValueError, match="another setting"):
        ex.run(changed, "smoke", root=tmp_path)
    rec = ex.run(changed, "smoke", root=tmp_path, fresh=True)[0]
    assert rec["scenarios"]["iid"]["config"]["setting"]["num_rounds"] == 2


def test_fresh_with_some_scenarios_recomputes_only_those(tmp_path):
    exp = tiny_experiment(scenarios=("iid", "dirichlet"), methods=())
    before = ex.run(exp, "smoke", root=tmp_path)[0]["scenarios"]
    changed = dataclasses.replace(exp, scales={"smoke": ex.Scale(
        {**exp.scale("smoke").settings, "iid": dataclasses.replace(TINY, num_rounds=2)}, (0,))})
    with pytest.raises(ValueError, match="another setting"):
        ex.run(changed, "smoke", root=tmp_path, scenarios=["iid"])
    after = ex.run(changed, "smoke", root=tmp_path, scenarios=["iid"], fresh=True)[0]
    assert after["scenarios"]["iid"]["config"]["setting"]["num_rounds"] == 2
    assert after["scenarios"]["dirichlet"] == before["dirichlet"]   # kept as it was, not recomputed
    assert after["complete"] and len(after["runs"]) == 2


def test_changed_options_recompute_only_the_methods_they_touch(tmp_path, monkeypatch):
    exp = tiny_experiment(scenarios=("iid",), methods=("ft", "not", "tis", "random_reset"))
    before = ex.run(exp, "smoke", root=tmp_path)[0]["scenarios"]["iid"]
    # NoT's and TIS's options change; Random Reset reads TIS's (its counts), FT and Retrain read neither
    options = {**TINY.options, "not": {"recovery_lr_scale": 0.5}, "tis": {"gamma": 0.3}}
    changed = dataclasses.replace(exp, scales={"smoke": ex.Scale({"iid": dataclasses.replace(TINY, options=options)},
                                                                 (0,))})
    ran, run_variant = [], runner.run_variant
    monkeypatch.setattr(runner, "run_variant", lambda p, v: ran.append(v.name) or run_variant(p, v))
    with pytest.warns(UserWarning, match=r"keeping \['ft', 'retrain'\], recomputing \['not', 'random_reset', 'tis'\]"):
        resumed = ex.run(changed, "smoke", root=tmp_path)[0]["scenarios"]["iid"]
    assert sorted(ran) == ["not", "random_reset", "tis"]
    assert all(resumed["measures"][m] == before["measures"][m] for m in ("original", "retrain", "ft"))
    # the resumed record holds what recomputing everything under the new options gives
    monkeypatch.setattr(runner, "run_variant", run_variant)
    again = ex.run(changed, "smoke", root=tmp_path / "again")[0]["scenarios"]["iid"]
    assert resumed["fingerprint"] == again["fingerprint"] and resumed["complete"]
    assert resumed["measures"] == again["measures"]
    untimed = lambda rows: {m: {k: v for k, v in r.items() if k not in TIMING} for m, r in rows.items()}
    assert untimed(resumed["rows"]) == untimed(again["rows"])
    assert resumed["measures"]["not"] != before["measures"]["not"]


def test_foul_keeps_its_starting_point_unless_the_l2u_model_changes(tmp_path):
    exp = tiny_experiment(scenarios=("domain",), methods=("foul",))
    before = ex.run(exp, "smoke", root=tmp_path)[0]["scenarios"]["domain"]
    base = TINY_DOMAIN.options["foul"]
    l2u = {**ex.DEFAULTS["foul"]["l2u_kwargs"], "width": 4}
    for k, (foul, kept) in enumerate([({**base, "lr": 0.02}, "'foul_start', 'retrain'"),     # the server step
                                      ({**base, "lr": 0.02, "l2u_kwargs": l2u}, "'retrain'")]):  # the L2U model
        changed = dataclasses.replace(exp, scales={"smoke": ex.Scale(
            {"domain": dataclasses.replace(TINY_DOMAIN, options={**TINY_DOMAIN.options, "foul": foul})}, (0,))})
        with pytest.warns(UserWarning, match=rf"keeping \[{kept}\], recomputing \['foul'\]"):
            resumed = ex.run(changed, "smoke", root=tmp_path)[0]["scenarios"]["domain"]
        again = ex.run(changed, "smoke", root=tmp_path / f"again{k}")[0]["scenarios"]["domain"]
        assert resumed["measures"] == again["measures"]
        assert resumed["measures"]["foul"] != before["measures"]["foul"]
    assert resumed["measures"]["foul_start"] != before["measures"]["foul_start"]


def test_a_starting_point_that_measures_differently_starts_over(tmp_path):
    exp = tiny_experiment(scenarios=("iid",), methods=("ft",))
    rec = ex.run(exp, "smoke", root=tmp_path)[0]
    sc = rec["scenarios"]["iid"]
    sc["complete"], sc["rows"] = False, {}
    sc["measures"]["original"]["test_acc"] += 0.01   # as if trained on another machine
    del sc["measures"]["ft"]
    records.save(rec, tmp_path)
    with pytest.warns(UserWarning, match="starts over"):
        again = ex.run(exp, "smoke", root=tmp_path)[0]
    assert _numbers(again) == _numbers(ex.run(exp, "smoke", root=tmp_path / "clean")[0])


# ---------------------------------------------------------------- the command line
def test_command_line_twice_gives_identical_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ex.EXPERIMENTS, "tiny", tiny_experiment(scenarios=("iid", "backdoor"),
                                                               methods=("ft", "not", "tis", "random_reset")))
    for run in ("first", "second"):
        assert cli.main(["run", "tiny", "--seeds", "0", "1", "--threads", "1", "--out", str(tmp_path / run)]) == 0
    first, second = (records.load_all("tiny", "smoke", tmp_path / run) for run in ("first", "second"))
    assert [r["seed"] for r in first] == [0, 1]
    assert [_numbers(r) for r in first] == [_numbers(r) for r in second]
    assert cli.main(["show", "tiny", "--out", str(tmp_path / "first")]) == 0
    shown = capsys.readouterr().out
    assert "2 finished seeds of 2" in shown and "avg_gap" in shown
    assert cli.main(["list"]) == 0 and "benchmark" in capsys.readouterr().out


def test_clients_in_worker_processes_give_the_in_process_record(tmp_path, monkeypatch):
    # one thread everywhere, so that the workers run the kernels this process runs
    monkeypatch.setitem(ex.EXPERIMENTS, "tiny", tiny_experiment(scenarios=("iid",), methods=("ft", "not")))
    for run, extra in (("here", []), ("workers", ["--client-processes", "2"])):
        assert cli.main(["run", "tiny", "--threads", "1", "--out", str(tmp_path / run), *extra]) == 0
    here, workers = (records.load("tiny", "smoke", 0, tmp_path / run) for run in ("here", "workers"))
    assert _numbers(workers) == _numbers(here)
    assert workers["runs"][0]["client_processes"] == 2 and "client_processes" not in here["runs"][0]


def test_client_processes_on_a_gpu_are_refused_before_any_work(tmp_path, monkeypatch):
    # the workers train on the CPU only; found out at the first round, a GPU run would fail after loading its data
    monkeypatch.setitem(ex.EXPERIMENTS, "tiny", tiny_experiment(scenarios=("iid",), methods=("ft",)))
    with pytest.raises(ValueError, match="CPU only"):
        ex.run("tiny", root=tmp_path, device="cuda", client_processes=2)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("native", [False, True])
def test_emulated_bf16_runs_as_fp32_and_the_run_says_so(tmp_path, monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": native)
    tiny = lambda precision: ex.Experiment("tiny", "shrunk", "none", ("iid",), ("ft",), {"smoke": ex.Scale(
        {"iid": dataclasses.replace(TINY, precision=precision)}, (0,))})
    ex.run(tiny("fp32"), root=tmp_path / "fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex.run(tiny("bf16"), root=tmp_path / "bf16")
    fp32, bf16 = (records.load("tiny", "smoke", 0, tmp_path / p) for p in ("fp32", "bf16"))
    emulated = [w for w in caught if "emulated" in str(w.message)]
    if native:
        assert not emulated and "precision" not in bf16["runs"][0] and _numbers(bf16) != _numbers(fp32)
        assert bf16["scenarios"]["iid"]["precision"] == "bf16"
    else:   # the fp32 run's numbers, under the bf16 setting's fingerprint, and the run entry says why
        assert len(emulated) == 1 and bf16["runs"][0]["precision"] == {"bf16": "fp32"}
        assert bf16["scenarios"]["iid"]["precision"] == fp32["scenarios"]["iid"]["precision"] == "fp32"
        assert _numbers(bf16) == _numbers(fp32)
        assert bf16["scenarios"]["iid"]["fingerprint"] != fp32["scenarios"]["iid"]["fingerprint"]


def test_command_line_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "nowhere"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no scale"):
        cli.main(["run", "benchmark", "--scale", "huge"])


# ---------------------------------------------------------------- tables from records
def test_tables_from_records(tiny_records):
    loaded = json.loads(json.dumps(tiny_records))    # as read back from the JSON files
    summ = ex.summaries(loaded)
    assert set(summ) == set(SCENARIOS) and summ["backdoor"]["seeds"] == [0]
    rows = rows_of(loaded, "backdoor")
    table = ex.record_table(summ, ["test_acc", "asr"], scale=100, digits=1)
    assert table.loc[("backdoor", "ft"), "test_acc"] == f"{100 * rows['ft']['test_acc']:.1f}"   # n = 1: no interval
    means = ex.record_means(summ, "avg_gap")
    assert means.loc["retrain", "backdoor"] == 0 and means.loc["tis", "backdoor"] == pytest.approx(rows["tis"]["avg_gap"])
    ranks = ex.rank_table(summ)
    assert (ranks["backdoor"].dropna() == 1).all()                  # one seed: all tie
    assert set(summ["backdoor"]["curves"]) >= {"retrain", "ft"}


def test_summaries_pool_seeds_with_the_t_interval():
    recs = [{"seed": s, "scenarios": {"iid": {"complete": True, "logs": {}, "skipped": {}, "rows": {
        "retrain": {"avg_gap": 0.0}, "a": {"avg_gap": v}}}}} for s, v in enumerate([1.0, 2.0, 4.0])]
    s = ex.summaries(recs)["iid"]["methods"]["a"]["avg_gap"]
    half = stats.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(7 / 3) and s["ci95"] == pytest.approx(half)


def test_a_diverged_model_is_charged_and_not_comparable():
    p = ex.prepare("backdoor", TINY, seed=0, record_history=False)
    assert ex.measure(p, p.model)["diverged"] == 0
    broken = p.new_model()
    with torch.no_grad():
        next(broken.parameters())[0].fill_(float("nan"))
    m = ex.measure(p, broken)
    assert m["diverged"] == 1 and m["test_acc"] == m["retain_acc"] == m["backdoor_acc"] == 0   # utility: charged
    assert all(math.isnan(m[k]) for k in ("forget_acc", "asr", "mia_acc", "mia_auc"))       # not an attack at 0.5
    reference = {"retain_acc": 0.9, "forget_acc": 0.8, "test_acc": 0.8, "mia_auc": 0.5, "asr": 0.1}
    s = emeasure.scores(p, m, {**reference, "asr": 0.9}, reference)
    assert math.isnan(s["nfs"]) and math.isnan(s["avg_gap"]) and math.isnan(s["privacy_gap"])
    assert s["utility_gap"] == pytest.approx(85.0) and s["nta"] == 0    # by hand: (90 + 80) / 2 points


def test_derived_scores_use_the_attacks_auc_not_its_accuracy():
    # By hand. IID: NFS on the attack = (0.8 - 0.65) / (0.8 - 0.5) = 0.5 with the AUC; the accuracies (0.9, 0.9,
    # 0.5) would give 0. Average gap over retain, forget, test and the AUC: (0 + 10 + 0 + 15) / 4 = 6.25 points
    # (12.5 with the accuracy's 40-point gap); privacy gap over forget and AUC: (10 + 15) / 2 = 12.5.
    p = SimpleNamespace(scenario="iid", forgetting_metric=FORGETTING_METRIC["iid"])
    original = {"retain_acc": 0.95, "forget_acc": 0.95, "test_acc": 0.85, "mia_acc": 0.9, "mia_auc": 0.8}
    reference = {"retain_acc": 0.9, "forget_acc": 0.7, "test_acc": 0.85, "mia_acc": 0.5, "mia_auc": 0.5}
    method = {"retain_acc": 0.9, "forget_acc": 0.8, "test_acc": 0.85, "mia_acc": 0.9, "mia_auc": 0.65}
    s = emeasure.scores(p, method, original, reference)
    assert s["nfs"] == pytest.approx(0.5)
    assert s["avg_gap"] == pytest.approx(6.25) and s["privacy_gap"] == pytest.approx(12.5)


def test_a_method_with_a_nan_score_is_not_ranked():
    # "bad" would be best by its two finite seeds, but its third (a diverged run) is NaN: no rank, not a good one
    df = pd.DataFrame({"scenario": "iid", "seed": [0, 1, 2] * 3, "method": ["a"] * 3 + ["b"] * 3 + ["bad"] * 3,
                       "avg_gap": [1.0, 1.1, 0.9, 5.0, 5.2, 4.9, 0.1, 0.1, np.nan]})
    ranks = bstats.ranking(df)
    assert set(ranks.index.get_level_values("method")) == {"a", "b"}
    assert ranks.loc[("iid", "a"), "rank"] == 1 and ranks.loc[("iid", "b"), "rank"] == 2
    recs = [{"seed": seed, "scenarios": {"iid": {"complete": True, "logs": {}, "skipped": {}, "rows": {
        r["method"]: {"avg_gap": r["avg_gap"], "diverged": float(np.isnan(r["avg_gap"]))}
        for r in df.to_dict("records") if r["seed"] == seed}}}} for seed in range(3)]
    summ = ex.summaries(recs)["iid"]
    assert set(summ["ranking"]) == {"a", "b"} and summ["methods"]["bad"]["diverged"]["mean"] == pytest.approx(1 / 3)
    assert summ["methods"]["bad"]["avg_gap"]["n"] == 2     # the table's mean is over the comparable seeds only


def test_every_registered_experiment_is_defined_at_every_scale_and_shown_by_its_chapter():
    notebooks = ex.records.results_dir().parent / "notebooks"
    for exp in ex.EXPERIMENTS.values():
        assert set(exp.scales) == {"smoke", "cpu", "gpu"}, exp.name
        for scale in exp.scales:
            assert exp.seeds(scale), (exp.name, scale)
            for scenario in exp.scenarios:
                assert registry.scenario_of(scenario) in SCENARIOS
                registry.fingerprint(exp.config(scenario, scale))        # every method and option resolves
        chapter = (notebooks / f"{exp.chapter}.ipynb").read_text()
        assert f'ex.get(\\"{exp.name}\\")' in chapter and "ex.run(" in chapter, exp.name   # runs it through the runner


def test_local_steps_reach_fedavg_and_targeted_retraining_stays_in_epochs():
    from fuhelpers.experiments.methods import trim_config
    setting = dataclasses.replace(ex.Setting(), local_steps=7, local_epochs=1, num_rounds=40)
    assert setting.fed_config(0).local_steps == 7
    trim = trim_config(SimpleNamespace(fed_config=setting.fed_config(0)), 1)
    assert (trim.num_rounds, trim.local_epochs, trim.local_steps) == (1, 1, None)
    # a field left at its default does not enter the fingerprint: records made before it existed resume
    config = ex.get("tis").config("backdoor", "smoke")
    assert "local_steps" not in json.dumps(config) or config["setting"]["local_steps"] is None
    stripped = {**config, "setting": {k: v for k, v in config["setting"].items() if k != "local_steps"}}
    assert registry.fingerprint(config) == registry.fingerprint(stripped)


def test_committed_records_were_made_under_the_registry_s_current_configuration():
    # a record whose configuration the registry no longer has would be shown by its chapter but never resumed
    found = 0
    for exp in ex.EXPERIMENTS.values():
        for scale in ("cpu", "gpu"):
            for record in ex.records.load_all(exp.name, scale, complete_only=False):
                for scenario, entry in record["scenarios"].items():
                    assert entry["fingerprint"] == registry.fingerprint(exp.config(scenario, scale)), \
                        (exp.name, scale, record["seed"], scenario)
                    found += 1
    assert found > 0 or not any(ex.records.results_dir().glob("*/cpu/seed*.json"))


def test_the_curves_of_a_bf16_setting_track_the_fp32_measures(monkeypatch):
    """per_round evaluates in the setting's precision; its values stay within a few near-ties of fp32 accuracy."""
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)   # bf16 even where it is emulated
    p = ex.prepare("backdoor", dataclasses.replace(TINY, precision="bf16"), seed=0, record_history=False)
    assert p.setting.precision == "bf16"
    fed = p.federation
    curve = per_round(p)(p.model)
    fp32 = {"forget_acc": metrics.accuracy(p.model, fed.forget_data(p.request)),
            "test_acc": metrics.accuracy(p.model, fed.test),
            "asr": metrics.attack_success_rate(p.model, fed.triggered_test)}
    assert set(curve) == set(fp32)
    sizes = {"forget_acc": len(fed.forget_data(p.request)), "test_acc": len(fed.test), "asr": len(fed.triggered_test)}
    for k, v in fp32.items():
        assert abs(curve[k] - v) <= 3 / sizes[k], k
