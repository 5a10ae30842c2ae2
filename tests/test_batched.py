"""BatchedClients (stacked parameters, one vmapped step per round step) against the in-turn loop of fl.local_train."""
import pytest
import torch

from conftest import make_blobs, tiny_net
from fuhelpers import fl
from fuhelpers.batched import BatchedClients, padded_batches
from fuhelpers.models import MnistCNN


def clients_of(sizes, seed=0):
    data = make_blobs(n=sum(sizes), seed=seed)
    starts = torch.tensor([0, *sizes]).cumsum(0).tolist()
    return [data.subset(range(a, b)) for a, b in zip(starts, starts[1:])]


def both(make, clients, config, **kw):
    """The same FedAvg run in turn and batched: (in-turn result, batched result)."""
    ref = fl.train(make(), clients, config, **kw)
    with fl.client_runtime(BatchedClients()):
        out = fl.train(make(), clients, config, **kw)
    return ref, out


def assert_same_weights(a, b, rtol=1e-5, atol=1e-6):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=rtol, atol=atol, msg=name)


def small_cnn():
    torch.manual_seed(0)
    return MnistCNN(image_size=12, width=(3, 4), hidden=8, kernel_size=3)


def test_unequal_clients_momentum_and_weight_decay_match_the_loop():
    # sizes 5, 23, 40 with batch 8: 1, 3 and 5 steps per epoch, short last batches: padding and idle steps matter
    clients = clients_of([5, 23, 40])
    config = fl.FedConfig(num_rounds=3, local_epochs=2, batch_size=8, lr=0.1, momentum=0.9, weight_decay=1e-2)
    ref, out = both(tiny_net, clients, config)
    assert_same_weights(ref.model, out.model)
    assert out.cost.flops == ref.cost.flops and out.cost.rounds == ref.cost.rounds


def test_a_convolutional_model_and_fixed_step_counts_match_the_loop():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(50, 1, 12, 12, generator=g), torch.randint(0, 10, (50,), generator=g)
    from fuhelpers.data import ArrayDataset
    data = ArrayDataset(x=x, y=y, classes=[str(k) for k in range(10)])
    clients = [data.subset(range(0, 17)), data.subset(range(17, 50))]
    config = fl.FedConfig(num_rounds=2, local_steps=3, batch_size=10, lr=0.05, momentum=0.5)
    ref, out = both(small_cnn, clients, config)
    assert_same_weights(ref.model, out.model)


def test_targeted_retraining_mask_matches_the_loop():
    clients = clients_of([12, 20])
    net = tiny_net()
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) < 0.5
            for n, p in net.named_parameters()}
    config = fl.FedConfig(num_rounds=2, batch_size=4, lr=0.1)
    ref, out = both(tiny_net, clients, config, mask=mask)
    assert_same_weights(ref.model, out.model)
    for n, p in out.model.named_parameters():  # entries outside the mask never moved
        assert torch.equal(p.detach()[~mask[n]], dict(tiny_net().named_parameters())[n].detach()[~mask[n]])


def test_padded_batches_by_hand():
    config = fl.FedConfig(batch_size=2, local_epochs=1)
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    index, weight = padded_batches([3, 1], gens, config, offsets=[0, 3])
    assert index.shape == weight.shape == (2, 2, 2)                  # 2 steps (client 0: 2 + 1 images), 2 clients
    assert weight[:, 0].tolist() == [[1, 1], [1, 0]]                 # client 0: a full batch, then a short one
    assert weight[:, 1].tolist() == [[1, 0], [0, 0]]                 # client 1: one image, then idle
    assert sorted(index[:, 0][weight[:, 0] > 0].tolist()) == [0, 1, 2]
    assert index[0, 1, 0].item() == 3                                # client 1's rows start at its offset


def test_refuses_what_it_does_not_do():
    clients = clients_of([8, 8])
    with pytest.raises(ValueError, match="fp32"):
        both(tiny_net, clients, fl.FedConfig(num_rounds=1, precision="bf16"))
    bn = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                                     torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match="buffers"):
        both(bn, clients, fl.FedConfig(num_rounds=1))
