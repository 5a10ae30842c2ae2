"""Target Information Score (TIS) reset: Balordi, Stella, Manini & Merlo, Sec. 4-5.

The paper models an attacker who tries to tell, from the trained parameters,
whether the target dataset D_T was used. With a Gaussian (Laplace)
approximation of the parameters around the trained minimum and a diagonal
Hessian, the Fisher information of that question is a sum over parameters of
``(h'_i / h_i)^2`` (Eq. 25), where ``h`` is the Hessian diagonal of the loss on
all data and ``h'`` its derivative with respect to the weight of D_T. The
algorithm (Sec. 5):

1. every client ``c`` computes the Hessian diagonals of its mean loss on its
   forget part D_c^(f) and its retain part D_c^(r) (Eq. 29) and sends them with
   the sample counts;
2. the server aggregates them into ``h`` and ``h'`` (Eq. 30) and scores each
   parameter with TIS = (h'/h)^2 (Eq. 28);
3. per layer, the highest-scoring parameters that together carry a fraction
   gamma of the layer's total score are reset to their initial values.

Optionally (Appendix 2) one round of federated training restricted to the
reset entries recovers utility ("TRIM" in the paper).

The Random Reset baseline of Sec. 6.2 resets as many entries per layer, chosen
at random; it is :mod:`fuhelpers.unlearn.random_reset` with the counts TIS
used, charged for the curvature round that gave them:
``random_reset.unlearn(model, fed, req, RandomResetConfig(counts=out.info["counts"],
counts_cost=out.info["scoring_cost"], ...))``.

Differences between the paper and the authors' code (github.com/lorenzomanini/FedUnlearn-PE)
are options here: ``reset_value`` ("init" in the paper, "zero" in the code) and
``eps`` (the paper drops parameters with vanishing ``h``; the code zeroes the
score where ``h <= 0``, and also where the target diagonal is ``<= 0``, which
only matters for ``diag_hessian`` since GGN diagonals are never negative).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from ..cost import Cost, stopwatch, tensor_bytes
from ..curvature import METHODS as CURVATURES
from ..curvature import curvature_flops_per_sample, hessian_diagonal
from ..fl import FedConfig, FedResult, active_runtime, derive_seed, payload_names, train
from .base import Unlearned, require
from .reset import RESET_VALUES, apply_reset_, reset_storage_bytes

NEEDS = {"clients", "target_data"}  # plus "init_state" when reset_value="init" (the paper's choice)

Diagonal = dict[str, Tensor]


@dataclass
class ClientCurvature:
    """What one client sends: its two Hessian diagonals (Eq. 29) and its sample counts.

    Attributes
    ----------
    client : int
        Client id.
    n_forget, n_retain : int
        N_c^(f) and N_c^(r): samples in the forget part D_c^(f) and in the retain part D_c^(r).
    forget, retain : dict of str to Tensor, or None
        h_c^(f) and h_c^(r): diagonals of the mean loss on each part; None for an empty part.
    """

    client: int
    n_forget: int
    n_retain: int
    forget: Diagonal | None
    retain: Diagonal | None


def client_curvatures(model: nn.Module, federation, request, method: str = "ggn_exact", *,
                      seed: int = 0, **kwargs) -> list[ClientCurvature]:
    """Each client's Hessian diagonals on its forget and retain parts (Eq. 29).

    Each client computes these on its own data (:func:`client_curvature`): here, in turn, or, inside
    :func:`fuhelpers.fl.client_runtime`, on the runtime's clients where they answer the query (Flower's do;
    :class:`~fuhelpers.processes.ClientProcesses` only trains, so under it they are computed here).

    Parameters
    ----------
    model : nn.Module
        The trained global model (left unchanged).
    federation : Federation
    request : Request
        Defines each client's forget part via ``federation.forget_mask``.
    method : str
        Curvature method, see :data:`fuhelpers.curvature.METHODS`.
    seed : int
        Base seed; each client and part gets its own derived seed (used by ``"ggn_mc"``).
    **kwargs
        Passed to :func:`fuhelpers.curvature.hessian_diagonal` (``batch_size``, ``mc_samples``, ``device``).

    Returns
    -------
    list of ClientCurvature
        One per client, in client-id order (empty clients included, with None diagonals).
    """
    ask_clients = getattr(active_runtime(), "client_curvatures", None)
    if ask_clients is not None:   # clients that answer queries (Flower's); ClientProcesses only trains
        return ask_clients(model, federation.num_clients, request, method, seed=seed, **kwargs)
    return [client_curvature(model, data, federation.forget_mask(c, request), c, method, seed=seed, **kwargs)
            for c, data in enumerate(federation.clients)]


def client_curvature(model: nn.Module, data, forget: Tensor, client: int, method: str = "ggn_exact", *,
                     seed: int = 0, **kwargs) -> ClientCurvature:
    """One client's answer (Eq. 29): diagonals on its forget part (``forget``, (N_c,) bool) and its retain part."""
    parts = {}
    for part, mask in (("forget", forget), ("retain", ~forget)):
        part_seed = derive_seed(seed, client, int(part == "forget"))
        parts[part] = (hessian_diagonal(model, data.subset(mask), method, seed=part_seed, **kwargs)
                       if mask.any() else None)
    return ClientCurvature(client, int(forget.sum()), int((~forget).sum()), parts["forget"], parts["retain"])


