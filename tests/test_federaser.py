import copy

import numpy as np
import pytest
import torch

from conftest import make_blobs, tiny_net
from fuhelpers.federation import Federation, Request
from fuhelpers.fl import FedConfig, fedavg, train
from fuhelpers.history import History
from fuhelpers.unlearn import federaser
from fuhelpers.unlearn.base import MissingRequirementError
from fuhelpers.unlearn.federaser import FedEraserConfig, calibrate, replayed_rounds, rescale_update


@pytest.fixture
def fed():
    data = make_blobs(n=60)
    parts = [np.arange(0, 15), np.arange(15, 35), np.arange(35, 60)]  # unequal sizes: weights matter
    return Federation.from_partition(data, parts, make_blobs(12, seed=1))


def trained(fed, cfg, record="all"):
    hist = History(record_clients=record)
    model = train(tiny_net(), fed.clients, cfg, history=hist).model
    return model, hist


def flat(state):
    return torch.cat([v.flatten() for v in state.values()])


@pytest.mark.parametrize("keep", ["direction", "norm"])
@pytest.mark.parametrize("participation", [1.0, 0.67])
def test_replay_with_every_client_reproduces_the_stored_trajectory(fed, keep, participation):
    cfg = FedConfig(num_rounds=4, batch_size=6, lr=0.05, participation=participation, seed=3)
    _, hist = trained(fed, cfg)
    out = calibrate(tiny_net(), hist, fed.clients, [0, 1, 2], FedEraserConfig(fed=cfg, calibration_epochs=1, keep=keep),
                    keep_trajectory=True)
    assert out.rounds == [1, 2, 3, 4] and sorted(out.trajectory) == [1, 2, 3, 4]
    for t in range(1, 5):
        for k, v in hist.global_model(t).items():
            torch.testing.assert_close(out.trajectory[t][k], v, rtol=1e-4, atol=1e-5)
    # calibration that differs from training (other seed) leaves the trajectory
    other = calibrate(tiny_net(), hist, fed.clients, [0, 1, 2],
                      FedEraserConfig(fed=FedConfig(batch_size=6, lr=0.05, seed=4)), keep_trajectory=True)
    assert not torch.allclose(flat(other.trajectory[4]), flat(hist.global_model(4)), atol=1e-4)


def test_rescale_update_on_hand_made_tensors():
    stored, calibrated = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])
    torch.testing.assert_close(rescale_update(stored, calibrated, "direction"), torch.tensor([1.2, 1.6]))
    torch.testing.assert_close(rescale_update(stored, calibrated, "norm"), torch.tensor([0.0, 5.0]))
    assert torch.equal(rescale_update(stored, torch.zeros(2)), torch.zeros(2))
    assert torch.equal(rescale_update(torch.zeros(2), calibrated, "direction"), torch.zeros(2))
    with pytest.raises(ValueError, match="keep"):
        rescale_update(stored, calibrated, "both")


def test_the_default_is_the_papers_rule_stored_length_calibrated_direction():
    # FedEraser (Liu et al., IWQoS 2021): U~ = ||U|| * U^ / ||U^||, U the stored update, U^ the calibration one.
    # By hand: ||(3, 4)|| = 5 and (0, 2) / ||(0, 2)|| = (0, 1), so U~ = (0, 5).
    stored, calibrated = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])
    torch.testing.assert_close(rescale_update(stored, calibrated), torch.tensor([0.0, 5.0]))
    assert FedEraserConfig().keep == "norm"


def test_one_calibrated_round_matches_a_hand_computed_reference(fed):
    # full batch and no momentum: a calibration epoch is one gradient step, whatever the data order
    cfg = FedConfig(num_rounds=2, batch_size=100, lr=0.3, momentum=0.0)
    _, hist = trained(fed, cfg)
    config = FedEraserConfig(fed=cfg, calibration_epochs=1)
    out = federaser.unlearn(tiny_net(seed=9), fed, Request.client(1), config, hist)

    kept, sizes = [0, 2], [15, 25]
    m1 = fedavg([hist.upload(1, c) for c in kept], sizes)  # round 1 starts from M_0: stored uploads are exact
    net = tiny_net()
    new_updates = []
    for c in kept:
        net.load_state_dict(m1)
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(fed.clients[c].x), fed.clients[c].y).backward()
        grads = {n: p.grad for n, p in net.named_parameters()}
        stored = {k: hist.upload(2, c)[k] - hist.global_model(1)[k] for k in m1}
        # the paper's rule: the stored update's length along the calibration update -0.3 * grad
        new_updates.append({k: stored[k].norm() * -grads[k] / grads[k].norm() for k in m1})
    expected = {k: m1[k] + sum(n / 40 * u[k] for n, u in zip(sizes, new_updates)) for k in m1}
    for k, v in out.model.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-4, atol=1e-6)


def test_forgotten_client_uploads_are_never_read(fed):
    cfg = FedConfig(num_rounds=3, batch_size=8)
    _, hist = trained(fed, cfg)
    poisoned = History(record_clients="all")
    poisoned.add_global(hist.global_model(0))
    for t in range(1, 4):
        poisoned.add_round(hist.participants[t - 1], hist.weights[t - 1])
        for c in hist.participants[t - 1]:
            upload = hist.upload(t, c)
            nan = {k: torch.full_like(v, float("nan")) for k, v in upload.items()}
            poisoned.add_upload(c, nan if c == 1 else upload)
        poisoned.add_global(hist.global_model(t))
    config = FedEraserConfig(fed=cfg)
    a = federaser.unlearn(tiny_net(), fed, Request.client(1), config, hist).model
    b = federaser.unlearn(tiny_net(), fed, Request.client(1), config, poisoned).model
    assert all(torch.isfinite(p).all() for p in b.parameters())
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_interval_cost_and_input_model_untouched(fed):
    cfg = FedConfig(num_rounds=4, batch_size=8)
    model, hist = trained(fed, cfg)
    before = copy.deepcopy(model.state_dict())
    out = federaser.unlearn(model, fed, Request.client(0), FedEraserConfig(fed=cfg, interval=2), hist)
    assert replayed_rounds(4, 2) == out.info["rounds"] == [1, 3]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not torch.allclose(flat(out.model.state_dict()), flat(before))
    n_params = sum(p.numel() for p in model.parameters())
    assert out.cost.rounds == 1  # round 1 reuses stored uploads; round 3 is calibrated
    assert out.cost.bytes_up == out.cost.bytes_down == 2 * 4 * n_params  # two retained clients
    assert out.cost.flops > 0 and out.cost.storage_bytes == hist.storage_bytes


def test_requirements_are_checked(fed):
    cfg = FedConfig(num_rounds=2, batch_size=8)
    model, hist = trained(fed, cfg, record=[1])
    config = FedEraserConfig(fed=cfg)
    with pytest.raises(MissingRequirementError, match="record_clients='all'"):
        federaser.unlearn(model, fed, Request.client(1), config, None)
    with pytest.raises(MissingRequirementError, match="record_clients='all'"):
        federaser.unlearn(model, fed, Request.client(1), config, hist)
    with pytest.raises(ValueError, match="whole clients"):
        federaser.unlearn(model, fed, Request.for_class(0), config, hist)
    with pytest.raises(ValueError, match="interval"):
        FedEraserConfig(interval=0)
