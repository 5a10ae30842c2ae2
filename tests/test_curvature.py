import pytest
import torch
from torch import nn
from torch.func import functional_call

from conftest import tiny_net
from fuhelpers.cost import train_flops_per_sample
from fuhelpers.curvature import curvature_flops_per_sample, hessian_diagonal
from fuhelpers.data import ArrayDataset
from fuhelpers.models import ResNet18


def tanh_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3)).double()


def linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3)).double()


def tiny_data(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return ArrayDataset(x=x, y=torch.randint(0, 3, (n,), generator=g), classes=["a", "b", "c"])


def flat(diag):
    return torch.cat([d.flatten() for d in diag.values()])


def brute_force_diagonal(model, data):
    """diag of the full Hessian of the mean loss w.r.t. all parameters, flattened in named_parameters order."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def loss(theta):
        params = {n: t.view(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(model, params, (data.x,)), data.y)

    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    return torch.autograd.functional.hessian(loss, theta).diagonal()


def relative_error(a, b):
    return float((flat(a) - flat(b)).norm() / flat(b).norm())


def test_exact_matches_brute_force_hessian():
    model, data = tanh_mlp(), tiny_data()
    ours = hessian_diagonal(model, data, "exact", batch_size=7)
    assert list(ours) == [n for n, _ in model.named_parameters()]
    assert all(ours[n].shape == p.shape for n, p in model.named_parameters())
    assert torch.allclose(flat(ours), brute_force_diagonal(model, data), rtol=1e-10, atol=1e-12)


def test_diag_hessian_equals_exact():
    model, data = tanh_mlp(), tiny_data()
    assert torch.allclose(flat(hessian_diagonal(model, data, "diag_hessian")),
                          flat(hessian_diagonal(model, data, "exact")), rtol=1e-8, atol=1e-12)


def test_ggn_equals_hessian_only_for_a_linear_model():
    data = tiny_data()
    linear = linear_model()
    assert torch.allclose(flat(hessian_diagonal(linear, data, "ggn_exact")),
                          flat(hessian_diagonal(linear, data, "exact")), rtol=1e-8, atol=1e-12)
    mlp = tanh_mlp()
    assert relative_error(hessian_diagonal(mlp, data, "ggn_exact"), hessian_diagonal(mlp, data, "exact")) > 1e-2


def test_ggn_mc_converges_to_ggn_exact_and_is_seeded():
    model, data = tanh_mlp(), tiny_data()
    exact = hessian_diagonal(model, data, "ggn_exact")
    few = hessian_diagonal(model, data, "ggn_mc", mc_samples=1, seed=0)
    many = hessian_diagonal(model, data, "ggn_mc", mc_samples=200, seed=0)
    assert relative_error(many, exact) < 0.1 < relative_error(few, exact)
    state = torch.random.get_rng_state()
    again = hessian_diagonal(model, data, "ggn_mc", mc_samples=200, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(flat(again), flat(many))
    assert not torch.equal(flat(hessian_diagonal(model, data, "ggn_mc", mc_samples=200, seed=1)), flat(many))


@pytest.mark.parametrize("method", ["exact", "diag_hessian", "ggn_exact"])
def test_result_does_not_depend_on_batch_size(method):
    model, data = tanh_mlp(), tiny_data()
    small = hessian_diagonal(model, data, method, batch_size=3)  # 20 = 6 * 3 + 2: uneven last batch
    full = hessian_diagonal(model, data, method, batch_size=len(data))
    assert torch.allclose(flat(small), flat(full), rtol=1e-10, atol=1e-14)


def assert_untouched(model, before_state, was_training):
    assert model.training == was_training
    after = model.state_dict()
    assert all(torch.equal(before_state[k], after[k]) for k in before_state)
    for module in model.modules():
        assert not hasattr(module, "input0") and not hasattr(module, "output")
        assert not module._forward_hooks and not module._backward_hooks
    for p in model.parameters():
        assert p.grad is None
        assert not any(hasattr(p, f) for f in ("diag_h", "diag_ggn_exact", "diag_ggn_mc"))


@pytest.mark.parametrize("method", ["exact", "diag_hessian", "ggn_exact", "ggn_mc"])
def test_input_model_is_unchanged(method):
    model, data = tanh_mlp(), tiny_data()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hessian_diagonal(model, data, method)
    assert_untouched(model, before, was_training=True)


def images(n=8, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(x=torch.rand(n, 3, size, size, generator=g), y=torch.randint(0, 10, (n,), generator=g),
                        classes=[str(k) for k in range(10)])


def test_residual_net_with_batchnorm_works_with_ggn():
    torch.manual_seed(0)
    model, data = ResNet18(width=8, norm="batch"), images()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    diag = hessian_diagonal(model, data, "ggn_exact", batch_size=4)
    assert list(diag) == [n for n, _ in model.named_parameters()]
    assert all(diag[n].shape == p.shape for n, p in model.named_parameters())
    assert all((d >= 0).all() and torch.isfinite(d).all() for d in diag.values())
    assert diag["fc.weight"].sum() > 0 and diag["conv1.weight"].sum() > 0
    assert_untouched(model, before, was_training=True)  # BatchNorm statistics included


def test_residual_net_rejects_diag_hessian_with_advice():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="ggn_exact"):
        hessian_diagonal(ResNet18(width=8, norm="batch"), images(), "diag_hessian")


def test_argument_errors():
    model, data = tanh_mlp(), tiny_data()
    with pytest.raises(ValueError, match="unknown curvature"):
        hessian_diagonal(model, data, "kfac")
    with pytest.raises(ValueError, match="empty"):
        hessian_diagonal(model, data.subset([]), "ggn_exact")
    with pytest.raises(ValueError, match="batch_size"):
        hessian_diagonal(model, data, "ggn_exact", batch_size=0)
    with pytest.raises(ValueError, match="mc_samples"):
        hessian_diagonal(model, data, "ggn_mc", mc_samples=0)
    with pytest.raises(ValueError, match="20,100 parameters"):
        hessian_diagonal(nn.Sequential(nn.Linear(200, 100)), ArrayDataset(torch.zeros(2, 200), torch.zeros(2, dtype=torch.long), ["a"]),
                         "exact")


def test_curvature_flops_exceed_a_plain_backward_and_mc_is_cheaper():
    model = tiny_net()
    data = ArrayDataset(x=torch.randn(16, 1, 4, 4), y=torch.arange(16) % 3, classes=["a", "b", "c"])
    backward = train_flops_per_sample(model, data.x, data.y)
    ggn = curvature_flops_per_sample(model, data, "ggn_exact")
    mc = curvature_flops_per_sample(model, data, "ggn_mc")
    assert ggn > backward and backward < mc < ggn
