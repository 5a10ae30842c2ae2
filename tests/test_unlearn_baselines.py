import numpy as np
import pytest
import torch

from conftest import make_blobs, tiny_net
from fuhelpers.federation import Federation, Request
from fuhelpers.fl import FedConfig, train
from fuhelpers.unlearn import finetune, random_reset, reset, retrain
from fuhelpers.unlearn.base import MissingRequirementError, reinitialize


@pytest.fixture
def poisoned_fed():
    """Client 1's data is NaN: any method that touches it produces NaN weights."""
    data = make_blobs(n=45)
    data.x[15:30] = float("nan")
    return Federation.from_partition(data, [np.arange(0, 15), np.arange(15, 30), np.arange(30, 45)], make_blobs(12, seed=1))


def finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_retrain_and_finetune_exclude_the_forgotten_client(poisoned_fed):
    cfg = FedConfig(num_rounds=2, batch_size=5)
    assert not finite(train(tiny_net(), poisoned_fed.clients, cfg).model)  # the trap works
    r = Request.client(1)
    assert finite(retrain.unlearn(tiny_net(), poisoned_fed, r, retrain.RetrainConfig(fed=cfg)).model)
    assert finite(finetune.unlearn(tiny_net(), poisoned_fed, r, finetune.FinetuneConfig(fed=cfg)).model)


def test_retrain_equals_training_from_scratch_on_retained_clients(poisoned_fed):
    cfg = FedConfig(num_rounds=2, batch_size=5)
    init = tiny_net(seed=3).state_dict()
    out = retrain.unlearn(tiny_net(), poisoned_fed, Request.client(1), retrain.RetrainConfig(fed=cfg, init_state=init))
    ref_net = tiny_net(seed=3)
    ref = train(ref_net, [poisoned_fed.clients[0], poisoned_fed.clients[2]], cfg, client_ids=[0, 2]).model
    for a, b in zip(out.model.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    assert out.cost.rounds == 2


def test_finetune_does_not_edit_the_input_model(poisoned_fed):
    net = tiny_net()
    before = [p.clone() for p in net.parameters()]
    finetune.unlearn(net, poisoned_fed, Request.client(1), finetune.FinetuneConfig(fed=FedConfig(num_rounds=1)))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_reinitialize_is_seeded_and_leaves_global_rng_alone():
    net = tiny_net()
    state = torch.random.get_rng_state()
    a, b, c = reinitialize(net, 1), reinitialize(net, 1), reinitialize(net, 2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a[1].weight, b[1].weight) and not torch.equal(a[1].weight, c[1].weight)
    assert not torch.equal(a[1].weight, net[1].weight)


@pytest.mark.parametrize("value", ["init", "zero"])
def test_random_reset_matches_counts_and_values(value):
    init = tiny_net(seed=0)
    net = tiny_net(seed=5)
    counts = {"1.weight": 7, "3.bias": 2}
    cfg = random_reset.RandomResetConfig(counts=counts, value=value, init_state=init.state_dict(), seed=4)
    out = random_reset.unlearn(net, None, Request.client(0), cfg)
    for name, p in out.model.named_parameters():
        orig = dict(net.named_parameters())[name]
        changed = p != orig
        assert changed.sum() == counts.get(name, 0)
        target = torch.zeros_like(p) if value == "zero" else dict(init.named_parameters())[name]
        assert torch.equal(p[changed], target[changed].detach())
    assert out.info["reset"] == 9
    again = random_reset.unlearn(net, None, Request.client(0), cfg)
    assert torch.equal(again.info["masks"]["1.weight"], out.info["masks"]["1.weight"])


def test_random_reset_errors():
    net = tiny_net()
    with pytest.raises(ValueError, match="must be in"):
        random_reset.random_masks(net, {"1.weight": 10_000})
    with pytest.raises(MissingRequirementError, match="init_state"):
        reset.apply_reset_(net, {"1.bias": torch.ones(8, dtype=torch.bool)}, "init", None)
