import numpy as np
import pytest
import torch

from conftest import make_blobs, tiny_net
from fuhelpers.curvature import hessian_diagonal
from fuhelpers.federation import Federation, Request, concat
from fuhelpers.fl import FedConfig
from fuhelpers.unlearn import random_reset, tis
from fuhelpers.unlearn.base import MissingRequirementError


def selected(mask):
    return set(torch.nonzero(mask.flatten()).flatten().tolist())


# ---------------------------------------------------------------- selection


@pytest.mark.parametrize("gamma, expected", [(0.0, set()), (0.5, {0}), (0.6, {0, 1}), (0.85, {0, 1, 2}),
                                             (0.95, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})])
def test_select_by_mass_takes_the_smallest_prefix_reaching_gamma(gamma, expected):
    scores = {"w": torch.tensor([1.0, 5.0, 3.0, 1.0, 0.0])}  # sorted: 5 (idx 1), 3 (2), 1 (0), 1 (3), 0 (4)
    relabel = {0: 1, 1: 2, 2: 0, 3: 3}  # rank -> index
    assert selected(tis.select_by_mass(scores, gamma)["w"]) == {relabel[r] for r in expected}


def test_select_by_mass_is_per_layer_keeps_shapes_and_breaks_ties_by_index():
    scores = {"a": torch.tensor([[5.0, 3.0], [1.0, 1.0]]), "b": torch.ones(4), "c": torch.zeros(3)}
    masks = tis.select_by_mass(scores, 0.5)
    assert masks["a"].shape == (2, 2) and masks["a"].dtype == torch.bool
    assert selected(masks["a"]) == {0}
    assert selected(masks["b"]) == {0, 1}  # ties: lowest indices first
    assert selected(masks["c"]) == set()  # an all-zero layer resets nothing
    assert selected(tis.select_by_mass(scores, 1.0)["c"]) == set()


def test_select_by_mass_validates():
    with pytest.raises(ValueError, match="fraction"):
        tis.select_by_mass({"w": torch.ones(3)}, 30)  # percent instead of a fraction
    with pytest.raises(ValueError, match="fraction"):
        tis.select_by_mass({"w": torch.ones(3)}, -0.1)
    with pytest.raises(ValueError, match="non-negative"):
        tis.select_by_mass({"w": torch.tensor([1.0, -1.0])}, 0.5)
    with pytest.raises(ValueError, match="finite"):
        tis.select_by_mass({"w": torch.tensor([1.0, float("nan")])}, 0.5)


