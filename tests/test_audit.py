"""The privacy audit: LiRA against the exact likelihood ratio and the analytic ROC of Gaussian scores, RMIA
against a brute-force loop, trained models that memorise (and one that never saw the candidates), and the
reference federations of a shrunk experiment."""
import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from fuhelpers import audit
from fuhelpers.experiments import prepare, registry


# ---------------------------------------------------------------- scores and masks
def test_logit_confidence_and_probability_match_their_definitions():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(0, 3, (200, 10)), rng.integers(0, 10, 200)
    p = torch.softmax(torch.tensor(logits), 1).numpy()[np.arange(200), y]
    assert np.allclose(audit.true_class_probability(logits, y), p)
    assert np.allclose(audit.logit_confidence(logits, y), np.log(p) - np.log1p(-p))
    sure = audit.logit_confidence(np.array([[60.0, 0.0, 0.0]]), np.array([0]))   # p_y rounds to 1 in float64
    assert np.isfinite(sure).all() and sure[0] == pytest.approx(60 - np.log(2))


def test_each_candidate_is_in_exactly_half_of_the_reference_models():
    masks = audit.balanced_masks(16, 1000, seed=0)
    assert masks.shape == (16, 1000) and (masks.sum(0) == 8).all()
    assert np.abs(masks.sum(1) - 500).max() < 80                     # each model holds about half
    assert not np.array_equal(masks[0], masks[1])
    with pytest.raises(ValueError, match="even number"):
        audit.balanced_masks(5, 10, seed=0)


def _gaussian_world(n, num_refs, d, seed, spread=3.0, sd=1.0):
    """Per-candidate Gaussians of logit confidences: OUT ~ N(mu_i, sd), IN ~ N(mu_i + d, sd)."""
    rng = np.random.default_rng(seed)
    mu_out = rng.uniform(-spread, spread, n)
    ref_in = audit.balanced_masks(num_refs, n, seed=seed)
    ref = rng.normal(mu_out + d * ref_in, sd)
    member = rng.random(n) < 0.5
    target = rng.normal(mu_out + d * member, sd)
    return mu_out, ref, ref_in, member, target


# ---------------------------------------------------------------- LiRA
def test_lira_equals_the_exact_likelihood_ratio_with_many_reference_models():
    rng = np.random.default_rng(1)
    n, num_refs = 300, 4000
    mu_in, s_in = rng.uniform(-2, 6, n), rng.uniform(0.5, 2, n)
    mu_out, s_out = mu_in - rng.uniform(0.5, 3, n), rng.uniform(0.5, 2, n)
    ref_in = audit.balanced_masks(num_refs, n, seed=1)
    ref = np.where(ref_in, rng.normal(mu_in, s_in, (num_refs, n)), rng.normal(mu_out, s_out, (num_refs, n)))
    target = rng.normal(mu_out, s_out)
    exact = stats.norm.logpdf(target, mu_in, s_in) - stats.norm.logpdf(target, mu_out, s_out)
    online = audit.lira(target, ref, ref_in)
    assert np.corrcoef(online, exact)[0, 1] > 0.999
    assert np.median(np.abs(online - exact)) < 0.05
    assert np.allclose(audit.lira(target, ref, ref_in, online=False), (target - mu_out) / s_out, rtol=0.1, atol=0.1)
    swapped = audit.lira(target, ref, ~ref_in)                        # IN and OUT confused: the sign flips
    assert np.corrcoef(swapped, exact)[0, 1] < -0.99


@pytest.mark.parametrize("options", [dict(), dict(online=False), dict(fixed_variance=True)])
def test_lira_tpr_at_low_fpr_matches_the_analytic_roc(options):
    d, n = 2.0, 40_000
    mu_out, ref, ref_in, member, target = _gaussian_world(n, 256, d, seed=2)
    scores = audit.lira(target, ref, ref_in, **options)
    ev = audit.evaluate(scores, member, n_boot=50, seed=0)
    for fpr in audit.FPRS:   # equal variances: the optimal test thresholds (t - mu_out) / sd, N(d, 1) against N(0, 1)
        analytic = stats.norm.sf(stats.norm.isf(fpr) - d)
        value, low, high = ev[audit.fpr_key(fpr)]
        assert value == pytest.approx(analytic, abs=0.04), (fpr, value, analytic)
        assert low - 0.01 <= analytic <= high + 0.01
    assert ev["auc"][0] == pytest.approx(stats.norm.cdf(d / np.sqrt(2)), abs=0.01)
    raw = audit.evaluate(target, member, n_boot=2)                     # no reference models: the spread hides it
    assert raw["tpr_1pct"][0] < 0.5 * ev["tpr_1pct"][0]