def aggregate(curvatures: list[ClientCurvature]) -> tuple[Diagonal, Diagonal]:
    """The server's aggregation (Eq. 30).

    ``h  = (1/N)   sum_c (N_c^(f) h_c^(f) + N_c^(r) h_c^(r))``: Hessian diagonal of the loss on all data;
    ``h' = (1/N_T) sum_c  N_c^(f) h_c^(f)``: Hessian diagonal of the loss on the target data D_T.

    Eq. 30's ``h'`` is the mean over D_T, i.e. Eq. 27's ``h'`` times ``N / N_T``:
    a constant factor, which changes neither the ranking nor the per-layer mass fractions.

    Returns
    -------
    h, h_prime : dict of str to Tensor
    """
    n_total = sum(c.n_forget + c.n_retain for c in curvatures)
    n_target = sum(c.n_forget for c in curvatures)
    if n_target == 0:
        raise ValueError("no client holds data to forget: h' (Eq. 30) is undefined")
    h = _weighted_sum([(c.n_forget, c.forget) for c in curvatures] + [(c.n_retain, c.retain) for c in curvatures])
    h_prime = _weighted_sum([(c.n_forget, c.forget) for c in curvatures])
    h = {name: v / n_total for name, v in h.items()}  # Eq. 30, left
    h_prime = {name: v / n_target for name, v in h_prime.items()}  # Eq. 30, right
    return h, h_prime


def _weighted_sum(terms: list[tuple[int, Diagonal | None]]) -> Diagonal:
    total: Diagonal = {}
    for count, diag in terms:
        if diag is None:
            continue
        for name, value in diag.items():
            total[name] = total[name] + count * value if name in total else count * value
    return total


def target_information_score(h: Mapping[str, Tensor], h_prime: Mapping[str, Tensor], *, eps: float = 0.0) -> Diagonal:
    """TIS_i = (h'_i / h_i)^2 (Eq. 28), zero where ``h_i <= eps``.

    The derivation needs ``h_i > 0`` (Eq. 22: the paper excludes parameters
    with vanishing diagonal); the authors' newer code sets the score to zero
    where ``h <= 0``, which is ``eps=0``. A small positive ``eps`` also drops
    parameters whose tiny ``h`` would make the ratio explode.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    scores = {}
    for name, hi in h.items():
        kept = hi > eps
        ratio = h_prime[name] / torch.where(kept, hi, torch.ones_like(hi))
        scores[name] = torch.where(kept, ratio.square(), torch.zeros_like(hi))  # Eq. 28
    return scores


def select_by_mass(scores: Mapping[str, Tensor], gamma: float) -> dict[str, Tensor]:
    """Per layer, the smallest set of entries whose scores reach a fraction ``gamma`` of the layer's total.

    A "layer" is one named parameter tensor (a weight and its bias are
    separate layers), our reading of the paper's per-layer selection and
    what the authors' code does. Within a tensor the entries are sorted by
    score, descending (stable: ties keep index order), and the first ``k`` are
    chosen, ``k`` the smallest count whose cumulative score reaches
    ``gamma * total``. ``gamma=0`` or an all-zero tensor selects nothing;
    ``gamma=1`` selects every entry with a positive score.

    The paper calls ``gamma`` the removal percentage ``gamma_removal`` and
    states it in percent; here it is a fraction in [0, 1]. The authors' code
    picks the cut where the cumulative score is *closest* to the target
    rather than the first to reach it, which can select one entry fewer.

    Parameters
    ----------
    scores : dict of str to Tensor
        Non-negative scores (e.g. from :func:`target_information_score`).
    gamma : float
        Fraction of each layer's total score to cover, in [0, 1].

    Returns
    -------
    dict of str to bool Tensor
        Masks shaped like the scores, True where the entry is to be reset.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be a fraction in [0, 1] (the paper's gamma_removal / 100), got {gamma}")
    masks = {}
    for name, s in scores.items():
        if not torch.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"scores of {name} must be finite and non-negative")
        masks[name] = _select_top_mass(s, gamma)
    return masks


