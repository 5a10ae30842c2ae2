import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_blobs, tiny_net
from fuhelpers.federation import Federation, Request
from fuhelpers.fl import FedConfig, train
from fuhelpers.models import MnistCNN, ResNet18
from fuhelpers.unlearn import negation
from fuhelpers.unlearn.negation import NegationConfig, negate_, perturb_, resolve_layers


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return MnistCNN(in_channels=1, num_classes=3, image_size=8, width=(2, 3), hidden=4, kernel_size=3, padding=1)


def small_resnet():
    torch.manual_seed(0)
    return ResNet18(num_classes=3, in_channels=1, norm="batch", width=2)


def tanh_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3))


def finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- which tensors


CNN_CASES = [
    ("first", False, {"conv1.weight"}),
    ("first", True, {"conv1.weight", "conv1.bias"}),
    ("last", False, {"fc2.weight"}),
    ("last", True, {"fc2.weight", "fc2.bias"}),
    ("all", False, {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"}),
    ("all", True, {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                   "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}),
    (["conv2", "fc1.bias"], False, {"conv2.weight", "fc1.bias"}),
    (["conv2"], True, {"conv2.weight", "conv2.bias"}),
]


@pytest.mark.parametrize("layers, include_bias, expected", CNN_CASES)
def test_negation_touches_exactly_the_chosen_tensors(layers, include_bias, expected):
    net = small_cnn()
    assert set(resolve_layers(net, layers, include_bias=include_bias)) == expected
    before = {k: v.clone() for k, v in net.state_dict().items()}
    negate_(net, resolve_layers(net, layers, include_bias=include_bias))
    for name, value in net.state_dict().items():
        assert torch.equal(value, -before[name] if name in expected else before[name]), name


def test_resolve_layers_keeps_model_order_without_repeats():
    net = small_cnn()
    names = resolve_layers(net, ["fc2", "conv1", "conv1.weight"], include_bias=True)
    assert names == ["conv1.weight", "conv1.bias", "fc2.weight", "fc2.bias"]


def test_include_norm_takes_the_normalisation_after_each_chosen_layer():
    net = small_resnet()
    assert resolve_layers(net, "first") == ["conv1.weight"]  # no bias before BatchNorm
    assert resolve_layers(net, "first", include_norm=True) == ["conv1.weight", "norm1.weight"]
    assert resolve_layers(net, "first", include_bias=True, include_norm=True) == [
        "conv1.weight", "norm1.weight", "norm1.bias"]
    assert resolve_layers(net, "last", include_norm=True) == ["fc.weight"]
    assert set(resolve_layers(net, ["layer2.0.shortcut.0"], include_norm=True)) == {
        "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.weight"}


def test_all_layers_with_and_without_normalisation():
    net = small_resnet()
    params = dict(net.named_parameters())
    # conv / linear weights are the only parameters with 2+ dimensions in ResNet18
    assert set(resolve_layers(net, "all")) == {n for n, p in params.items() if p.ndim > 1}
    assert set(resolve_layers(net, "all", include_norm=True)) == {n for n in params if n.endswith("weight")}
    assert set(resolve_layers(net, "all", include_bias=True, include_norm=True)) == set(params)


@pytest.mark.parametrize("layers, match", [("middle", "layers must be one of"), ("conv1", "for one module"),
                                           ([], "empty"), (["conv9"], "conv9"), (["relu1"], "relu1")])
def test_resolve_layers_rejects_unknown_names(layers, match):
    with pytest.raises(ValueError, match=match):
        resolve_layers(small_cnn(), layers)


def test_negate_and_perturb_validate_their_arguments():
    net = small_cnn()
    with pytest.raises(ValueError, match="not parameters"):
        negate_(net, ["conv1.weight", "conv3.weight"])
    with pytest.raises(ValueError, match="kind must be"):
        perturb_(net, ["conv1.weight"], "flip")


def test_negating_twice_is_the_identity_bit_exact():
    net = small_cnn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    names = resolve_layers(net, "all", include_bias=True)
    negate_(net, names)
    assert not torch.equal(net.conv1.weight, before["conv1.weight"])
    negate_(net, names)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


# ---------------------------------------------------------------- why negation


@pytest.mark.parametrize("k", [0, 2])
def test_odd_activation_negating_a_layer_and_the_next_weight_keeps_the_function(k):
    net = tanh_mlp()
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x)
        names = resolve_layers(net, [str(k), f"{k + 2}.weight"], include_bias=True)
        assert set(names) == {f"{k}.weight", f"{k}.bias", f"{k + 2}.weight"}
        negate_(net, [f"{k}.weight", f"{k}.bias"])
        one_negated = net(x)
        negate_(net, [f"{k + 2}.weight"])  # the one layer-wise step back to the optimum
        both_negated = net(x)
    assert (one_negated - ref).abs().max() > 1e-2
    torch.testing.assert_close(both_negated, ref)


def test_relu_identity_of_negation():
    y = 3 * torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.relu(y) - torch.relu(-y), y)
    assert not torch.equal(torch.relu(y) - torch.relu(y + 1), y)  # the identity is specific to -y


def activation_change(activation, w, w_new, x):
    """Mean over samples of ||s(W x) - s(W' x)||^2."""
    return ((activation(x @ w.T) - activation(x @ w_new.T)) ** 2).sum(1).mean().item()


@pytest.mark.parametrize("activation", [torch.relu, torch.tanh])
def test_among_weights_of_equal_norm_negation_moves_activations_most(activation):
    torch.manual_seed(0)
    w = nn.Linear(32, 64, bias=False).weight.detach()
    x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(1))
    on_sphere = lambda v: v * w.norm() / v.norm()  # same norm as w
    noise = np.mean([activation_change(activation, w, on_sphere(torch.randn(64, 32, generator=torch.Generator()
                                                                             .manual_seed(s))), x)
                     for s in range(10)])
    reinit = []
    for s in range(10):
        torch.manual_seed(100 + s)
        reinit.append(activation_change(activation, w, on_sphere(nn.Linear(32, 64, bias=False).weight.detach()), x))
    negation_change = activation_change(activation, w, -w, x)
    assert negation_change > 1.2 * noise
    assert negation_change > 1.2 * np.mean(reinit)


def test_noise_of_negations_change_norm_vs_negation_for_a_random_layer_and_gaussian_inputs():
    """The one case the module docstring states: no bias, rows of equal norm, inputs N(0, I).

    Per unit, y ~ N(0, s^2) and y + delta ~ N(0, 5 s^2) with correlation 1/sqrt(5); with the Gaussian
    moments E[relu(a)^2] = var/2 and E[relu(a) relu(b)] = s_a s_b (sqrt(1 - r^2) + r (pi - arccos r)) / (2 pi),
    E[(relu(y + delta) - relu(y))^2] / E[y^2] = 2 - (2 - arccos(1/sqrt 5)) / pi = 1.716.
    """
    torch.manual_seed(0)
    layer = nn.Linear(32, 64, bias=False)
    with torch.no_grad():
        layer.weight /= layer.weight.norm(dim=1, keepdim=True)
    w = layer.weight.detach().clone()
    x = torch.randn(2000, 32, generator=torch.Generator().manual_seed(1))
    changes = []
    for s in range(5):
        noisy = copy.deepcopy(layer)
        perturb_(noisy, ["weight"], "noise", seed=s)
        changes.append(activation_change(torch.relu, w, noisy.weight.detach(), x))
    expected = 2 - (2 - math.acos(1 / math.sqrt(5))) / math.pi
    assert np.mean(changes) / activation_change(torch.relu, w, -w, x) == pytest.approx(expected, abs=0.05)


# ---------------------------------------------------------------- ablation perturbations


def test_noise_has_negations_change_norm_is_seeded_and_touches_only_named():
    net = small_cnn()
    names = resolve_layers(net, "all")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    a, b, c = copy.deepcopy(net), copy.deepcopy(net), copy.deepcopy(net)
    perturb_(a, names, "noise", seed=3)
    perturb_(b, names, "noise", seed=3)
    perturb_(c, names, "noise", seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    for name, value in a.state_dict().items():
        if name in names:
            delta = value - before[name]
            torch.testing.assert_close(delta.norm(), 2 * before[name].norm())
            assert not torch.allclose(value, -before[name], atol=1e-3)  # not negation
            assert torch.equal(value, b.state_dict()[name])
            assert not torch.equal(value, c.state_dict()[name])
        else:
            assert torch.equal(value, before[name])


def test_reinit_is_the_modules_fresh_initialisation_under_the_seed():
    net = tiny_net()
    bias = net[1].bias.detach().clone()
    rng_state = torch.random.get_rng_state()
    a, b, c = copy.deepcopy(net), copy.deepcopy(net), copy.deepcopy(net)
    for model, seed in ((a, 5), (b, 5), (c, 6)):
        perturb_(model, ["1.weight"], "reinit", seed=seed)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.equal(a[1].weight, b[1].weight) and not torch.equal(a[1].weight, c[1].weight)
    assert torch.equal(a[1].bias, bias)  # not named: untouched although reset_parameters resets it
    assert torch.equal(a[3].weight, net[3].weight)
    torch.manual_seed(5)
    reference = nn.Linear(16, 8)  # the constructor calls reset_parameters with the global RNG
    assert torch.equal(a[1].weight, reference.weight)


# ---------------------------------------------------------------- the method


@pytest.fixture
def poisoned_fed():
    """Client 1's data is NaN: any method that trains on it produces NaN weights."""
    data = make_blobs(n=45)
    data.x[15:30] = float("nan")
    return Federation.from_partition(data, [np.arange(0, 15), np.arange(15, 30), np.arange(30, 45)],
                                     make_blobs(12, seed=1))


class Tripwire:
    """Stands in for a history: any use of it fails the test."""

    def __getattribute__(self, name):
        raise AssertionError(f"history.{name} was touched")

    def __bool__(self):
        raise AssertionError("history was tested for truth")


CFG = FedConfig(num_rounds=2, batch_size=5)


def test_recovery_excludes_the_forgotten_client_and_ignores_history(poisoned_fed):
    assert not finite(train(tiny_net(), poisoned_fed.clients, CFG).model)  # the trap works
    out = negation.unlearn(tiny_net(), poisoned_fed, Request.client(1), NegationConfig(recovery=CFG),
                           history=Tripwire())
    assert finite(out.model)
    assert out.info["clients"] == [0, 2]


def test_sample_request_keeps_the_target_clients_retained_data():
    data = make_blobs(n=45)
    data.x[15:20] = float("nan")  # client 1's first five samples are the ones to forget
    fed = Federation.from_partition(data, [np.arange(0, 15), np.arange(15, 30), np.arange(30, 45)],
                                    make_blobs(12, seed=1))
    out = negation.unlearn(tiny_net(), fed, Request.for_samples({1: range(5)}), NegationConfig(recovery=CFG))
    assert finite(out.model)
    assert out.info["clients"] == [0, 1, 2]


def test_target_participation_is_refused_for_client_requests(poisoned_fed):
    with pytest.raises(ValueError, match="target_participates"):
        negation.unlearn(tiny_net(), poisoned_fed, Request.client(1),
                         NegationConfig(recovery=CFG, target_participates=True))


def test_unlearn_is_negation_then_fedavg_on_retained_clients(poisoned_fed):
    net = tiny_net(seed=2)
    before = [p.detach().clone() for p in net.parameters()]
    first = net[1].weight[0, 0].item()
    out = negation.unlearn(net, poisoned_fed, Request.client(1), NegationConfig(recovery=CFG),
                           evaluate=lambda m: {"w00": m[1].weight[0, 0].item()})
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # input model not edited
    reference = copy.deepcopy(net)
    with torch.no_grad():
        reference[1].weight.mul_(-1)
    reference = train(reference, [poisoned_fed.clients[0], poisoned_fed.clients[2]], CFG, client_ids=[0, 2]).model
    assert all(torch.equal(a, b) for a, b in zip(out.model.parameters(), reference.parameters()))
    assert [entry["round"] for entry in out.log] == [0, 1, 2]
    assert out.log[0]["w00"] == -first  # round 0 is right after negation
    assert out.cost.rounds == 2 and out.cost.seconds > 0
    assert out.info["negated"] == ["1.weight"]
    assert out.info["perturbation"] == "negate"
    assert out.info["num_params_perturbed"] == 16 * 8

