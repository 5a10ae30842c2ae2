import copy

import pytest
import torch

from conftest import make_blobs, tiny_net
from fuhelpers import fl
from fuhelpers.fl import FedConfig, fedavg, train
from fuhelpers.history import History


def gd_steps(net, data, lr, steps):
    """Centralised full-batch gradient descent, written independently of the engine."""
    for _ in range(steps):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(data.x), data.y).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    return net


def test_one_client_full_batch_equals_gradient_descent(blobs):
    cfg = FedConfig(num_rounds=5, batch_size=len(blobs), lr=0.1, momentum=0.0)
    fed = train(tiny_net(), [blobs], cfg).model
    ref = gd_steps(tiny_net(), blobs, lr=0.1, steps=5)
    for a, b in zip(fed.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_weighted_fedavg_of_one_step_equals_pooled_gradient_step():
    data = make_blobs(n=90)
    parts = [data.subset(range(0, 20)), data.subset(range(20, 90))]  # unequal sizes: weights matter
    cfg = FedConfig(num_rounds=1, batch_size=1000, lr=0.2, momentum=0.0)
    fed = train(tiny_net(), parts, cfg).model
    ref = gd_steps(tiny_net(), data, lr=0.2, steps=1)
    for a, b in zip(fed.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fedavg_on_hand_made_tensors():
    states = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}, {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(5)}]
    out = fedavg(states, [1, 2])
    torch.testing.assert_close(out["w"], torch.tensor([3.0, 6.0]))
    assert out["n"].item() == 3  # integer buffers come from the first state
    with pytest.raises(ValueError, match="weights"):
        fedavg(states, [0, 0])
    with pytest.raises(ValueError, match="one weight per state"):
        fedavg(states, [1])


def test_same_seed_same_weights_other_seed_differs(blobs):
    parts = [blobs.subset(range(0, 30)), blobs.subset(range(30, 60))]
    runs = [train(tiny_net(), parts, FedConfig(num_rounds=2, batch_size=8, seed=s)).model for s in (1, 1, 2)]
    flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in runs]
    assert torch.equal(flat[0], flat[1])
    assert not torch.equal(flat[0], flat[2])


def test_partial_participation_and_history(blobs):
    parts = [blobs.subset(range(i, 60, 4)) for i in range(4)]
    hist = History(record_clients=[1])
    res = train(tiny_net(), parts, FedConfig(num_rounds=3, batch_size=5, participation=0.5), history=hist)
    assert hist.num_rounds == 3 and all(len(p) == 2 for p in hist.participants)
    torch.testing.assert_close(hist.global_model(-1)["1.weight"], res.model.state_dict()["1.weight"])
    for t, chosen in enumerate(hist.participants, start=1):
        assert (hist.upload(t, 1) is not None) == (1 in chosen)
    with pytest.raises(KeyError, match="not recorded"):
        hist.upload(1, 0)
    assert res.cost.storage_bytes == hist.storage_bytes > 0


def test_history_aggregate_equals_fedavg_of_recorded_uploads(blobs, tmp_path):
    parts = [blobs.subset(range(0, 25)), blobs.subset(range(25, 60))]
    hist = History(record_clients="all", directory=tmp_path / "h")
    train(tiny_net(), parts, FedConfig(num_rounds=2, batch_size=10), history=hist)
    assert len(list((tmp_path / "h").glob("*.pt"))) == 3 + 4  # 3 globals, 2 uploads x 2 rounds
    for t in (1, 2):
        agg = fedavg([hist.upload(t, 0), hist.upload(t, 1)], [25, 35])
        for k in agg:
            torch.testing.assert_close(agg[k], hist.global_model(t)[k])


def test_mask_restricts_training_to_masked_entries(blobs):
    net = tiny_net()
    before = copy.deepcopy(net.state_dict())
    mask = {"1.weight": torch.zeros(8, 16, dtype=torch.bool)}
    mask["1.weight"][0, :3] = True
    mask.update({n: torch.zeros_like(p, dtype=torch.bool) for n, p in net.named_parameters() if n != "1.weight"})
    after = train(net, [blobs], FedConfig(num_rounds=2, batch_size=10, weight_decay=1e-2), mask=mask).model.state_dict()
    changed = after["1.weight"] != before["1.weight"]
    assert changed[0, :3].all() and changed.sum() == 3
    assert all(torch.equal(after[k], before[k]) for k in before if k != "1.weight")


