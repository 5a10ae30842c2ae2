"""The benchmark of chapter 6: statistics against scipy and hand-made cases, the shared setting, one run of
every method on a shrunk setting, the results record, and the command line (same seed, same numbers)."""
import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from fuhelpers import benchmark
from fuhelpers.benchmark import __main__ as cli
from fuhelpers.benchmark import stats as bstats

# The smoke setting shrunk further: every method runs, in seconds
TINY = dataclasses.replace(benchmark.setting_for("iid", "smoke"), n_train=300, n_test=200, n_server=40,
                           num_clients=4, num_rounds=3, local_epochs=1, recovery_rounds=1,
                           options={"dpul": {"vae_epochs": 3, "recovery_steps": 1}})
TIMING = ("seconds", "seconds_ratio")  # wall-clock columns: the only ones allowed to differ between runs


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


# ---------------------------------------------------------------- the shared setting
def test_setting_for_scales_and_scenarios():
    iid, domain = benchmark.setting_for("iid", "smoke"), benchmark.setting_for("domain", "smoke")
    assert domain.dataset == "rotated_mnist" and domain.n_server == 0 and iid.n_server > 0
    assert benchmark.setting_for("backdoor", "full").arch == "resnet18"
    with pytest.raises(ValueError, match="unknown scenario"):
        benchmark.setting_for("label_flip")
    with pytest.raises(ValueError, match="unknown scale"):
        benchmark.setting_for("iid", "huge")


def test_server_set_is_held_out_from_every_client():
    fed, request, _, _ = benchmark.build_task("iid", TINY, seed=0)
    assert len(fed.server) == TINY.n_server and sum(fed.sizes) == TINY.n_train
    server = {tuple(row) for row in fed.server.x.flatten(1).numpy().round(4)}
    clients = {tuple(row) for c in fed.clients for row in c.x.flatten(1).numpy().round(4)}
    assert not server & clients
    assert tuple(request.clients) == (TINY.target_client,)


def test_the_categorical_server_set_holds_no_sample_of_the_forgotten_class():
    fed, request, target, _ = benchmark.build_task("categorical", TINY, seed=0)
    _, _, drawn = benchmark.setting.load_split(TINY, seed=0)     # the server set as drawn from the pool
    forgotten = int(target.y[0])              # the target: test samples of the forgotten client's exclusive class
    assert (target.y == forgotten).all() and (drawn.y == forgotten).sum() > 0
    assert (fed.server.y != forgotten).all()
    assert len(fed.server) == TINY.n_server - int((drawn.y == forgotten).sum())   # only that class left out
    iid, _, _, _ = benchmark.build_task("iid", TINY, seed=0)
    assert len(iid.server) == TINY.n_server                      # a client request in IID forgets no class


# ---------------------------------------------------------------- one run of every method
@pytest.fixture(scope="module")
def tiny_run():
    torch.set_num_threads(1)
    return benchmark.run_seed("backdoor", TINY, seed=0)


def test_every_method_runs_or_says_why_not(tiny_run):
    names = {row["method"] for row in tiny_run.rows}
    assert names == {"original", *benchmark.METHODS} - {"foul"}
    assert "L2U" in tiny_run.skipped["foul"]


def test_every_method_starts_from_the_same_model(tiny_run):
    p = benchmark.prepare("backdoor", TINY, seed=0, record_history=False)
    original = next(r for r in tiny_run.rows if r["method"] == "original")
    again = benchmark.measure(p, p.model)
    assert all(original[k] == pytest.approx(v) for k, v in again.items())


