"""Tests of fuhelpers.metrics on hand-computed cases and tiny generated data."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from torch.utils.data import TensorDataset

from fuhelpers import metrics
from fuhelpers.metrics import _stratified_halves, mia_from_scores


class XYDataset(torch.utils.data.Dataset):
    """Minimal stand-in for ArrayDataset: exposes ``.x`` and ``.y`` tensors."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def identity_classifier() -> torch.nn.Linear:
    """2 -> 2 linear layer with weight I and bias 0: predicts the arg-max coordinate."""
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    return model


X_HAND = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0], [1.0, 2.0]])
Y_HAND = torch.tensor([0, 1, 1, 0])  # predictions are 0, 1, 0, 1: two right


# --------------------------------------------------------------------------- #
# Model outputs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("make_data", [XYDataset, TensorDataset], ids=["x_y_attributes", "dataloader"])
def test_accuracy_of_hand_set_linear_model(make_data):
    data = make_data(X_HAND, Y_HAND)
    assert metrics.accuracy(identity_classifier(), data, batch_size=3) == pytest.approx(0.5)
    flipped = make_data(X_HAND, 1 - Y_HAND)
    assert metrics.accuracy(identity_classifier(), flipped) == pytest.approx(0.5)
    matching = make_data(X_HAND, torch.tensor([0, 1, 0, 1]))
    assert metrics.accuracy(identity_classifier(), matching) == pytest.approx(1.0)


def test_accuracy_of_empty_dataset_is_nan():
    empty = XYDataset(torch.empty(0, 2), torch.empty(0, dtype=torch.long))
    assert math.isnan(metrics.accuracy(identity_classifier(), empty))
    assert metrics.per_sample_loss(identity_classifier(), empty).shape == (0,)


def test_predict_returns_logits_in_order():
    logits = metrics.predict(identity_classifier(), XYDataset(X_HAND, Y_HAND), batch_size=1)
    torch.testing.assert_close(logits, X_HAND)


def test_per_sample_loss_matches_hand_cross_entropy():
    # logits = x, so loss_i = log(exp(x_i0) + exp(x_i1)) - x_{i, y_i}
    expected = [math.log(math.exp(a) + math.exp(b)) - (a, b)[y] for (a, b), y in zip(X_HAND.tolist(), Y_HAND.tolist())]
    losses = metrics.per_sample_loss(identity_classifier(), XYDataset(X_HAND, Y_HAND))
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    assert losses[0] == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_predict_restores_train_and_eval_modes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
    model.train()
    model[1].eval()  # a mixed state must survive too
    seen_modes = []
    model[1].register_forward_hook(lambda module, inputs, output: seen_modes.append(module.training))
    metrics.predict(model, XYDataset(X_HAND, Y_HAND))
    assert seen_modes == [False]
    assert model.training and model[0].training and not model[1].training


