import math

import pytest
import torch
import torch.nn.functional as F

from fuhelpers.data import ArrayDataset, load_dataset, subsample
from fuhelpers.fl import FedConfig, train
from fuhelpers.unlearn.foul.l2u import (
    L2UConfig,
    L2UModel,
    hinge_variance_loss,
    l2u_local_train,
    l2u_loss,
    l2u_loss_on,
    l2u_terms,
    noncausal_names,
    prototype_loss,
    reconstruction_loss,
    train_l2u,
)

PARTS = ("extractor", "causal", "noncausal", "decoder", "classifier")


def tiny_l2u(seed=0, image_size=8, in_channels=1, num_classes=10, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"width": 4, "causal_dim": 6, "noncausal_dim": 6, **kwargs}
    return L2UModel(in_channels, num_classes, image_size, **kwargs)


@pytest.fixture(scope="module")
def digits_clients():
    """Two clients of 100 scikit-learn 8x8 digits each."""
    data = subsample(load_dataset("digits", "train"), 200, seed=0)
    return [data.subset(torch.arange(0, 100)), data.subset(torch.arange(100, 200))]


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("in_channels, image_size", [(1, 28), (1, 8), (3, 32), (2, 4)])
def test_cnn_shapes(in_channels, image_size):
    model = tiny_l2u(in_channels=in_channels, image_size=image_size, num_classes=5)
    x = torch.rand(3, in_channels, image_size, image_size)
    assert model(x).shape == (3, 5)
    parts = model.parts(x)
    assert parts.z_k.shape == (3, 6) and parts.z_v.shape == (3, 6)
    assert parts.mu.shape == parts.logvar.shape == (3, 12)
    assert parts.recon.shape == x.shape
    assert parts.logits.shape == (3, 5)
    assert all(hasattr(model, name) for name in PARTS)


def test_resnet_backbone_shapes():
    model = tiny_l2u(backbone="resnet18", width=2, in_channels=3, image_size=16, num_classes=4)
    x = torch.rand(2, 3, 16, 16)
    assert model(x).shape == (2, 4)
    assert model.parts(x).recon.shape == x.shape


def test_forward_is_the_logits_of_parts_and_eval_is_deterministic():
    model = tiny_l2u().eval()
    x = torch.rand(4, 1, 8, 8)
    parts = model.parts(x)
    assert torch.allclose(model(x), parts.logits)
    assert torch.equal(parts.z_k, parts.mu[:, :6]) and torch.equal(parts.z_v, parts.mu[:, 6:])
    assert torch.equal(model.parts(x).recon, parts.recon)  # eval: the decoder reads the mean
    assert torch.equal(model.decoder(parts.mu), parts.recon)


def test_training_mode_samples_with_the_given_generator():
    model = tiny_l2u().train()
    x = torch.rand(4, 1, 8, 8)
    a = model.parts(x, torch.Generator().manual_seed(1)).recon
    b = model.parts(x, torch.Generator().manual_seed(1)).recon
    c = model.parts(x, torch.Generator().manual_seed(2)).recon
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_causal_classifier_ignores_the_noncausal_encoder():
    x = torch.rand(4, 1, 8, 8)
    for classifier_input, unchanged in (("causal", True), ("both", False)):
        model = tiny_l2u(classifier_input=classifier_input).eval()
        before = model(x)
        with torch.no_grad():
            for p in model.noncausal.parameters():
                p.add_(torch.randn_like(p))
        assert torch.equal(model(x), before) == unchanged


def test_noncausal_names():
    model = tiny_l2u()
    names = noncausal_names(model)
    assert names and all(n.startswith("noncausal.") for n in names)
    assert set(names) == {f"noncausal.{n}" for n, _ in model.noncausal.named_parameters()}
    with pytest.raises(ValueError, match="noncausal"):
        noncausal_names(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kwargs", [dict(backbone="vgg"), dict(classifier_input="v"), dict(image_size=3),
                                    dict(causal_dim=0)])
def test_model_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        tiny_l2u(**kwargs)


# ---------------------------------------------------------------- the losses


def test_hinge_variance_is_zero_above_the_threshold_and_positive_below():
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    base = torch.tensor([[-1.0, 2.0], [0.0, 0.0], [1.0, -2.0]])  # per-dim unbiased std: 1 and 2
    for scale, expect_zero in ((1.5, True), (1.0001, True), (0.5, False)):
        z = torch.cat([base * scale, base * scale + 3])
        loss = hinge_variance_loss(z, y, threshold=1.0, eps=0.0)
        assert (loss == 0) if expect_zero else (loss > 0)
    # hand value at scale 0.5: stds 0.5 and 1.0 -> mean(max(0, 1 - s)) = 0.25 in both classes
    z = torch.cat([base * 0.5, base * 0.5 + 3])
    assert torch.isclose(hinge_variance_loss(z, y, 1.0, 0.0), torch.tensor(0.25))
    # with eps: sqrt(0.25 + eps)
    eps = 0.01
    expected = (1 - math.sqrt(0.25 + eps)) / 2  # the second dimension: sqrt(1 + eps) > 1 -> 0
    assert torch.isclose(hinge_variance_loss(z, y, 1.0, eps), torch.tensor(expected))