def test_lira_needs_two_in_and_two_out_models_per_candidate():
    ref_in = np.array([[True, False], [True, False], [False, True], [False, False]])
    with pytest.raises(ValueError, match="at least two"):
        audit.lira(np.zeros(2), np.zeros((4, 2)), ref_in)


# ---------------------------------------------------------------- RMIA
def test_rmia_equals_a_brute_force_loop_over_population_samples():
    rng = np.random.default_rng(3)
    n, m, num_refs, a, gamma = 40, 30, 6, 0.3, 2.0
    target_p, pop_p = rng.uniform(0.01, 1, n), rng.uniform(0.01, 1, m)
    ref_p, pop_ref_p = rng.uniform(0.01, 1, (num_refs, n)), rng.uniform(0.01, 1, (num_refs, m))
    ref_in = audit.balanced_masks(num_refs, n, seed=3)
    expected = np.zeros(n)
    for i in range(n):
        outs = [ref_p[r, i] for r in range(num_refs) if not ref_in[r, i]]
        px = ((1 + a) * np.mean(outs) + 1 - a) / 2
        for j in range(m):
            pz = ((1 + a) * np.mean(pop_ref_p[:, j]) + 1 - a) / 2
            expected[i] += (target_p[i] / px) / (pop_p[j] / pz) >= gamma
    assert np.allclose(audit.rmia(target_p, ref_p, ref_in, pop_p, pop_ref_p, a=a, gamma=gamma), expected / m)


def test_tpr_at_fpr_and_auc_on_a_hand_made_case():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0], bool)
    assert audit.tpr_at_fpr(scores, labels, 0.0) == 0.5               # two of four members above every non-member
    assert audit.tpr_at_fpr(scores, labels, 1 / 6) == 0.75
    # AUC: of the 24 (member, non-member) pairs the member ranks higher in 6 + 6 + 5 + 3
    assert audit.evaluate(scores, labels, n_boot=5)["auc"][0] == pytest.approx(20 / 24)


# ---------------------------------------------------------------- real models
def _task(n, seed, dim=20, separation=0.5):
    """Ten overlapping Gaussian classes (a wide MLP reaches about 58 % test accuracy, 100 % on its training set)."""
    means = torch.randn(10, dim, generator=torch.Generator().manual_seed(0)) * separation
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return means[y] + torch.randn(n, dim, generator=g), y