def test_attack_features_by_hand():
    logits = torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1)]])
    model = torch.nn.Linear(1, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(logits[0])
    features = metrics.attack_features(model, XYDataset(torch.zeros(1, 1), torch.tensor([1])))
    p = [0.7, 0.2, 0.1]
    assert features["confidence"][0] == pytest.approx(0.2)
    assert features["loss"][0] == pytest.approx(-math.log(0.2))
    assert features["entropy"][0] == pytest.approx(-sum(q * math.log(q) for q in p))
    mentr = -(1 - 0.2) * math.log(0.2) - 0.7 * math.log(1 - 0.7) - 0.1 * math.log(1 - 0.1)
    assert features["modified_entropy"][0] == pytest.approx(mentr)


# --------------------------------------------------------------------------- #
# Membership inference from hand-made scores
# --------------------------------------------------------------------------- #
def test_mia_on_identical_distributions_is_chance():
    rng = np.random.default_rng(1)
    result = metrics.mia_from_scores(rng.normal(size=2000), rng.normal(size=2000), seed=0, n_splits=5)
    assert result.accuracy == pytest.approx(0.5, abs=0.05)
    assert result.auc == pytest.approx(0.5, abs=0.05)
    assert result.tpr_at_1pct_fpr < 0.05  # chance: TPR ~ FPR
    assert (result.n_members, result.n_nonmembers) == (2000, 2000)


def test_mia_on_separated_distributions_is_strong():
    rng = np.random.default_rng(2)
    # members have lower scores (like losses): the attack must learn the sign
    result = metrics.mia_from_scores(rng.normal(-2.5, 1, 2000), rng.normal(2.5, 1, 2000), seed=0)
    assert result.accuracy > 0.95 and result.auc > 0.95
    assert result.tpr_at_1pct_fpr > 0.5
    assert set(result.as_dict()) == {
        "accuracy", "auc", "tpr_at_1pct_fpr", "tpr_at_01pct_fpr", "n_members", "n_nonmembers"
    }


def test_mia_balancing_removes_the_majority_class_advantage():
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(size=100), rng.normal(size=10_000)
    balanced = metrics.mia_from_scores(members, nonmembers, seed=0)
    assert (balanced.n_members, balanced.n_nonmembers) == (100, 100)
    assert 0.35 < balanced.accuracy < 0.65
    assert not math.isnan(balanced.tpr_at_1pct_fpr)  # 100 non-members: 1 % FPR is 1 sample
    assert math.isnan(balanced.tpr_at_01pct_fpr)  # 0.1 % FPR would need 1000
    unbalanced = metrics.mia_from_scores(members, nonmembers, seed=0, balance=False)
    assert unbalanced.accuracy > 0.98  # what predicting "non-member" for everyone gives


def test_mia_scores_out_of_fold():
    rng = np.random.default_rng(4)
    members, nonmembers = rng.normal(size=(150, 200)), rng.normal(size=(150, 200))
    # The same attack fitted and scored on the same samples memorises the noise ...
    features = np.concatenate([members, nonmembers])
    labels = np.r_[np.ones(150), np.zeros(150)]
    in_sample = LogisticRegression().fit(features, labels).score(features, labels)
    assert in_sample > 0.9
    # ... while out-of-fold scoring stays at chance.
    result = metrics.mia_from_scores(members, nonmembers, seed=0)
    assert result.accuracy == pytest.approx(0.5, abs=0.1)
    assert result.auc == pytest.approx(0.5, abs=0.1)


def test_mia_is_seeded_and_validates():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=300), rng.normal(0.3, 1, 300)
    first, again = metrics.mia_from_scores(a, b, seed=7), metrics.mia_from_scores(a, b, seed=7)
    np.testing.assert_equal(first.as_dict(), again.as_dict())  # nan == nan here
    with pytest.raises(ValueError):
        metrics.mia_from_scores(a[:3], b, n_splits=5)
    with pytest.raises(ValueError):
        metrics.mia_from_scores(a, np.r_[b[:-1], np.nan])


# --------------------------------------------------------------------------- #
# Membership inference on a model that memorised its training set
# --------------------------------------------------------------------------- #
N_FEATURES, N_CLASSES = 20, 10


def random_label_data(n, generator):
    x = torch.randn(n, N_FEATURES, generator=generator)
    y = torch.randint(0, N_CLASSES, (n,), generator=generator)
    return XYDataset(x, y)


