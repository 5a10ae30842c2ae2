import copy

import numpy as np
import pytest
import torch

from conftest import make_blobs, tiny_net
from fuhelpers.federation import Federation, Request
from fuhelpers.fl import FedConfig, fedavg, train
from fuhelpers.history import History
from fuhelpers.unlearn import dpul
from fuhelpers.unlearn.base import MissingRequirementError
from fuhelpers.unlearn.dpul import (DPULConfig, SliceVAE, first_flagged_rounds, high_weight_mask, others_model,
                                    projected_recovery, reconstruct, rollback, stitch, strided_slices,
                                    train_slice_vaes)

T = torch.tensor


def hand_history(m0, rounds):
    """A History built by hand: ``rounds`` is a list of (weights, uploads) with uploads of {"w": tensor}."""
    hist = History(record_clients="all")
    hist.add_global({"w": m0})
    for weights, uploads in rounds:
        hist.add_round(list(weights), weights)
        for c, u in uploads.items():
            hist.add_upload(c, {"w": u})
        total = sum(weights.values())
        hist.add_global({"w": sum(weights[c] / total * u for c, u in uploads.items())})
    return hist


@pytest.fixture
def dominated():
    """Client 1 (the target) dominates coordinate 0 from round 2 on; clients have equal weights."""
    return hand_history(T([0.0, 0.0, 0.0]), [
        ({0: 1, 1: 1}, {0: T([1.0, 1.0, 1.0]), 1: T([1.1, 1.0, 1.0])}),     # M_1 = [1.05, 1, 1]
        ({0: 1, 1: 1}, {0: T([1.05, 2.0, 2.0]), 1: T([5.05, 2.0, 2.0])}),   # target moves coord 0 by 4, others by 0
        ({0: 1, 1: 1}, {0: T([3.05, 3.0, 3.0]), 1: T([3.05, 3.0, 3.0])}),
    ])


def test_others_model_is_the_fedavg_of_the_other_uploads():
    g = torch.Generator().manual_seed(0)
    uploads = [{"w": torch.randn(4, 3, generator=g), "n": T(7)} for _ in range(3)]
    hist = History(record_clients="all")
    hist.add_global({"w": torch.zeros(4, 3), "n": T(0)})
    hist.add_round([0, 1, 2], {0: 2, 1: 3, 2: 5})
    for c, u in enumerate(uploads):
        hist.add_upload(c, u)
    hist.add_global(fedavg(uploads, [2, 3, 5]))
    hist.add_round([0, 2], {0: 2, 2: 5})  # round 2 without client 1
    for c in (0, 2):
        hist.add_upload(c, uploads[c])
    hist.add_global(fedavg([uploads[0], uploads[2]], [2, 5]))

    out = others_model(hist, 1, target=1)
    torch.testing.assert_close(out["w"], fedavg([uploads[0], uploads[2]], [2, 5])["w"])
    assert out["n"].item() == 7
    torch.testing.assert_close(others_model(hist, 1, target=0)["w"], fedavg(uploads[1:], [3, 5])["w"])
    assert torch.equal(others_model(hist, 2, target=1)["w"], hist.global_model(2)["w"])  # absent: unchanged
    with pytest.raises(ValueError, match="round"):
        others_model(hist, 3, target=1)


def test_high_weight_mask_paper_and_code_comparisons(dominated):
    assert not high_weight_mask(dominated, 1, target=1).any()
    assert high_weight_mask(dominated, 2, target=1, compare="others").tolist() == [True, False, False]
    # the global update (2 on coordinate 0) is larger than 4 / 6: the code's test does not flag it
    assert not high_weight_mask(dominated, 2, target=1, compare="global").any()
    assert high_weight_mask(dominated, 2, target=1, lam=1.5, compare="global").tolist() == [True, False, False]
    with pytest.raises(ValueError, match="compare"):
        high_weight_mask(dominated, 2, target=1, compare="local")


def test_rollback_freezes_flagged_coordinates_from_their_round_on(dominated):
    rolled = rollback(dominated, target=1)
    expected = [[0.0, 0.0, 0.0],
                [1.0, 1.0, 1.0],   # others' model of round 1
                [1.0, 2.0, 2.0],   # coordinate 0 frozen at its round-1 value; others' model elsewhere
                [1.0, 3.0, 3.0]]   # and stays frozen although round 3 does not flag it
    assert len(rolled) == 4
    for got, want in zip(rolled, expected):
        torch.testing.assert_close(got, T(want))
    assert first_flagged_rounds(dominated, target=1).tolist() == [2, 0, 0]
    # nothing flagged: the trajectory is the others' models
    plain = rollback(dominated, target=1, compare="global")
    for t in (1, 2, 3):
        torch.testing.assert_close(plain[t], others_model(dominated, t, 1)["w"])