def test_retrain_is_the_reference(tiny_run):
    rows = {r["method"]: r for r in tiny_run.rows}
    rt = rows["retrain"]
    assert rt["avg_gap"] == 0 and rt["privacy_gap"] == 0 and rt["nta"] == pytest.approx(1.0)
    assert all(rt[f"{k}_ratio"] == pytest.approx(1.0) for k in ("seconds", "rounds", "comm_mb", "flops"))
    # Random Reset's counts come from TIS's curvature round, and it is charged for it. By hand: one round;
    # each of the 4 clients gets the model and sends two diagonals, all float32 (the CNN has no buffers)
    model = benchmark.prepare("backdoor", TINY, seed=0, record_history=False).model
    assert not list(model.buffers())
    model_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
    for name in ("tis", "random_reset"):
        assert rows[name]["rounds"] == 1 and rows[name]["comm_mb"] == pytest.approx(4 * (1 + 2) * model_mb)
    assert "asr" in rt and 0 <= rt["asr"] <= 1
    # avg_gap is the mean absolute gap to Retrain in percentage points over the four NoT measures
    ft = rows["ft"]
    gap = np.mean([abs(ft[k] - rt[k]) for k in ("retain_acc", "forget_acc", "test_acc", "mia_auc")]) * 100
    assert ft["avg_gap"] == pytest.approx(gap)


def test_storage_counts_what_each_method_keeps(tiny_run):
    rows = {r["method"]: r for r in tiny_run.rows}
    assert rows["ft"]["storage_mb"] == 0 and rows["not"]["storage_mb"] == 0
    assert rows["tis"]["storage_mb"] == rows["random_reset"]["storage_mb"] > 0   # the initial model
    assert rows["federaser"]["storage_mb"] > rows["dpul"]["storage_mb"] > rows["tis"]["storage_mb"]


def test_record_has_mean_std_n_for_every_measure(tiny_run):
    rec = benchmark.record([tiny_run], TINY, seconds=1.0)
    for method, measures in rec["methods"].items():
        for name in ("test_acc", "mia_acc", "mia_auc", "asr", "avg_gap", "comm_mb_ratio", "storage_mb", "diverged"):
            assert set(measures[name]) == {"mean", "std", "n", "ci95"}, (method, name)
            assert measures[name]["n"] == 1
    assert rec["setting"]["n_train"] == TINY.n_train and rec["seeds"] == [0]
    json.dumps(rec)  # serialisable as it is


# ---------------------------------------------------------------- the command line
def _numbers(path):
    """The results file without what a clock or a calendar decides."""
    saved = json.loads(path.read_text())["smoke"]
    for rec in saved["results"].values():
        rec.pop("wall_seconds")
        for measures in rec["methods"].values():
            for key in TIMING:
                measures.pop(key)
    return saved["results"]


def test_command_line_twice_gives_identical_numbers(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmark.SCALES["smoke"], "common", TINY)
    argv = ["--scenario", "iid", "--seeds", "2", "--methods", "retrain", "ft", "not", "tis", "random_reset",
            "--threads", "1"]
    for run in ("first", "second"):
        assert cli.main([*argv, "--out", str(tmp_path / run)]) == 0
    first, second = _numbers(tmp_path / "first" / "06_benchmark.json"), _numbers(tmp_path / "second" / "06_benchmark.json")
    assert first == second
    assert set(first["iid"]["methods"]) == {"original", "retrain", "ft", "not", "tis", "random_reset"}
    assert first["iid"]["methods"]["ft"]["test_acc"]["n"] == 2