@pytest.fixture(scope="module")
def memorised():
    """An MLP at 100 % train accuracy on 200 random-label samples, and fresh samples."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    train = random_label_data(200, generator)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 256), torch.nn.ReLU(), torch.nn.Linear(256, N_CLASSES)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(train.x), train.y).backward()
        optimizer.step()
    assert metrics.accuracy(model, train) == 1.0
    return model, train, random_label_data(2000, generator), random_label_data(2000, generator)


def test_mia_loss_attack_detects_memorised_members(memorised):
    model, train, fresh, _ = memorised
    result = metrics.mia_loss_attack(model, train, fresh, seed=0)
    assert result.accuracy > 0.8 and result.auc > 0.8
    assert result.n_members == result.n_nonmembers == 200


def test_calibrated_loss_attack_calls_memorised_members_members(memorised):
    # as evaluate() uses it: fitted on known members against fresh samples, scored on other members and
    # other fresh samples. A member must score as a member: swapping the groups anywhere gives AUC << 0.5.
    model, train, fresh, other_fresh = memorised
    part = lambda d, a, b: XYDataset(d.x[a:b], d.y[a:b])
    result = metrics.mia_loss_attack(model, part(train, 100, 200), part(other_fresh, 0, 100),
                                     fit_members=part(train, 0, 100), fit_nonmembers=part(fresh, 0, 100), seed=0)
    assert result.auc > 0.8 and result.accuracy > 0.8


def test_mia_loss_attack_is_chance_on_two_fresh_samples(memorised):
    model, _, fresh, other_fresh = memorised
    result = metrics.mia_loss_attack(model, fresh, other_fresh, seed=0)
    assert result.accuracy == pytest.approx(0.5, abs=0.05)
    assert result.auc == pytest.approx(0.5, abs=0.05)


def test_mia_efficacy_separates_training_from_fresh_forget_sets(memorised):
    model, train, fresh, other_fresh = memorised
    retain = XYDataset(train.x[:150], train.y[:150])
    forget_members = XYDataset(train.x[150:], train.y[150:])  # trained on, unseen by the SVC
    forget_fresh = XYDataset(other_fresh.x[:50], other_fresh.y[:50])
    efficacy_members = metrics.mia_efficacy(model, retain, fresh, forget_members, seed=0)
    efficacy_fresh = metrics.mia_efficacy(model, retain, fresh, forget_fresh, seed=0)
    assert efficacy_members < 0.2
    assert efficacy_fresh > 0.8


def test_mia_efficacy_from_features_balances_and_caps():
    rng = np.random.default_rng(6)
    members, nonmembers = rng.normal(-3, 1, (50, 2)), rng.normal(3, 1, (5000, 2))
    targets = np.r_[rng.normal(-3, 1, (20, 2)), rng.normal(3, 1, (30, 2))]
    efficacy = metrics.mia_efficacy_from_features(members, nonmembers, targets, seed=0, max_samples=40)
    assert efficacy == pytest.approx(30 / 50, abs=0.04)
    assert math.isnan(metrics.mia_efficacy_from_features(members, nonmembers, np.empty((0, 2))))


# --------------------------------------------------------------------------- #
# Normalised scores, backdoor, T2F, average gap
# --------------------------------------------------------------------------- #
def test_nta_nfs_rtr_on_hand_numbers():
    assert metrics.nta(0.6015, 0.7321) == pytest.approx(0.8216, abs=1e-4)
    assert metrics.nfs(0.99, 0.10, 0.0) == pytest.approx(0.89 / 0.99)
    assert metrics.nfs(0.80, 0.55, 0.50) == pytest.approx(25 / 30)  # NFS_MIA style
    assert metrics.nfs(0.8, 0.9, 0.5) == pytest.approx(-1 / 3)  # unlearning made it worse
    assert metrics.rtr(30.0, 120.0) == pytest.approx(0.25)


def test_normalised_scores_are_nan_when_undefined(recwarn):
    assert math.isnan(metrics.nfs(0.5, 0.4, 0.5))
    assert math.isnan(metrics.nta(0.5, 0.0))
    assert len(recwarn) == 0
    with pytest.raises(ValueError):
        metrics.rtr(1.0, 0.0)


def test_attack_success_rate_and_backdoor_accuracy():
    model = identity_classifier()
    triggered = X_HAND[[0, 2]]  # both predicted 0: the backdoor target
    assert metrics.attack_success_rate(model, XYDataset(triggered, torch.tensor([0, 0]))) == 1.0
    assert metrics.backdoor_accuracy(model, XYDataset(triggered, torch.tensor([1, 1]))) == 0.0


def test_time_to_forget():
    assert metrics.time_to_forget([0.9, 0.5, 0.3, 0.4]) == pytest.approx(0.3)
    assert metrics.time_to_forget([0.9, 0.3, 0.6, 0.3]) == pytest.approx(0.6)  # first minimum
    assert math.isnan(metrics.time_to_forget([0.9]))
    assert math.isnan(metrics.time_to_forget([0.5, 0.6, 0.7]))
    with pytest.raises(ValueError):
        metrics.time_to_forget([])


def test_avg_gap_by_hand():
    method = {"retain_acc": 0.9169, "forget_acc": 0.8386, "test_acc": 0.8265, "mia": 0.5023}
    retrain = {"retain_acc": 0.9166, "forget_acc": 0.8305, "test_acc": 0.8232, "mia": 0.5023}
    # (0.03 + 0.81 + 0.33 + 0) / 4 percentage points
    assert metrics.avg_gap(method, retrain) == pytest.approx(0.2925)
    as_percent = {k: 100 * v for k, v in method.items()}, {k: 100 * v for k, v in retrain.items()}
    assert metrics.avg_gap(*as_percent, scale=1.0) == pytest.approx(0.2925)
    assert metrics.avg_gap(method, retrain, keys=("forget_acc",)) == pytest.approx(0.81)
    with pytest.raises(ValueError):
        metrics.avg_gap(method, {"mia": 0.5})


def test_summarize_matches_scipy():
    values = [0.71, 0.74, 0.69, 0.80, 0.76]
    summary = metrics.summarize(values)
    low, high = stats.t.interval(0.95, df=4, loc=np.mean(values), scale=stats.sem(values))
    assert summary["n"] == 5
    assert summary["mean"] == pytest.approx(0.74)
    assert summary["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["ci95"] == pytest.approx((high - low) / 2)
    single = metrics.summarize([0.5])
    assert single["std"] == 0.0 and math.isnan(single["ci95"])


def test_cross_validation_is_anti_biased_on_one_fixed_sample_without_signal():
    # One fixed sample with exactly no member/non-member difference (the non-members are a permutation of the
    # members): what the held-out fold lacks, the others have, so cross-validation sits below chance.
    rng = np.random.default_rng(0)
    members = rng.normal(size=600)
    nonmembers = rng.permutation(members)
    cv = np.mean([mia_from_scores(members, nonmembers, seed=s).accuracy for s in range(5)])
    assert cv < 0.49


def test_calibrated_attack_is_at_chance_without_signal():
    # Members and non-members drawn independently from one distribution, the attack fitted on a disjoint
    # calibration set with a real signal: accuracy and AUC are 0.5 up to sampling noise. 30 draws of 600 + 600:
    # the mean accuracy has standard error sqrt(0.25 / 1200 / 30) = 0.0026; allow 4 of them.
    rng = np.random.default_rng(0)
    runs = [mia_from_scores(rng.normal(size=600), rng.normal(size=600), fit_members=rng.normal(-1, 1, 500),
                            fit_nonmembers=rng.normal(1, 1, 500), seed=s) for s in range(30)]
    assert abs(np.mean([r.accuracy for r in runs]) - 0.5) < 0.011
    assert abs(np.mean([r.auc for r in runs]) - 0.5) < 0.011


def test_calibrated_attack_recovers_a_planted_signal_of_known_strength():
    # Members N(-0.5, 1), non-members N(0.5, 1), calibration alike: the fitted threshold is the midpoint 0, so
    # accuracy = Phi(0.5) = 0.691 and AUC = P(member < non-member) = Phi(1 / sqrt 2) = 0.760.
    rng = np.random.default_rng(2)
    res = mia_from_scores(rng.normal(-0.5, 1, 3000), rng.normal(0.5, 1, 3000),
                          fit_members=rng.normal(-0.5, 1, 3000), fit_nonmembers=rng.normal(0.5, 1, 3000))
    assert res.accuracy == pytest.approx(stats.norm.cdf(0.5), abs=0.03)
    assert res.auc == pytest.approx(stats.norm.cdf(1 / math.sqrt(2)), abs=0.03)


def test_attack_accuracy_depends_on_the_calibration_threshold_and_auc_does_not():
    # Why derived scores use the AUC: a method that lowers the retain (calibration members') losses by 2 moves
    # the fitted threshold from 0 to the new midpoint -1, so the accuracy on the same scored samples falls to
    # (Phi(-0.5) + Phi(1.5)) / 2 = 0.621; the attack stays monotone in the one feature, so the AUC is unchanged.
    rng = np.random.default_rng(3)
    members, nonmembers = rng.normal(-0.5, 1, 3000), rng.normal(0.5, 1, 3000)
    fit_n = rng.normal(0.5, 1, 3000)
    fit_m = rng.normal(-0.5, 1, 3000)
    plain = mia_from_scores(members, nonmembers, fit_members=fit_m, fit_nonmembers=fit_n)
    lowered = mia_from_scores(members, nonmembers, fit_members=fit_m - 2.0, fit_nonmembers=fit_n)
    assert lowered.accuracy == pytest.approx((stats.norm.cdf(-0.5) + stats.norm.cdf(1.5)) / 2, abs=0.03)
    assert plain.accuracy - lowered.accuracy > 0.04
    assert lowered.auc == pytest.approx(plain.auc, abs=1e-12)


def test_calibrated_attack_detects_a_real_signal():
    rng = np.random.default_rng(1)
    res = mia_from_scores(rng.normal(-2, 1, 400), rng.normal(2, 1, 400),
                          fit_members=rng.normal(-2, 1, 300), fit_nonmembers=rng.normal(2, 1, 300))
    assert res.accuracy > 0.95 and res.auc > 0.99
    with pytest.raises(ValueError, match="both"):
        mia_from_scores([1.0] * 10, [2.0] * 10, fit_members=[1.0] * 5)


def test_stratified_halves_are_disjoint_complete_and_even():
    labels = np.array([0] * 10 + [1] * 7 + [2] * 4)
    a, b = _stratified_halves(labels, seed=3)
    assert np.intersect1d(a, b).size == 0 and np.union1d(a, b).size == len(labels)
    assert np.bincount(labels[a]).tolist() == [5, 3, 2]