def _select_top_mass(scores: Tensor, gamma: float) -> Tensor:
    flat = scores.detach().reshape(-1).double()  # (n,)
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    if gamma == 0.0 or flat.sum() == 0:
        return chosen.view(scores.shape)
    if gamma == 1.0:  # avoids rounding in the cumulative sum leaving tiny positive scores out
        return (flat > 0).view(scores.shape)
    values, order = torch.sort(flat, descending=True, stable=True)
    cumulative = torch.cumsum(values, 0)  # (n,)
    k = int((cumulative < gamma * cumulative[-1]).sum()) + 1  # first prefix reaching the target
    chosen[order[:k]] = True
    return chosen.view(scores.shape)


@dataclass
class TISScores:
    """Scores and diagonals from one curvature round, reusable across ``gamma`` values.

    Attributes
    ----------
    tis : dict of str to Tensor
        TIS per parameter entry (Eq. 28).
    h, h_prime : dict of str to Tensor
        Aggregated diagonals (Eq. 30).
    cost : Cost
        Cost of the curvature round (see :func:`compute_scores`).
    method : str
        Curvature method used.
    """

    tis: Diagonal
    h: Diagonal
    h_prime: Diagonal
    cost: Cost
    method: str = "ggn_exact"


@dataclass
class TISConfig:
    """TIS settings.

    Attributes
    ----------
    gamma : float
        Fraction of each layer's TIS mass to reset, in [0, 1] (the paper's
        gamma_removal / 100; it sweeps ten values, so choose per setting).
    curvature : {"diag_hessian", "ggn_exact", "ggn_mc", "exact"}
        Hessian-diagonal method; the authors' code offers the first three.
    eps : float
        Scores are zero where ``h <= eps``.
    reset_value : {"init", "zero"}
        Reset to the initial values (paper) or to zero (authors' code, ``RESET_STRATEGY='zero'``).
    init_state : dict, optional
        Pre-training state, required for ``reset_value="init"`` (``FedResult.initial_state``).
    batch_size : int
        Batch size of the curvature passes.
    mc_samples : int
        Sampled labels per input for ``curvature="ggn_mc"``.
    seed : int
        Seed of the ``"ggn_mc"`` sampling.
    retrain : FedConfig, optional
        If set, targeted retraining after the reset (Appendix 2): FedAvg on the
        retained clients' retained data, changing only the reset entries. The
        paper runs one round of one local epoch: ``FedConfig(num_rounds=1)``.
    scores : TISScores, optional
        Precomputed scores (from :func:`compute_scores`), so that a sweep over
        ``gamma`` runs the curvature round once; their cost is then not counted again.
    """

    gamma: float = 0.3
    curvature: str = "ggn_exact"
    eps: float = 0.0
    reset_value: str = "init"
    init_state: dict | None = None
    batch_size: int = 128
    mc_samples: int = 1
    seed: int = 0
    retrain: FedConfig | None = None
    scores: TISScores | None = None

    def __post_init__(self):
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be a fraction in [0, 1] (the paper's gamma_removal / 100), got {self.gamma}")
        if self.curvature not in CURVATURES:
            raise ValueError(f"unknown curvature {self.curvature!r}; choose one of {CURVATURES}")
        if self.reset_value not in RESET_VALUES:
            raise ValueError(f"reset_value must be one of {RESET_VALUES}, got {self.reset_value!r}")


def compute_scores(model: nn.Module, federation, request, config: TISConfig, *, device=None) -> TISScores:
    """Run the curvature round (Eq. 29-30) and score every parameter (Eq. 28).

    Cost: ``seconds`` is the wall time of the curvature computation and
    aggregation; ``rounds`` is 1; ``bytes_down`` is the model broadcast to every
    client holding data; ``bytes_up`` is two diagonals per such client (forget and
    retain, each the size of the trainable parameters; a client with an empty
    part sends zeros and a zero count, so that message sizes do not reveal who
    holds target data); ``flops`` is the samples processed times the FLOPs per
    sample of one curvature pass, counted on a probe batch with
    ``torch.utils.flop_counter`` (outside the timed section).

    Parameters
    ----------
    model : nn.Module
        The trained global model (left unchanged).
    federation : Federation
    request : Request
    config : TISConfig
        Uses ``curvature``, ``batch_size``, ``mc_samples``, ``seed``, ``eps``.
    device : torch.device or str, optional
        Where to compute; default: the model's device.
    """
    cost = Cost()
    with stopwatch(cost):
        curvatures = client_curvatures(model, federation, request, config.curvature, seed=config.seed,
                                       batch_size=config.batch_size, mc_samples=config.mc_samples, device=device)
        h, h_prime = aggregate(curvatures)
        tis = target_information_score(h, h_prime, eps=config.eps)
    active = [data for data in federation.clients if len(data) > 0]
    diagonal_bytes = tensor_bytes(p for p in model.parameters() if p.requires_grad)
    state = model.state_dict()
    # one round: the model to every client holding data, two diagonals (forget, retain) back from each
    cost.add_round(clients=len(active), down=tensor_bytes(state[n] for n in payload_names(model)), up=2 * diagonal_bytes)
    cost.add_compute(sum(len(d) for d in active),
                     curvature_flops_per_sample(model, active[0], config.curvature, mc_samples=config.mc_samples))
    return TISScores(tis=tis, h=h, h_prime=h_prime, cost=cost, method=config.curvature)


def targeted_retrain(model: nn.Module, federation, request, masks: Mapping[str, Tensor], config: FedConfig, *,
                     evaluate=None, device=None) -> FedResult:
    """FedAvg on the retained clients that changes only the masked entries (Appendix 2, "TRIM").

    Trains ``model`` in place. The forgotten data take no part. Works for any
    masks, e.g. Random Reset's (``out.info["masks"]``) for the paper's
    "Random Retrained" baseline. BatchNorm running statistics are buffers,
    not parameters, and are re-estimated by the retained clients.
    """
    clients, ids = federation.retain_clients(request)
    return train(model, clients, config, client_ids=ids, mask=masks, evaluate=evaluate, device=device,
                 desc="TIS retrain")


def unlearn(model: nn.Module, federation, request, config: TISConfig, history=None, *, evaluate=None,
            device=None) -> Unlearned:
    """Reset the parameters that carry the most information about the target data.

    Parameters
    ----------
    model : nn.Module
        The trained global model (left unchanged; a copy is returned).
    federation : Federation
    request : Request
    config : TISConfig
    history : ignored
        Accepted for the common signature; TIS stores nothing during training.
    evaluate : callable, optional
        Per-round evaluation of the targeted retraining.
    device : torch.device or str, optional
        Where to compute curvature and retrain; default: the model's device.

    Returns
    -------
    Unlearned
        ``info``: ``masks`` (reset entries per parameter), ``counts`` (their
        number per parameter, for Random Reset), ``reset`` (total),
        ``reset_fraction`` (of all parameters), ``gamma``, ``scoring_cost`` (the
        curvature round's cost, also when the scores were given precomputed;
        Random Reset, which reuses ``counts``, is charged it). ``cost``: the
        curvature round when computed here, plus the reset, plus the retraining.
    """
    require(config.reset_value == "zero" or config.init_state is not None, "TIS with reset_value='init'",
            "the initial state", "pass init_state=FedResult.initial_state or use reset_value='zero'")
    scores = config.scores
    cost = Cost(storage_bytes=reset_storage_bytes(config.reset_value, config.init_state))
    if scores is None:
        scores = compute_scores(model, federation, request, config, device=device)
        cost = cost + scores.cost
    out = copy.deepcopy(model)
    reset_cost = Cost()
    with stopwatch(reset_cost):
        masks = select_by_mass(scores.tis, config.gamma)
        total_reset = apply_reset_(out, masks, config.reset_value, config.init_state)
    cost = cost + reset_cost
    log: list[dict] = []
    if config.retrain is not None:
        result = targeted_retrain(out, federation, request, masks, config.retrain, evaluate=evaluate, device=device)
        cost, log = cost + result.cost, result.log
    total = sum(p.numel() for p in out.parameters())
    info = {
        "masks": masks,
        "counts": {name: int(m.sum()) for name, m in masks.items()},
        "reset": total_reset,
        "reset_fraction": total_reset / total,
        "gamma": config.gamma,
        "scoring_cost": scores.cost,
    }
    return Unlearned(out, cost, info, log)