def _fit(x, y, seed, steps=200):
    """A wide MLP trained full-batch until it memorises its training set."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def _confidences(net, x, y):
    with torch.no_grad():
        return audit.logit_confidence(net(x).double().numpy(), y.numpy())


def _reference_scores(x, y, masks, seed):
    return np.array([_confidences(_fit(x[inside], y[inside], seed=seed + r), x, y) for r, inside in enumerate(masks)])


def test_a_memorising_model_is_caught_at_low_fpr_far_more_than_by_the_loss_attack():
    x, y = _task(2400, seed=1)
    masks = audit.balanced_masks(18, len(y), seed=4)
    member, ref_in = masks[0], masks[1:]                               # the target is one more model of the family
    ref = _reference_scores(x, y, ref_in, seed=100)
    target = _fit(x[member], y[member], seed=99)
    conf = _confidences(target, x, y)
    lira = audit.evaluate(audit.lira(conf, ref, ref_in), member, n_boot=100)
    loss = audit.evaluate(np.log(audit.true_class_probability(target(x).detach().double().numpy(), y.numpy())),
                          member, n_boot=100)
    assert lira["tpr_0p1pct"][1] > 0.01                                # the interval's low end: ten times the FPR
    assert lira["tpr_0p1pct"][0] > 5 * max(loss["tpr_0p1pct"][0], 0.001)
    assert lira["tpr_1pct"][0] > 5 * max(loss["tpr_1pct"][0], 0.01)


def test_a_target_that_never_saw_the_candidates_gives_tpr_near_fpr():
    x, y = _task(2400, seed=1)
    ref_in = audit.balanced_masks(16, len(y), seed=5)
    ref = _reference_scores(x, y, ref_in, seed=200)
    other_x, other_y = _task(1200, seed=3)
    conf = _confidences(_fit(other_x, other_y, seed=7), x, y)          # trained on none of the candidates
    claimed = np.random.default_rng(6).random(len(y)) < 0.5            # "members" that never were
    ev = audit.evaluate(audit.lira(conf, ref, ref_in), claimed, n_boot=200)
    assert ev["auc"][1] <= 0.5 <= ev["auc"][2]
    assert ev["tpr_1pct"][1] <= 0.01 <= ev["tpr_1pct"][2]


# ---------------------------------------------------------------- reference federations
TINY = dataclasses.replace(registry.SMOKE, n_train=300, n_test=200, n_server=0, num_clients=4, num_rounds=2,
                           local_epochs=1)


def test_reference_federations_differ_from_the_federation_only_in_the_forgotten_clients_data(tmp_path):
    p = prepare("iid", TINY, seed=0, record_history=False)
    refs = audit.train_references(p, 4, pairs=50, show_progress=False)
    n = len(refs.candidates)
    assert n == 100 and refs.is_forget.sum() == 50
    assert refs.conf.shape == refs.prob.shape == refs.ref_in.shape == (4, n)
    assert refs.population_prob.shape == (4, len(p.federation.test) - 50)
    assert refs.cost.rounds == 4 * TINY.num_rounds
    clients = audit.reference.reference_clients(p, refs.candidates, refs.ref_in[0])
    target = p.request.clients[0]
    for c, data in enumerate(clients):
        if c == target:
            assert torch.equal(data.x, refs.candidates.x[refs.ref_in[0]])
        else:
            assert data is p.federation.clients[c]
    # the held-out candidates are test samples no client holds
    train_x = torch.cat([d.x.flatten(1) for d in p.federation.clients])
    held = refs.candidates.x[~torch.as_tensor(refs.is_forget)].flatten(1)
    assert not (torch.cdist(held, train_x).min(1).values == 0).any()
    measures, details = audit.audit(p.model, refs, n_boot=5)
    assert set(measures) == {f"{a}_{k}" for a in audit.ATTACKS for k in ("auc", "tpr_1pct", "tpr_0p1pct")}
    assert all(0 <= v <= 1 for v in measures.values())
    assert len(details["lira"]["roc"]["tpr"]) == len(details["lira"]["roc"]["fpr"])
    path = tmp_path / "refs.npz"
    refs.save(path)
    again = audit.load_or_train(p, 4, 50, path)
    assert np.array_equal(again.conf, refs.conf) and again.cost == refs.cost
    with pytest.raises(ValueError, match="other candidates"):
        audit.load_or_train(p, 4, 40, path)


def test_reference_federations_resume_where_a_stopped_run_left_them(tmp_path, monkeypatch):
    p = prepare("iid", TINY, seed=0, record_history=False)
    whole = audit.train_references(p, 4, pairs=30, show_progress=False)
    calls, real_train = [], audit.reference.train

    def stop_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("the session ended")
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(audit.reference, "train", stop_after_two)
    path = tmp_path / "refs.npz"
    with pytest.raises(KeyboardInterrupt):
        audit.load_or_train(p, 4, 30, path)
    assert not path.exists() and len(np.load(tmp_path / "refs.partial.npz")["conf"]) == 2
    monkeypatch.setattr(audit.reference, "train", real_train)
    resumed = audit.load_or_train(p, 4, 30, path)
    assert np.array_equal(resumed.conf, whole.conf) and np.array_equal(resumed.population_prob, whole.population_prob)
    assert resumed.cost.rounds == whole.cost.rounds and not (tmp_path / "refs.partial.npz").exists()