def test_score_is_squared_ratio_and_zero_where_h_vanishes():
    h = {"w": torch.tensor([2.0, 0.0, 1e-3, -1.0])}
    h_prime = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    assert torch.allclose(tis.target_information_score(h, h_prime)["w"], torch.tensor([0.25, 0.0, 1e6, 0.0]))
    assert torch.equal(tis.target_information_score(h, h_prime, eps=1e-2)["w"], torch.tensor([0.25, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="eps"):
        tis.target_information_score(h, h_prime, eps=-1.0)


# ---------------------------------------------------------------- aggregation (Eq. 29-30)


@pytest.fixture
def fed():
    data = make_blobs(n=45)
    return Federation.from_partition(data, [np.arange(0, 15), np.arange(15, 30), np.arange(30, 45)],
                                     make_blobs(12, seed=1))


@pytest.mark.parametrize("method", ["exact", "ggn_exact"])
def test_aggregate_equals_the_diagonal_on_pooled_data(fed, method):
    net = tiny_net(seed=2)
    request = Request.for_samples({0: [0, 3, 4], 2: [1, 2, 7, 8, 9]})  # client 1 holds no target data
    curvatures = tis.client_curvatures(net, fed, request, method, batch_size=4)
    assert [(c.n_forget, c.n_retain) for c in curvatures] == [(3, 12), (0, 15), (5, 10)]
    assert curvatures[1].forget is None and curvatures[1].retain is not None
    h, h_prime = tis.aggregate(curvatures)
    pooled = hessian_diagonal(net, concat(fed.clients), method)
    target = hessian_diagonal(net, fed.forget_data(request), method)
    for name in pooled:
        assert torch.allclose(h[name], pooled[name], rtol=1e-4, atol=1e-7)
        assert torch.allclose(h_prime[name], target[name], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(h["3.weight"], h_prime["3.weight"], rtol=1e-2)


def test_aggregate_needs_target_data(fed):
    curvatures = tis.client_curvatures(tiny_net(), fed, Request.client(1))
    only_retain = [tis.ClientCurvature(c.client, 0, c.n_retain, None, c.retain) for c in curvatures]
    with pytest.raises(ValueError, match="no client holds data to forget"):
        tis.aggregate(only_retain)


def test_compute_scores_counts_one_round_and_two_diagonals_per_client(fed):
    net = tiny_net()
    scores = tis.compute_scores(net, fed, Request.client(1), tis.TISConfig())
    param_bytes = sum(p.numel() for p in net.parameters()) * 4
    assert scores.cost.rounds == 1
    assert scores.cost.bytes_up == 3 * 2 * param_bytes
    assert scores.cost.bytes_down == 3 * param_bytes
    assert scores.cost.seconds > 0 and scores.cost.flops > 0
    assert set(scores.tis) == {n for n, _ in net.named_parameters()}


# ---------------------------------------------------------------- unlearning


def reset_config(value, **kwargs):
    return tis.TISConfig(gamma=0.5, reset_value=value, init_state=tiny_net(seed=0).state_dict(), **kwargs)


@pytest.mark.parametrize("value", ["init", "zero"])
def test_unlearn_resets_selected_entries_only(fed, value):
    net = tiny_net(seed=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = tis.unlearn(net, fed, Request.client(1), reset_config(value))
    init = tiny_net(seed=0).state_dict()
    for name, p in out.model.named_parameters():
        mask = out.info["masks"][name]
        target = torch.zeros_like(p) if value == "zero" else init[name]
        assert torch.equal(p[mask], target[mask])
        assert torch.equal(p[~mask], before[name][~mask])
        assert out.info["counts"][name] == int(mask.sum()) > 0
    assert out.info["reset"] == sum(out.info["counts"].values())
    assert 0 < out.info["reset_fraction"] < 1 and out.info["gamma"] == 0.5
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # input untouched


def test_larger_gamma_resets_a_superset(fed):
    net, request = tiny_net(seed=5), Request.client(1)
    scores = tis.compute_scores(net, fed, request, tis.TISConfig())
    small = tis.unlearn(net, fed, request, reset_config("zero", scores=scores)).info["masks"]
    config = reset_config("zero", scores=scores)
    config.gamma = 0.9
    large = tis.unlearn(net, fed, request, config).info["masks"]
    assert all((small[n] <= large[n]).all() for n in small)
    assert sum(int(m.sum()) for m in large.values()) > sum(int(m.sum()) for m in small.values())


def test_init_reset_needs_the_initial_state(fed):
    with pytest.raises(MissingRequirementError, match="init_state"):
        tis.unlearn(tiny_net(), fed, Request.client(1), tis.TISConfig(reset_value="init"))


def test_config_validates():
    with pytest.raises(ValueError, match="fraction"):
        tis.TISConfig(gamma=30)
    with pytest.raises(ValueError, match="curvature"):
        tis.TISConfig(curvature="kfac")
    with pytest.raises(ValueError, match="reset_value"):
        tis.TISConfig(reset_value="random")


def test_random_reset_with_tis_counts_resets_as_many_per_layer_elsewhere(fed):
    net, request = tiny_net(seed=5), Request.client(1)
    out = tis.unlearn(net, fed, request, reset_config("zero"))
    cfg = random_reset.RandomResetConfig(counts=out.info["counts"], value="zero", seed=3)
    rand = random_reset.unlearn(net, fed, request, cfg)
    for name, mask in rand.info["masks"].items():
        assert int(mask.sum()) == out.info["counts"][name]
    assert any(not torch.equal(rand.info["masks"][n], out.info["masks"][n]) for n in out.info["masks"])


def test_random_reset_is_charged_the_curvature_round_that_gave_its_counts(fed):
    net, request = tiny_net(seed=5), Request.client(1)
    out = tis.unlearn(net, fed, request, reset_config("zero"))
    cfg = random_reset.RandomResetConfig(counts=out.info["counts"], value="zero", seed=3,
                                         counts_cost=out.info["scoring_cost"])
    rand = random_reset.unlearn(net, fed, request, cfg)
    # by hand: one round; each of the 3 clients gets the model (float32) and sends two diagonals back
    param_bytes = sum(p.numel() for p in net.parameters()) * 4
    assert rand.cost.rounds == 1
    assert rand.cost.bytes_down == 3 * param_bytes and rand.cost.bytes_up == 3 * 2 * param_bytes
    assert rand.cost.flops == out.cost.flops > 0  # the reset itself adds no training FLOPs, as for TIS
    free = random_reset.unlearn(net, fed, request, random_reset.RandomResetConfig(counts=out.info["counts"],
                                                                                  value="zero", seed=3))
    assert free.cost.rounds == 0 and free.cost.comm_mb == 0  # counts given for free: nothing charged


def finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_targeted_retraining_changes_only_reset_entries_and_skips_the_forgotten_client(fed):
    net, request = tiny_net(seed=5), Request.client(1)
    scores = tis.compute_scores(net, fed, request, tis.TISConfig())
    fed.clients[1].x[:] = float("nan")  # any use of client 1 from here on makes the weights NaN
    retrain = FedConfig(num_rounds=1, batch_size=5)
    reset_only = tis.unlearn(net, fed, request, reset_config("zero", scores=scores))
    out = tis.unlearn(net, fed, request, reset_config("zero", scores=scores, retrain=retrain))
    assert finite(out.model)
    changed = 0
    for (name, p), q in zip(out.model.named_parameters(), reset_only.model.parameters()):
        mask = out.info["masks"][name]
        assert torch.equal(p[~mask], q[~mask])
        changed += int((p[mask] != q[mask]).sum())
    assert changed > 0
    assert out.cost.rounds == 1 and reset_only.cost.rounds == 0  # precomputed scores cost nothing here
    # the trap works: retraining that includes client 1 breaks the model
    trap = tis.targeted_retrain(reset_only.model, fed, Request.client(0), out.info["masks"], retrain)
    assert not finite(trap.model)


def test_precomputed_scores_give_the_same_result(fed):
    net, request = tiny_net(seed=5), Request.client(1)
    computed = tis.unlearn(net, fed, request, reset_config("zero"))
    scores = tis.compute_scores(net, fed, request, tis.TISConfig())
    reused = tis.unlearn(net, fed, request, reset_config("zero", scores=scores))
    assert computed.cost.rounds == 1 and reused.cost.rounds == 0
    assert reused.cost.bytes_up == 0 and computed.cost.bytes_up > 0
    assert all(torch.equal(computed.info["masks"][n], reused.info["masks"][n]) for n in scores.tis)



def test_tis_unlearn_end_to_end_on_a_shrunk_resnet18():
    from fuhelpers.data import ArrayDataset
    from fuhelpers.models import ResNet18

    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(x=torch.rand(24, 3, 8, 8, generator=g), y=torch.arange(24) % 3, classes=list("abc"))
    fed = Federation.from_partition(data, [np.arange(0, 12), np.arange(12, 24)], data)
    torch.manual_seed(0)
    net = ResNet18(num_classes=3, width=8, norm="batch")
    init = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))  # "trained": away from the initial values
    out = tis.unlearn(net, fed, Request.client(1), tis.TISConfig(gamma=0.5, init_state=init))
    assert 0 < out.info["reset"] < sum(p.numel() for p in net.parameters())
    for name, p in out.model.named_parameters():
        mask = out.info["masks"][name]
        assert torch.equal(p[mask], init[name][mask]) and torch.equal(p[~mask], dict(net.named_parameters())[name][~mask])
    assert net.training  # the input model's mode is untouched
