import copy
import itertools
import math

import pytest
import torch

from fuhelpers import partition
from fuhelpers.data import load_dataset, rotated_mnist, subsample
from fuhelpers.federation import Federation, Request
from fuhelpers.fl import FedConfig
from fuhelpers.unlearn.foul.l2u import L2UModel, noncausal_names, train_l2u
from fuhelpers.unlearn import MissingRequirementError
from fuhelpers.unlearn import foul
from fuhelpers.unlearn.foul import (
    FOULConfig,
    anchor_gradient,
    closed_form_direction,
    forget_domain,
    signed_gradients,
    solve_direction_numerically,
    solve_gamma,
)


def random_instance(dim, num_retain, num_forget, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(num_retain, dim, generator=g, dtype=torch.float64),
            torch.randn(num_forget, dim, generator=g, dtype=torch.float64))


# Generic instances: at most as many clients as dimensions, so 0 is almost surely not in the convex hull
# of the signed gradients (Wendel) and the optimum of (P) is unique.
CASES = [(dim, r, f, kappa, anchor)
         for dim, (r, f) in itertools.product((3, 6, 12), ((1, 1), (2, 1), (3, 2), (1, 2)))
         for kappa, anchor in ((0.3, "retain"), (1.0, "all"), (2.5, "retain"), (0.7, "signed"))
         if r + f <= dim]


# ---------------------------------------------------------------- Theorem 1


@pytest.mark.parametrize("dim, num_retain, num_forget, kappa, anchor", CASES)
def test_closed_form_matches_a_generic_solver(dim, num_retain, num_forget, kappa, anchor):
    retain, forget = random_instance(dim, num_retain, num_forget, seed=dim * 100 + num_retain * 10 + num_forget)
    closed = closed_form_direction(retain, forget, kappa, anchor=anchor)
    generic = solve_direction_numerically(retain, forget, kappa, anchor=anchor)
    assert abs(closed.value - generic.value) <= 1e-4 * max(1.0, abs(generic.value))
    assert torch.allclose(closed.direction, generic.direction, rtol=0, atol=1e-4 * float(generic.direction.norm()))
    # the generic solver's KKT multipliers are the coefficients Gamma
    assert torch.allclose(closed.gamma, generic.gamma, atol=1e-4)


@pytest.mark.parametrize("dim, num_retain, num_forget, kappa, anchor", CASES[::3])
def test_closed_form_is_theorem_1_with_zero_duality_gap(dim, num_retain, num_forget, kappa, anchor):
    retain, forget = random_instance(dim, num_retain, num_forget, seed=7 + dim)
    sizes_r, sizes_f = list(range(1, num_retain + 1)), [3] * num_forget
    out = closed_form_direction(retain, forget, kappa, anchor=anchor, retain_sizes=sizes_r, forget_sizes=sizes_f)
    gamma = out.gamma
    assert (gamma >= 0).all() and math.isclose(float(gamma.sum()), 1.0, abs_tol=1e-9)
    g_fl = anchor_gradient(retain, forget, anchor, sizes_r, sizes_f)
    assert math.isclose(float((out.direction - g_fl).norm()), kappa * float(g_fl.norm()), rel_tol=1e-9)  # on the sphere
    # primal value min_u <h_u, d> equals the value of the coefficient problem (D): no duality gap. (D) is flat at
    # its optimum, so its value is accurate to the solver's tolerance squared, but min_u <h_u, d(Gamma)> moves to
    # first order with Gamma's error: allow 1e-5 relative (SLSQP's Gamma is good to about 1e-7).
    _, dual = solve_gamma(signed_gradients(retain, forget), g_fl, kappa)
    assert math.isclose(out.value, dual, rel_tol=1e-5, abs_tol=1e-9)


def test_closed_form_on_a_problem_solved_by_hand():
    # One retained gradient (1, 0), one forgotten (0, 1); anchor g_0 = (1, 0); kappa = 2, so the ball is
    # ||d - (1, 0)|| <= 2. (P) maximises min(d_1, -d_2); at the optimum d_1 = -d_2 = t on the sphere:
    # (t - 1)^2 + t^2 = 4, t = (1 + sqrt 7) / 2. Gamma solves (D): gamma_1 + 2 sqrt(gamma_1^2 + (1 - gamma_1)^2)
    # is smallest at gamma_1 = (1 - 1 / sqrt 7) / 2.
    t = (1 + math.sqrt(7)) / 2
    gamma_1 = (1 - 1 / math.sqrt(7)) / 2
    out = closed_form_direction(torch.tensor([[1.0, 0.0]], dtype=torch.float64),
                                torch.tensor([[0.0, 1.0]], dtype=torch.float64), 2.0, anchor="retain")
    torch.testing.assert_close(out.direction, torch.tensor([t, -t], dtype=torch.float64), rtol=0, atol=1e-6)
    assert out.value == pytest.approx(t, abs=1e-6)
    torch.testing.assert_close(out.gamma, torch.tensor([gamma_1, 1 - gamma_1], dtype=torch.float64),
                               rtol=0, atol=1e-5)