def test_command_line_keeps_other_scenarios(tmp_path, monkeypatch):
    monkeypatch.setitem(benchmark.SCALES["smoke"], "common", TINY)
    for scenario in ("iid", "dirichlet"):
        cli.main(["--scenario", scenario, "--seeds", "1", "--methods", "retrain", "--threads", "1",
                  "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "06_benchmark.json").read_text())["smoke"]
    assert sorted(saved["results"]) == ["dirichlet", "iid"] == saved["provenance"]["scenarios"]


def test_command_line_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--scenario", "nowhere"])
    assert "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------- tables from saved records
def test_tables_from_records(tiny_run):
    rec = json.loads(json.dumps(benchmark.record([tiny_run], TINY, seconds=1.0)))  # as loaded from the JSON
    records = {"backdoor": rec}
    table = benchmark.record_table(records, ["test_acc", "asr"], scale=100, digits=1)
    ft = rec["methods"]["ft"]["test_acc"]["mean"]
    assert table.loc[("backdoor", "ft"), "test_acc"] == f"{100 * ft:.1f}"          # n = 1: no interval
    means = benchmark.record_means(records, "avg_gap")
    assert means.loc["retrain", "backdoor"] == 0 and means.loc["tis", "backdoor"] > 0
    ranks = benchmark.rank_table(records)
    assert set(ranks.index) == set(rec["ranking"]) and (ranks["backdoor"] == 1).all()  # one seed: all tie
    assert (ranks["scenarios"] == 1).all()


def test_a_diverged_model_is_charged_and_not_comparable():
    p = benchmark.prepare("backdoor", TINY, seed=0, record_history=False)
    assert benchmark.measure(p, p.model)["diverged"] == 0
    broken = p.new_model()
    with torch.no_grad():
        next(broken.parameters())[0].fill_(float("nan"))
    m = benchmark.measure(p, broken)
    assert m["diverged"] == 1 and m["test_acc"] == m["retain_acc"] == m["backdoor_acc"] == 0   # utility: charged
    assert all(math.isnan(m[k]) for k in ("forget_acc", "asr", "mia_acc", "mia_auc"))       # not an attack at 0.5
    reference = {"retain_acc": 0.9, "forget_acc": 0.8, "test_acc": 0.8, "mia_auc": 0.5, "asr": 0.1}
    s = benchmark.run.scores(p, m, {**reference, "asr": 0.9}, reference)
    assert math.isnan(s["nfs"]) and math.isnan(s["avg_gap"]) and math.isnan(s["privacy_gap"])
    assert s["utility_gap"] == pytest.approx(85.0) and s["nta"] == 0    # by hand: (90 + 80) / 2 points


def test_derived_scores_use_the_attacks_auc_not_its_accuracy():
    # By hand. IID: NFS on the attack = (0.8 - 0.65) / (0.8 - 0.5) = 0.5 with the AUC; the accuracies (0.9, 0.9,
    # 0.5) would give 0. Average gap over retain, forget, test and the AUC: (0 + 10 + 0 + 15) / 4 = 6.25 points
    # (12.5 with the accuracy's 40-point gap); privacy gap over forget and AUC: (10 + 15) / 2 = 12.5.
    p = SimpleNamespace(scenario="iid", forgetting_metric=benchmark.setting.FORGETTING_METRIC["iid"])
    original = {"retain_acc": 0.95, "forget_acc": 0.95, "test_acc": 0.85, "mia_acc": 0.9, "mia_auc": 0.8}
    reference = {"retain_acc": 0.9, "forget_acc": 0.7, "test_acc": 0.85, "mia_acc": 0.5, "mia_auc": 0.5}
    method = {"retain_acc": 0.9, "forget_acc": 0.8, "test_acc": 0.85, "mia_acc": 0.9, "mia_auc": 0.65}
    s = benchmark.run.scores(p, method, original, reference)
    assert s["nfs"] == pytest.approx(0.5)
    assert s["avg_gap"] == pytest.approx(6.25) and s["privacy_gap"] == pytest.approx(12.5)


def test_a_method_with_a_nan_score_is_not_ranked():
    # "bad" would be best by its two finite seeds, but its third (a diverged run) is NaN: no rank, not a good one
    df = pd.DataFrame({"scenario": "iid", "seed": [0, 1, 2] * 3, "method": ["a"] * 3 + ["b"] * 3 + ["bad"] * 3,
                       "avg_gap": [1.0, 1.1, 0.9, 5.0, 5.2, 4.9, 0.1, 0.1, np.nan]})
    ranks = bstats.ranking(df)
    assert set(ranks.index.get_level_values("method")) == {"a", "b"}
    assert ranks.loc[("iid", "a"), "rank"] == 1 and ranks.loc[("iid", "b"), "rank"] == 2
    rows = [{**r, "diverged": float(np.isnan(r["avg_gap"]))} for r in df.to_dict("records")]
    results = [benchmark.SeedResult("iid", seed, rows=[r for r in rows if r["seed"] == seed]) for seed in range(3)]
    rec = benchmark.record(results, TINY)
    assert set(rec["ranking"]) == {"a", "b"} and rec["methods"]["bad"]["diverged"]["mean"] == pytest.approx(1 / 3)
    assert rec["methods"]["bad"]["avg_gap"]["n"] == 2     # the table's mean is over the comparable seeds only