def test_cost_counts_bytes_rounds_and_flops(blobs):
    parts = [blobs.subset(range(0, 30)), blobs.subset(range(30, 60))]
    res = train(tiny_net(), parts, FedConfig(num_rounds=3, batch_size=10, local_epochs=2))
    n_params = sum(p.numel() for p in res.model.parameters())
    assert res.cost.rounds == 3
    assert res.cost.bytes_up == res.cost.bytes_down == 3 * 2 * 4 * n_params
    # linear layers: forward 2*in*out per sample, backward about twice that
    fwd = 2 * (16 * 8 + 8 * 3)
    assert 2 * fwd * 120 * 3 <= res.cost.flops <= 3 * fwd * 120 * 3


def test_log_and_empty_clients(blobs):
    empty = blobs.subset([])
    res = train(tiny_net(), [blobs, empty], FedConfig(num_rounds=2), evaluate=lambda m: {"x": 1.0})
    assert [r["round"] for r in res.log] == [0, 1, 2]
    with pytest.raises(ValueError, match="every client is empty"):
        train(tiny_net(), [empty], FedConfig(num_rounds=1))


class _Reversed(fl.InProcess):
    """A runtime that trains the round's clients in reverse order (as remote clients may finish), records what it
    is asked, and answers in the order asked."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def train_round(self, model, state, clients, client_ids, config, round_, device, mask=None):
        self.asked.append((round_, list(client_ids)))
        done = super().train_round(model, state, clients[::-1], client_ids[::-1], config, round_, device, mask)
        return done[::-1]


def test_a_client_runtime_gets_every_round_and_gives_the_same_weights(blobs):
    parts = [blobs.subset(range(a, b)) for a, b in [(0, 10), (10, 30), (30, 60)]]   # unequal sizes
    cfg = FedConfig(num_rounds=3, local_epochs=1, batch_size=8, lr=0.1, seed=4, participation=0.67)
    plain = train(tiny_net(), parts, cfg, progress=False).model.state_dict()
    runtime = _Reversed()
    with fl.client_runtime(runtime):
        remote = train(tiny_net(), parts, cfg, client_ids=[7, 8, 9], progress=False).model.state_dict()
    assert fl.active_runtime() is None                       # the block restores the default
    assert [r for r, _ in runtime.asked] == [1, 2, 3]
    assert all(len(ids) == 2 and set(ids) <= {7, 8, 9} for _, ids in runtime.asked)   # 2 of 3 sampled
    # other client ids seed other batch orders: compare with the same ids in process
    same_ids = train(tiny_net(), parts, cfg, client_ids=[7, 8, 9], progress=False).model.state_dict()
    assert all(torch.equal(remote[k], same_ids[k]) for k in remote)
    assert not all(torch.equal(plain[k], same_ids[k]) for k in plain)


def test_a_custom_local_trainer_runs_in_process_only(blobs):
    cfg = FedConfig(num_rounds=1, local_epochs=1, batch_size=16, seed=0)
    with fl.client_runtime(_Reversed()), pytest.raises(ValueError, match="in this process only"):
        train(tiny_net(), [blobs], cfg, progress=False, local_trainer=fl.local_train)


def test_evaluation_only_at_chosen_rounds_and_training_unchanged(blobs):
    parts = [blobs.subset(range(0, 30)), blobs.subset(range(30, 60))]
    cfg = FedConfig(num_rounds=5, batch_size=8)
    calls = []

    def evaluate(m):
        calls.append(1)
        return {"acc": float((m(blobs.x).argmax(1) == blobs.y).float().mean())}

    every = train(tiny_net(), parts, cfg, evaluate=evaluate)
    calls.clear()
    some = train(tiny_net(), parts, cfg, evaluate=evaluate, eval_rounds={0, 2, 5})
    assert [e["round"] for e in some.log] == [0, 2, 5] and len(calls) == 3
    assert some.log == [e for e in every.log if e["round"] in (0, 2, 5)]
    for a, b in zip(every.model.parameters(), some.model.parameters()):
        assert torch.equal(a, b)