def test_anchors():
    retain = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    forget = torch.tensor([[4.0, 4.0]], dtype=torch.float64)
    sizes_r, sizes_f = [1, 3], [4]
    def expect(*values):
        return torch.tensor(values, dtype=torch.float64)

    assert torch.allclose(anchor_gradient(retain, forget, "retain", sizes_r, sizes_f), expect(0.25, 1.5))
    assert torch.allclose(anchor_gradient(retain, forget, "all", sizes_r, sizes_f), expect(17 / 8, 22 / 8))
    assert torch.allclose(anchor_gradient(retain, forget, "signed", sizes_r, sizes_f), expect(-15 / 8, -10 / 8))
    given = torch.tensor([1.0, -1.0])
    assert torch.equal(anchor_gradient(retain, forget, given), given.double())
    assert torch.equal(signed_gradients(retain, forget), torch.cat([retain, -forget]))


@pytest.mark.parametrize("kappa", [1.2, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_direction_descends_retain_and_ascends_forget_when_kappa_exceeds_one(kappa, seed):
    # Condition: kappa > 1 and 0 not in the convex hull of the signed gradients (generic when clients <= dims).
    # Then the optimal value v* = min_u <h_u, d> is positive: every retained gradient has a positive and every
    # forgotten gradient a negative inner product with d, hence so do their (positively weighted) aggregates.
    retain, forget = random_instance(8, 3, 2, seed)
    # domain-like gradients: all clients share a common component, so g_FL itself still descends the forget loss
    common = 3 * torch.randn(8, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    retain, forget = retain + common, forget + common
    out = closed_form_direction(retain, forget, kappa, retain_sizes=[5, 1, 2])
    assert out.value > 0
    assert (retain @ out.direction > 0).all() and (forget @ out.direction < 0).all()
    assert (retain.sum(0) @ out.direction) > 0 and (forget.sum(0) @ out.direction) < 0


def test_small_kappa_need_not_ascend_the_forgotten_clients():
    # The same domain-like gradients with kappa < 1: the ball around g_FL (the retained clients' mean) is too
    # small to reach directions that conflict with a forgotten client whose gradient is close to g_FL.
    common = torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)
    retain = torch.stack([common + torch.tensor([0.0, 1.0, 0.0]), common + torch.tensor([0.0, -1.0, 0.0])])
    forget = (common + torch.tensor([0.0, 0.0, 1.0]))[None]
    small = closed_form_direction(retain, forget, 0.3)
    assert (forget @ small.direction > 0).all()  # still descends the forget loss
    large = closed_form_direction(retain, forget, 1.5)
    assert (forget @ large.direction < 0).all() and (retain @ large.direction > 0).all()


def test_kappa_zero_gives_the_anchor_and_degenerate_cases_stay_finite():
    retain, forget = random_instance(5, 2, 1, seed=3)
    out = closed_form_direction(retain, forget, 0.0)
    assert torch.equal(out.direction, retain.mean(0))
    # 0 in the convex hull of the signed gradients: a forgotten client with the retained gradient
    same = closed_form_direction(retain[:1], retain[:1], 2.0)
    assert torch.isfinite(same.direction).all() and same.value <= 1e-12
    numeric = solve_direction_numerically(retain[:1], retain[:1], 2.0)
    assert abs(numeric.value) < 1e-6  # the optimum of (P) is 0 here: no direction helps both
    zero = closed_form_direction(torch.zeros(2, 4), torch.zeros(1, 4), 1.5)
    assert torch.equal(zero.direction, torch.zeros(4))


def test_closed_form_accepts_lists_and_keeps_the_dtype():
    retain, forget = random_instance(6, 2, 2, seed=5)
    as_tensors = closed_form_direction(retain.float(), forget.float(), 1.5)
    as_lists = closed_form_direction(list(retain.float()), list(forget.float()), 1.5)
    assert as_tensors.direction.dtype == torch.float32
    assert torch.allclose(as_tensors.direction, as_lists.direction)
    with pytest.raises(ValueError, match="kappa"):
        closed_form_direction(retain, forget, -1.0)
    with pytest.raises(ValueError):
        closed_form_direction(retain, forget[:, :3], 1.0)


# ---------------------------------------------------------------- the method


@pytest.fixture(scope="module")
def setting():
    """Two rotated-digit domains, two clients each, and an L2U model trained for two rounds."""
    data = rotated_mnist(subsample(load_dataset("digits", "train"), 240, seed=0), angles=(0, 90))
    test = rotated_mnist(subsample(load_dataset("digits", "test"), 100, seed=0), angles=(0, 90))
    parts = partition.by_domain(data.domains.numpy(), 4, seed=0)
    fed = Federation.from_partition(data, parts, test,
                                    client_domains=partition.client_domains(data.domains.numpy(), parts))
    models = {}
    for classifier_input in ("causal", "both"):
        torch.manual_seed(0)
        model = L2UModel(1, 10, 8, width=4, causal_dim=6, noncausal_dim=6, classifier_input=classifier_input)
        train_l2u(model, fed.clients, FedConfig(num_rounds=2, batch_size=16, lr=0.1), progress=False)
        models[classifier_input] = model
    return fed, models


def test_forget_domain_names_every_client_of_the_domain(setting):
    fed, _ = setting
    assert forget_domain(fed, 1) == Request.client(2, 3)
    with pytest.raises(ValueError, match="domain"):
        forget_domain(fed, 5)


def test_unlearning_changes_only_the_noncausal_encoder(setting):
    fed, models = setting
    model = models["causal"]
    original = copy.deepcopy(model.state_dict())
    out = foul.unlearn(model, fed, forget_domain(fed, 1), FOULConfig(num_rounds=2, lr=0.1))
    names = set(noncausal_names(model))
    changed = {name for name, value in out.model.state_dict().items() if not torch.equal(value, original[name])}
    assert changed == names  # every V tensor moved, nothing else (buffers included)
    for name, value in model.state_dict().items():
        assert torch.equal(value, original[name])  # the input model is not edited
    x = fed.test.x
    with torch.no_grad():
        assert torch.equal(out.model.eval()(x), model.eval()(x))  # classifier on z_K only: logits unchanged


def test_cost_counts_the_noncausal_encoder_only(setting):
    fed, models = setting
    model = models["causal"]
    rounds = 3
    out = foul.unlearn(model, fed, Request.client(2, 3), FOULConfig(num_rounds=rounds, lr=0.1))
    v_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n.startswith("noncausal."))
    assert out.info["noncausal_bytes"] == v_bytes
    # one download of V and one upload of a V-sized gradient per client and round: 4 clients
    assert out.cost.bytes_down == v_bytes * 4 * rounds
    assert out.cost.bytes_up == v_bytes * 4 * rounds
    assert out.cost.comm_mb == 2 * v_bytes * 4 * rounds / 1e6
    assert out.cost.rounds == rounds and out.cost.flops > 0 and out.cost.seconds > 0
    full = sum(p.numel() * p.element_size() for p in model.parameters())
    assert v_bytes < full / 2


def test_diagnostics_follow_the_theory(setting):
    fed, models = setting
    rounds = 3
    calls = []

    script = [0.9, 0.7, 0.4, 0.5]  # a forget-accuracy log written by hand: before, then after rounds 1-3

    def evaluate(m):
        calls.append(1)
        return {"forget_acc": script[len(calls) - 1]}

    out = foul.unlearn(models["both"], fed, Request.client(2, 3),
                       FOULConfig(num_rounds=rounds, lr=0.1, kappa=1.5, loss="ce"), evaluate=evaluate)
    assert len(out.log) == len(calls) == rounds + 1 and [e["round"] for e in out.log] == list(range(rounds + 1))
    cos = out.info["cosine"]
    assert len(cos["retain"]) == len(cos["forget"]) == rounds
    # kappa > 1 and generic (4 clients, many more parameters): v* > 0, so every retained gradient descends and
    # every forgotten gradient ascends along the applied update
    assert all(v > 0 for v in out.info["value"])
    assert all(c > 0 for c in cos["retain"]) and all(c < 0 for c in cos["forget"])
    assert len(out.info["gamma"]) == rounds and all(math.isclose(sum(g), 1.0, abs_tol=1e-9)
                                                    for g in out.info["gamma"])
    # T2F by hand: lowest at round 2, so (0.9 - 0.4) / 2
    assert out.info["time_to_forget"] == pytest.approx(0.25)


def test_classifier_on_both_lets_unlearning_change_predictions(setting):
    fed, models = setting
    model = models["both"]
    out = foul.unlearn(model, fed, Request.client(2, 3), FOULConfig(num_rounds=2, lr=0.2, loss="ce"))
    with torch.no_grad():
        assert not torch.equal(out.model.eval()(fed.test.x), model.eval()(fed.test.x))


def test_same_seed_same_result(setting):
    fed, models = setting
    cfg = FOULConfig(num_rounds=2, lr=0.1, local_steps=2, batch_size=8, seed=4)
    a = foul.unlearn(models["causal"], fed, Request.client(3), cfg)
    b = foul.unlearn(models["causal"], fed, Request.client(3), cfg)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    assert a.info["gamma"] == b.info["gamma"]


def test_clear_errors(setting):
    fed, models = setting
    with pytest.raises(MissingRequirementError, match="L2U"):
        foul.unlearn(torch.nn.Linear(64, 10), fed, Request.client(3), FOULConfig(num_rounds=1))
    with pytest.raises(ValueError, match="classifier_input"):
        foul.unlearn(models["causal"], fed, Request.client(3), FOULConfig(num_rounds=1, loss="ce"))
    for bad in (dict(kappa=-1), dict(loss="mse"), dict(anchor="median"), dict(local_steps=0)):
        with pytest.raises(ValueError):
            FOULConfig(**bad)