def test_hinge_variance_skips_singleton_classes_and_has_a_gradient():
    z = torch.zeros(3, 4, requires_grad=True)
    y = torch.tensor([0, 0, 1])
    loss = hinge_variance_loss(z, y, threshold=1.0, eps=1e-4)
    assert torch.isclose(loss, torch.tensor(1 - math.sqrt(1e-4)))  # class 1 (one sample) is skipped
    zero = hinge_variance_loss(z, torch.tensor([0, 1, 2]))
    assert zero == 0 and zero.requires_grad
    pushed = torch.tensor([[0.0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1], [0, 0, 0, 0]], requires_grad=True)
    hinge_variance_loss(pushed, y).backward()
    # the class is collapsed below the threshold: descent moves its two rows apart
    assert (pushed.grad[0] > 0).all() and (pushed.grad[1] < 0).all()


def test_prototype_loss_hand_value_when_classes_coincide():
    temperature = 0.5
    z = torch.eye(3)[[0, 0, 1, 1, 2]] * 2.0  # same-class features coincide, classes orthogonal
    y = torch.tensor([0, 0, 1, 1, 2])
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2))
    assert torch.isclose(prototype_loss(z, y, temperature), torch.tensor(expected), atol=1e-6)


def test_prototype_loss_is_smallest_when_same_class_features_coincide():
    # Two classes: every cosine lies in [-1, 1], so L_K >= -log(e^{1/T} / (e^{1/T} + e^{-1/T})), with
    # equality exactly when each sample has cosine 1 to its prototype and -1 to the other one, i.e. when
    # same-class features coincide (up to scale) and the two classes are antipodal. Any perturbation is worse.
    temperature = 1.0
    bound = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + math.exp(-1 / temperature)))
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    z = torch.where(y[:, None] == 0, direction, -direction) * torch.tensor([1.0, 2, 3, 1, 2, 3])[:, None]
    assert abs(float(prototype_loss(z, y, temperature)) - bound) < 1e-12
    for size in (0.01, 0.3, 1.0):
        for _ in range(5):
            noisy = z + size * torch.randn(z.shape, generator=g, dtype=torch.float64)
            assert float(prototype_loss(noisy, y, temperature)) > bound + 1e-9


def test_prototype_loss_of_one_class_is_zero_and_labels_need_not_be_contiguous():
    z = torch.randn(4, 3)
    assert prototype_loss(z, torch.tensor([7, 7, 7, 7])) == 0
    y = torch.tensor([2, 9, 2, 9])
    assert torch.isclose(prototype_loss(z, y), prototype_loss(z, torch.tensor([0, 1, 0, 1])))