@pytest.mark.parametrize("n", [1, 7, 10, 23])
@pytest.mark.parametrize("num_slices", [1, 3, 10])
def test_slicing_then_stitching_is_the_identity(n, num_slices):
    vec = torch.randn(n, generator=torch.Generator().manual_seed(n))
    slices = strided_slices(vec, num_slices)
    assert len(slices) == num_slices and sum(s.numel() for s in slices) == n
    assert all(torch.equal(s, vec[j::num_slices]) for j, s in enumerate(slices))
    assert torch.equal(stitch(slices, num_slices, n), vec)


def test_stitch_rejects_wrong_lengths():
    with pytest.raises(ValueError, match="slice 1 has 3"):
        stitch([torch.zeros(3), torch.zeros(3)], 2, 5)
    with pytest.raises(ValueError, match="num_slices"):
        strided_slices(torch.zeros(4), 0)


@pytest.mark.parametrize("length", [1, 5, 40])
def test_slice_vae_shapes(length):
    vae = SliceVAE(length)
    x = torch.randn(3, length)
    recon, mu, logvar = vae(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == (3, length) and mu.shape == logvar.shape == (3, 1)
    assert vae.reconstruct(x).shape == (3, length)


def test_vaes_learn_the_map_to_rolled_back_slices():
    g = torch.Generator().manual_seed(0)
    originals = [torch.randn(40, generator=g) for _ in range(6)]
    target = torch.linspace(-1, 1, 40)
    new = torch.randn(40, generator=g)
    untrained = train_slice_vaes(originals, [target] * 6, 3, epochs=1, lr=0.0)
    vaes = train_slice_vaes(originals, [target] * 6, 3, epochs=20, seed=1)
    before = (reconstruct(new, untrained) - target).pow(2).mean()
    after = (reconstruct(new, vaes) - target).pow(2).mean()
    assert len(vaes) == 3 and after < 0.05 * before


@pytest.fixture
def fed_and_history():
    data = make_blobs(n=60)
    parts = [np.arange(0, 15), np.arange(15, 35), np.arange(35, 60)]
    fed = Federation.from_partition(data, parts, make_blobs(12, seed=1), server=make_blobs(15, seed=2))
    hist = History(record_clients="all")
    model = train(tiny_net(), fed.clients, FedConfig(num_rounds=4, batch_size=8), history=hist).model
    return fed, hist, model


def params_flat(model, names=None):
    return torch.cat([p.detach().flatten() for n, p in model.named_parameters() if names is None or n in names])


def state_flat(state, names=None):
    return torch.cat([v.flatten() for n, v in state.items() if names is None or n in names])


@pytest.mark.parametrize("names", [None, ["3.weight", "3.bias"]])
def test_recovery_steps_have_the_historical_norms(fed_and_history, names):
    fed, hist, model = fed_and_history
    rec = projected_recovery(model, fed.server, hist, steps=2, start_round=1, names=names, lr=0.05)
    assert rec.rounds == [1, 2]
    one = projected_recovery(model, fed.server, hist, steps=1, start_round=1, names=names, lr=0.05).model
    for a, b, t in ((model, one, 1), (one, rec.model, 2)):
        step = (params_flat(b, names) - params_flat(a, names)).norm()
        historical = (state_flat(hist.global_model(t), names) - state_flat(hist.global_model(t - 1), names)).norm()
        torch.testing.assert_close(step, historical)
    if names is not None:
        assert all(torch.equal(p, q) for (n, p), q in zip(rec.model.named_parameters(), model.parameters())
                   if n not in names)
    assert rec.cost.flops > 0


SMALL = dict(num_slices=3, vae_epochs=2, recovery_steps=2)


@pytest.mark.parametrize("stages", [(), ("rollback",), ("vae",), ("recovery",), ("rollback", "vae"),
                                    ("rollback", "vae", "recovery")])
def test_dpul_runs_each_stage_subset_and_leaves_the_input_alone(fed_and_history, stages):
    fed, hist, model = fed_and_history
    before = copy.deepcopy(model.state_dict())
    out = dpul.unlearn(model, fed, Request.client(1), DPULConfig(stages=stages, **SMALL), hist)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.isfinite(params_flat(out.model)).all()
    assert not torch.equal(params_flat(out.model), params_flat(model))
    assert out.info["stages"] == stages and out.cost.rounds == 0 and out.cost.bytes_up == 0
    rounds = out.info["recovery_rounds"]
    assert len(rounds) == (2 if "recovery" in stages else 0)
    assert all(1 <= r <= 4 for r in rounds) and rounds == sorted(rounds)
    if stages == ("rollback",):
        torch.testing.assert_close(params_flat(out.model), rollback(hist, 1)[-1])
    if stages == ():
        torch.testing.assert_close(params_flat(out.model), state_flat(others_model(hist, 4, 1)))
        assert out.info["flagged"] == 0


def test_recovery_never_trains_on_a_class_the_request_forgets(monkeypatch):
    # client 1 alone holds class 2, so forgetting it forgets the class; the server holds 5 samples of each class
    data = make_blobs(n=60)
    others = np.flatnonzero(data.y.numpy() != 2)
    parts = [others[:20], np.flatnonzero(data.y.numpy() == 2), others[20:]]
    fed = Federation.from_partition(data, parts, make_blobs(12, seed=1), server=make_blobs(15, seed=2))
    hist = History(record_clients="all")
    model = train(tiny_net(), fed.clients, FedConfig(num_rounds=3, batch_size=8), history=hist).model
    seen = []

    def spy(model, server_data, *args, **kwargs):
        seen.append(server_data.y.clone())
        return projected_recovery(model, server_data, *args, **kwargs)

    monkeypatch.setattr(dpul, "projected_recovery", spy)
    dpul.unlearn(model, fed, Request.client(1), DPULConfig(**SMALL), hist)
    assert len(seen) == 1 and sorted(seen[0].tolist()) == [0] * 5 + [1] * 5   # the 5 of class 2 left out


def test_params_subset_leaves_other_parameters_bit_identical(fed_and_history):
    fed, hist, model = fed_and_history
    head = ["3.weight", "3.bias"]
    out = dpul.unlearn(model, fed, Request.client(1), DPULConfig(params=head, **SMALL), hist)
    for (n, p), q in zip(out.model.named_parameters(), model.parameters()):
        assert torch.equal(p, q) == (n not in head), n
    assert out.info["first_flagged"].numel() == sum(model.state_dict()[n].numel() for n in head)
    with pytest.raises(ValueError, match="params"):
        dpul.unlearn(model, fed, Request.client(1), DPULConfig(params=["nope"], **SMALL), hist)


def test_dpul_requirements(fed_and_history):
    fed, hist, model = fed_and_history
    no_server = Federation(clients=fed.clients, test=fed.test)
    with pytest.raises(MissingRequirementError, match="server"):
        dpul.unlearn(model, no_server, Request.client(1), DPULConfig(**SMALL), hist)
    dpul.unlearn(model, no_server, Request.client(1), DPULConfig(stages=("rollback",), **SMALL), hist)
    with pytest.raises(MissingRequirementError, match="History"):
        dpul.unlearn(model, fed, Request.client(1), DPULConfig(**SMALL), None)
    others_only = History(record_clients=[0, 2])
    train(tiny_net(), fed.clients, FedConfig(num_rounds=2, batch_size=8), history=others_only)
    with pytest.raises(MissingRequirementError, match="client 1"):
        dpul.unlearn(model, fed, Request.client(1), DPULConfig(**SMALL), others_only)
    for request in (Request.for_class(0), Request.client(0, 1)):
        with pytest.raises(ValueError, match="exactly one client"):
            dpul.unlearn(model, fed, request, DPULConfig(**SMALL), hist)
    with pytest.raises(ValueError, match="stages"):
        DPULConfig(stages=("rollback", "distill"))


@pytest.mark.parametrize("num_slices,batch_size", [(3, 1), (4, 2)])
def test_batched_vae_training_equals_one_after_the_other(num_slices, batch_size):
    g = torch.Generator().manual_seed(0)
    originals = [torch.randn(22, generator=g) for _ in range(5)]  # 22 entries: slices of two lengths when I=4
    targets = [0.5 * o + 0.1 for o in originals]
    kw = dict(epochs=6, lr=0.05, seed=3, batch_size=batch_size)
    one_by_one = train_slice_vaes(originals, targets, num_slices, **kw)
    together = train_slice_vaes(originals, targets, num_slices, batched=True, **kw)
    untrained = train_slice_vaes(originals, targets, num_slices, **{**kw, "epochs": 1, "lr": 0.0})
    for a, b, c in zip(one_by_one, together, untrained):
        assert a.length == b.length
        for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
        assert any(not torch.allclose(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_dpul_with_batched_vaes_gives_the_same_model(fed_and_history):
    fed, hist, model = fed_and_history
    cfg = dict(SMALL, stages=("rollback", "vae"))
    plain = dpul.unlearn(model, fed, Request.client(1), DPULConfig(**cfg), hist)
    batched = dpul.unlearn(model, fed, Request.client(1), DPULConfig(vae_batched=True, **cfg), hist)
    torch.testing.assert_close(params_flat(batched.model), params_flat(plain.model), rtol=1e-4, atol=1e-5)


def test_storage_counts_globals_the_targets_uploads_and_the_server_set():
    # hand count: 3-float state (12 bytes); 4 global models; target 1 uploads in rounds 1 and 3 only
    hist = hand_history(T([0.0, 0.0, 0.0]), [
        ({0: 1, 1: 1}, {0: T([1.0, 1.0, 1.0]), 1: T([1.0, 1.0, 1.0])}),
        ({0: 1}, {0: T([2.0, 2.0, 2.0])}),
        ({0: 1, 1: 1}, {0: T([3.0, 3.0, 3.0]), 1: T([3.0, 3.0, 3.0])}),
    ])
    assert dpul.storage_bytes(hist, 1) == 4 * 12 + 2 * 12 < hist.storage_bytes
    server = make_blobs(n=5)                      # x: 5 x 16 float32, y: 5 int64
    assert dpul.storage_bytes(hist, 1, server) == 72 + 5 * 16 * 4 + 5 * 8