def test_reconstruction_loss_hand_computed():
    recon = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    mu = torch.tensor([[0.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    mse = (1 + 0 + 4 + 0) / 4
    # KL per latent element, -1/2 (1 + logvar - mu^2 - exp(logvar)): 0 and (2 - ln 2) / 2; averaged over the two
    kl = (0.0 + (2 - math.log(2.0)) / 2) / 2
    assert torch.isclose(reconstruction_loss(recon, target, mu, logvar), torch.tensor(mse + kl))
    assert torch.isclose(reconstruction_loss(recon, target, mu, logvar, kl_weight=0.0), torch.tensor(mse))
    with pytest.raises(ValueError, match="shape"):
        reconstruction_loss(recon, target[:1], mu, logvar)


def test_l2u_loss_is_the_weighted_sum_of_its_terms():
    model = tiny_l2u().eval()
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    cfg = L2UConfig(alpha_v=0.3, alpha_k=2.0, alpha_gtc=0.7, temperature=0.2, threshold=0.8, kl_weight=0.5)
    parts = model.parts(x)
    expected = (0.3 * hinge_variance_loss(parts.z_v, y, 0.8, cfg.eps)
                + 2.0 * prototype_loss(parts.z_k, y, 0.2)
                + 0.7 * F.cross_entropy(parts.logits, y)
                + reconstruction_loss(parts.recon, x, parts.mu, parts.logvar, 0.5))
    assert torch.isclose(l2u_loss(parts, x, y, cfg), expected)
    assert set(l2u_terms(parts, x, y, cfg)) == {"V", "K", "gtc", "rec"}
    with pytest.raises(ValueError, match="decode"):
        l2u_terms(model.parts(x, decode=False), x, y, cfg, ("rec",))


@pytest.mark.parametrize("kwargs", [dict(temperature=0), dict(inner_steps=0), dict(meta_lr=0),
                                    dict(meta_lr=1.5), dict(mid_terms=()), dict(generator_terms=("x",))])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        L2UConfig(**kwargs)


# ---------------------------------------------------------------- training


def test_local_train_contract_and_phases(digits_clients):
    data = digits_clients[0]
    model = tiny_l2u()
    counts = {}
    cfg = L2UConfig(inner_steps=2)
    fed = FedConfig(batch_size=16, local_epochs=2, lr=0.05)
    seen = l2u_local_train(model, data, cfg, fed, torch.Generator().manual_seed(0), torch.device("cpu"),
                           seen_by_phase=counts)
    assert seen == 2 * len(data) == counts["generator"] + counts["mid"]
    # 14 batches (7 per epoch) in chunks of 2: generator, mid, generator, ... -> 8 generator, 6 mid batches
    assert counts["generator"] > counts["mid"] > 0
    with pytest.raises(ValueError, match="mask"):
        l2u_local_train(model, data, cfg, fed, torch.Generator(), torch.device("cpu"), mask={})


def test_phases_move_only_the_parts_their_losses_reach(digits_clients):
    data = digits_clients[0]
    fed = FedConfig(batch_size=16, local_steps=1, lr=0.1)
    for terms, frozen in ((("gtc",), {"noncausal", "decoder"}), (("rec", "V", "K"), {"classifier"})):
        model = tiny_l2u()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        cfg = L2UConfig(inner_steps=1, generator_terms=terms)  # one step: the generator phase only
        l2u_local_train(model, data, cfg, fed, torch.Generator().manual_seed(0), torch.device("cpu"))
        for name, p in model.named_parameters():
            assert torch.equal(p, before[name]) == (name.split(".")[0] in frozen), name


def test_reptile_meta_lr_interpolates_a_phase(digits_clients):
    data = digits_clients[0]
    fed = FedConfig(batch_size=16, local_steps=3, lr=0.05, momentum=0.0)
    full, half = tiny_l2u(), tiny_l2u()
    start = {n: p.detach().clone() for n, p in full.named_parameters()}
    l2u_local_train(full, data, L2UConfig(inner_steps=3), fed, torch.Generator().manual_seed(0), torch.device("cpu"))
    l2u_local_train(half, data, L2UConfig(inner_steps=3, meta_lr=0.5), fed, torch.Generator().manual_seed(0),
                    torch.device("cpu"))
    for (name, p), q in zip(full.named_parameters(), half.parameters()):
        assert torch.allclose(q, start[name] + 0.5 * (p - start[name]), atol=1e-6), name


def test_train_l2u_lowers_the_loss_and_is_reproducible(digits_clients):
    cfg = L2UConfig()
    fed = FedConfig(num_rounds=6, batch_size=16, lr=0.1, seed=3)
    pooled = ArrayDataset(torch.cat([c.x for c in digits_clients]), torch.cat([c.y for c in digits_clients]),
                          digits_clients[0].classes)
    models = [tiny_l2u(seed=1), tiny_l2u(seed=1)]
    before = l2u_loss_on(models[0], pooled, cfg)
    results = [train_l2u(m, digits_clients, fed, cfg, progress=False) for m in models]
    after = l2u_loss_on(models[0], pooled, cfg)
    assert after["total"] < 0.9 * before["total"]
    assert after["K"] < before["K"] and after["V"] < before["V"] and after["gtc"] < before["gtc"]
    for p, q in zip(*(m.parameters() for m in models)):
        assert torch.equal(p, q)
    cost = results[0].cost
    assert cost.rounds == 6 and cost.flops > 0 and cost.flops == results[1].cost.flops
    payload = sum(p.numel() * 4 for p in models[0].parameters())
    assert cost.bytes_up == cost.bytes_down == payload * 2 * 6  # 2 clients, 6 rounds


def test_train_l2u_flops_count_both_phases(digits_clients):
    fed = FedConfig(num_rounds=1, batch_size=16, local_steps=2, lr=0.05)
    l2u = train_l2u(tiny_l2u(), digits_clients, fed, L2UConfig(inner_steps=1), progress=False).cost.flops
    ce = train(tiny_l2u(), digits_clients, fed, progress=False).cost.flops  # two CE steps per client
    # two steps per client: a generator step (through E, K, V and D) and a MID step (E, K, V, C), each costlier
    # than the cross-entropy step through E, K and C that fl.train would have counted
    assert l2u > ce


def test_l2u_loss_on_restores_the_mode(digits_clients):
    model = tiny_l2u().train()
    out = l2u_loss_on(model, digits_clients[0], L2UConfig(), batch_size=32)
    assert model.training and set(out) == {"V", "K", "gtc", "rec", "total"}
