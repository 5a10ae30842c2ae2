r"""FOUL: federated on-server unlearning by gradient conflict matching (Nguyen et al., CVPR 2026, arXiv 2603.13795).

FOUL has two stages. During training, L2U (:mod:`fuhelpers.unlearn.foul.l2u`) splits the
model into a causal encoder ``K`` (domain-invariant) and a non-causal encoder
``V`` (domain-specific). To unlearn, only ``V`` changes (Definition 7): each
round every client computes the gradient of its loss with respect to ``V``'s
parameters on its own data and uploads it; the server combines the uploads
into one update meant to descend every retained client's loss and ascend
every forgotten client's loss (Sec. 3.2), and applies it to ``V``. ``E``, ``K``,
``D`` and ``C`` never change, and only ``V`` travels.

Theorem 1, reconstructed
------------------------
Our text of the paper (arXiv 2603.13795) lost Eqs. 9, 10 and 13-22 in extraction;
a published summary of the paper keeps the result::

    grad_FOUL = grad_FL + kappa ||grad_FL|| (grad_R - grad_F) / ||grad_R - grad_F||

with ``grad_R = sum_{u in R} gamma_u g_u`` and ``grad_F = sum_{u in F} gamma_u g_u``.
This is the solution of conflict-averse gradient descent (CAGrad, Liu et al.,
NeurIPS 2021) once forgotten clients enter with a minus sign, and the proof's
surviving prose (Lagrangian, Slater, strong duality, inner optimum in ``d``,
then ``lambda``, then the coefficients) follows the CAGrad derivation step by
step. We rebuild it here.

Notation: clients ``u = 1..U``, retained set ``R``, forgotten set ``F``;
``g_u`` = gradient of client ``u``'s loss w.r.t. ``theta_V``; signed gradients
``h_u = g_u`` for ``u in R`` and ``h_u = -g_u`` for ``u in F``; the anchor
``g_0 = grad_FL``. The update is ``theta_V <- theta_V - eta d``, so
``<g_u, d> > 0`` means that client ``u``'s loss decreases to first order and
``<g_u, d> < 0`` that it increases.

*Primal problem* (our reading of Eq. 9 / Eq. 13): improve the worst client
as much as possible while staying in a ball around the FL gradient::

    max_d  min_u <h_u, d>    s.t.  ||d - g_0|| <= kappa ||g_0||                    (P)

1. ``min_u <h_u, d> = min_{Gamma in Delta} <g_Gamma, d>`` with ``Delta`` the
   probability simplex over the ``U`` clients and
   ``g_Gamma = sum_u gamma_u h_u = grad_R - grad_F`` (a linear function is
   smallest at a vertex of the simplex).
2. Lagrangian of the inner problem for a fixed ``Gamma`` (cf. Eq. 14),
   ``lambda >= 0``::

       L(d, lambda) = <g_Gamma, d> - (lambda / 2) (||d - g_0||^2 - kappa^2 ||g_0||^2)

3. Strong duality (cf. Eq. 15). The objective of (P) written as
   ``max_d min_Gamma <g_Gamma, d>`` is bilinear, the ball and the simplex are
   convex and compact, so max and min can be swapped (Sion's minimax
   theorem); for ``kappa ||g_0|| > 0`` the point ``d = g_0`` is strictly
   feasible (Slater), so the inner maximisation over ``d`` equals its
   Lagrangian dual ``min_{lambda >= 0} max_d L``. If ``kappa ||g_0|| = 0`` the
   ball is the point ``g_0`` and ``d = g_0`` trivially.
4. Inner optimum (cf. Eqs. 16-19). For fixed ``lambda > 0``,
   ``grad_d L = g_Gamma - lambda (d - g_0) = 0`` gives ``d = g_0 + g_Gamma / lambda``
   and ``max_d L = <g_Gamma, g_0> + ||g_Gamma||^2 / (2 lambda) + lambda kappa^2 ||g_0||^2 / 2``,
   smallest at ``lambda* = ||g_Gamma|| / (kappa ||g_0||)`` (cf. Eq. 21). Hence::

       d*(Gamma) = g_0 + kappa ||g_0|| g_Gamma / ||g_Gamma||                         (Theorem 1)
       max_d min ... = <g_Gamma, g_0> + kappa ||g_0|| ||g_Gamma||

5. Outer problem over the coefficients (cf. Eqs. 20, 22)::

       Gamma* = argmin_{Gamma in Delta}  <g_Gamma, g_0> + kappa ||g_0|| ||g_Gamma||      (D)

   a convex problem in ``U`` variables (a linear term plus the norm of a
   linear map), which only needs the ``U x U`` Gram matrix of the signed
   gradients and their inner products with ``g_0``: the server never searches
   the ``d``-dimensional parameter space (the paper's "U << d" argument). We
   solve (D) with SLSQP; then ``d* = d*(Gamma*)``. If ``g_{Gamma*} = 0``
   (0 lies in the convex hull of the ``h_u``), the optimal value of (P) is 0,
   no direction helps every client, and the formula is undefined; the paper
   says the results "hold trivially". We then return ``d = g_0`` (plain
   fine-tuning), a fallback and not a maximiser of (P). With more
   parameters than clients this needs linearly dependent client gradients,
   which real gradients practically never are.

Limits: ``kappa = 0`` gives ``d = g_0``; ``kappa -> inf`` gives a direction
along the minimum-norm point of the convex hull of the ``h_u`` (MGDA).

*When does the direction conflict with the forgotten clients?* The optimal
value of (P) is ``v* = min_u <h_u, d*>``. If ``v* > 0`` then ``<g_u, d*> > 0``
for every retained and ``<g_u, d*> < 0`` for every forgotten client, hence
also for any positive combination (the retain and forget aggregates). A
sufficient condition is ``kappa > 1`` and ``0`` not in the convex hull of the
``h_u``: then the ball contains a neighbourhood of the origin and, by
Gordan's theorem, some direction makes every ``<h_u, d>`` positive. For
``kappa <= 1`` it holds exactly when some ``d`` in the ball does, e.g. when
already ``min_u <h_u, g_0> > 0``; for typical domain clients, whose gradients
point the same way, ``g_0`` from the retained clients still descends the
forgotten ones and a small ``kappa`` is not enough.

What we had to choose (the paper's text does not say)
----------------------------------------------------
* ``grad_FL`` (``anchor``): the sample-weighted mean of the *retained*
  clients' gradients by default, i.e. what FedAvg on the retained federation
  would apply, so that ``kappa = 0`` is plain fine-tuning of ``V``.
  ``"all"`` (every client, as in the learning stage) and ``"signed"``
  (the weighted mean of the ``h_u``, CAGrad's own anchor) are options.
* ``Gamma`` lives on the simplex over all ``U`` clients, retained first, and
  the worst case is over clients, unweighted (CAGrad's shape).
* The client loss (``loss``): by default the L2U objective (Eq. 3, the loss
  clients trained with, Definition 3). With the paper's classifier on ``z_K``
  only, the cross-entropy does not depend on ``V`` at all, so only ``L_V``
  and ``L_rec`` give ``V`` a gradient, and unlearning ``V`` leaves every
  prediction unchanged; ``loss="ce"`` needs an L2U model with
  ``classifier_input="both"``.
* Gradients are computed in ``eval()`` mode (no reparameterisation noise, no
  running-statistics updates), as the mean over ``local_steps`` mini-batches,
  or over all the client's data by default.
* Each round the server sends ``V``'s parameters to every participating client
  and receives one gradient of the same size per client:
  ``bytes_down = bytes_up = |V| x clients x rounds``.

For requests other than whole clients (not in the paper) a client holding
both kinds of data takes part twice, with its retained part and with its
forgotten part (two uploads, one download).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize, nnls
from torch import Tensor, nn

from ...cost import Cost, stopwatch, tensor_bytes
from ...device import resolve_device
from ...fl import FedConfig, _batches, derive_seed
from .l2u import L2UConfig, l2u_loss, loss_flops_per_sample, noncausal_names
from ...metrics import time_to_forget
from ...progress import progress as progress_bar
from ..base import Unlearned, require

NEEDS = {"clients"}  # plus an L2U-trained model (fuhelpers.unlearn.foul.l2u.train_l2u)
LOSSES = ("l2u", "ce")
ANCHORS = ("retain", "all", "signed")

Grads = Tensor | Sequence[Tensor]


# ---------------------------------------------------------------- configuration


@dataclass
class FOULConfig:
    """FOUL's unlearning stage.

    Attributes
    ----------
    kappa : float
        Radius of the ball around ``grad_FL``, relative to its norm (Theorem 1).
        Our choice 1.5: the paper's best values (App. I, Fig. 10b) are lost;
        with ``kappa > 1`` the update descends every retained and ascends
        every forgotten client whenever some direction does (module notes).
    lr : float
        Server step size ``eta`` of ``theta_V <- theta_V - eta d`` (our
        choice, 0.05, which moved the forget accuracy steadily in our
        rotated-MNIST smoke runs; App. I's best value is lost).
    num_rounds : int
        Unlearning rounds; 50 because the paper reaches its best forget
        accuracy in fewer than 50 rounds (Sec. 5). Smoke runs use fewer.
    local_steps : int, optional
        Mini-batches averaged into a client's gradient; ``None`` (default):
        all of the client's data.
    batch_size : int
        Mini-batch size of the gradient computation (our choice).
    loss : {"l2u", "ce"}
        Client loss whose gradient w.r.t. ``V`` is uploaded: the L2U objective
        (Eq. 3) or the cross-entropy (only for ``classifier_input="both"``).
    anchor : {"retain", "all", "signed"} or Tensor
        What ``grad_FL`` is (module notes); a tensor is used as it is.
    l2u : L2UConfig
        Weights of the L2U loss when ``loss="l2u"``; use the training's.
    seed : int
        Seed of the mini-batch draws.
    """

    kappa: float = 1.5
    lr: float = 0.05
    num_rounds: int = 50
    local_steps: int | None = None
    batch_size: int = 64
    loss: str = "l2u"
    anchor: str | Tensor = "retain"
    l2u: L2UConfig = field(default_factory=L2UConfig)
    seed: int = 0

    def __post_init__(self):
        if self.kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if isinstance(self.anchor, str) and self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS} or a tensor, got {self.anchor!r}")
        if self.local_steps is not None and self.local_steps < 1:
            raise ValueError(f"local_steps must be >= 1 or None, got {self.local_steps}")


# ---------------------------------------------------------------- Theorem 1


class Direction(NamedTuple):
    """An unlearning direction ``d`` (apply as ``theta_V - eta d``).

    Attributes
    ----------
    direction : Tensor, shape (P,)
    gamma : Tensor, shape (R + F,), or None
        Client coefficients ``Gamma``, retained clients first (from the
        generic solver: its KKT multipliers; ``None`` when ``kappa ||g_0|| = 0``).
    value : float
        Worst-case improvement ``min_u <h_u, d>`` (objective of (P)).
    """

    direction: Tensor
    gamma: Tensor | None
    value: float


def _stack(grads: Grads, what: str) -> Tensor:
    """Gradients as a float64 matrix (n, P); an empty sequence gives (0, P) only via a tensor."""
    if isinstance(grads, Tensor):
        mat = grads.detach()
        if mat.ndim == 1:
            mat = mat[None]
    else:
        grads = list(grads)
        if not grads:
            return torch.zeros(0, 0, dtype=torch.float64)
        mat = torch.stack([g.detach().reshape(-1) for g in grads])
    if mat.ndim != 2:
        raise ValueError(f"{what} must be a (clients, P) matrix or a sequence of vectors, got shape {tuple(mat.shape)}")
    return mat.to(torch.float64).cpu()


def _dtype_of(retain_grads: Grads, forget_grads: Grads) -> torch.dtype:
    """The floating dtype of the first gradient given (float32 when none is a tensor)."""
    for grads in (retain_grads, forget_grads):
        if isinstance(grads, Tensor):
            return grads.dtype
        for g in grads:
            return g.dtype
    return torch.float32


def _client_matrices(retain_grads: Grads, forget_grads: Grads) -> tuple[Tensor, Tensor]:
    r, f = _stack(retain_grads, "retain_grads"), _stack(forget_grads, "forget_grads")
    if len(r) == 0 and len(f) == 0:
        raise ValueError("need at least one client gradient")
    width = r.shape[1] if len(r) else f.shape[1]
    r = r if len(r) else torch.zeros(0, width, dtype=torch.float64)
    f = f if len(f) else torch.zeros(0, width, dtype=torch.float64)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"retain gradients have {r.shape[1]} entries, forget gradients {f.shape[1]}")
    return r, f


def _weights(sizes: Sequence[float] | None, n: int, what: str) -> Tensor:
    w = torch.ones(n, dtype=torch.float64) if sizes is None else torch.as_tensor(sizes, dtype=torch.float64)
    if w.shape != (n,) or (w < 0).any():
        raise ValueError(f"{what} must hold {n} non-negative numbers, got {sizes}")
    return w


def signed_gradients(retain_grads: Grads, forget_grads: Grads) -> Tensor:
    """``h_u``: retained clients' gradients, then the forgotten clients' gradients negated; (R + F, P) float64."""
    r, f = _client_matrices(retain_grads, forget_grads)
    return torch.cat([r, -f])


def anchor_gradient(retain_grads: Grads, forget_grads: Grads, anchor: str | Tensor = "retain",
                    retain_sizes: Sequence[float] | None = None,
                    forget_sizes: Sequence[float] | None = None) -> Tensor:
    """``g_0 = grad_FL``, the centre of Theorem 1's ball; float64, shape (P,).

    Parameters
    ----------
    retain_grads, forget_grads : Tensor (n, P) or sequence of Tensor (P,)
    anchor : {"retain", "all", "signed"} or Tensor
        ``"retain"``: ``sum_R n_u g_u / sum_R n_u``; ``"all"``: the same over
        every client; ``"signed"``: ``(sum_R n_u g_u - sum_F n_u g_u) / sum n_u``
        (the weighted mean of the signed gradients); a tensor: itself.
    retain_sizes, forget_sizes : sequence of float, optional
        Client weights ``n_u`` (sample counts); equal by default.
    """
    r, f = _client_matrices(retain_grads, forget_grads)
    if isinstance(anchor, Tensor):
        g0 = anchor.detach().reshape(-1).to(torch.float64).cpu()
        if g0.numel() != r.shape[1]:
            raise ValueError(f"anchor has {g0.numel()} entries, gradients have {r.shape[1]}")
        return g0
    wr, wf = _weights(retain_sizes, len(r), "retain_sizes"), _weights(forget_sizes, len(f), "forget_sizes")
    if anchor == "retain":
        if len(r) == 0 or wr.sum() <= 0:
            raise ValueError("anchor='retain' needs at least one retained client with a positive weight")
        return wr @ r / wr.sum()
    if anchor == "all":
        return (wr @ r + wf @ f) / (wr.sum() + wf.sum())
    if anchor == "signed":
        return (wr @ r - wf @ f) / (wr.sum() + wf.sum())
    raise ValueError(f"anchor must be one of {ANCHORS} or a tensor, got {anchor!r}")


def _outer(gamma: np.ndarray, gram: np.ndarray, b: np.ndarray, radius: float) -> tuple[float, np.ndarray]:
    """Objective of (D), ``<g_Gamma, g_0> + radius ||g_Gamma||``, and its gradient in ``Gamma``."""
    gg = gram @ gamma  # (U,)
    norm = float(np.sqrt(max(gamma @ gg, 1e-300)))  # ||g_Gamma||
    return float(gamma @ b + radius * norm), b + radius * gg / norm


def solve_gamma(signed: Tensor, g0: Tensor, kappa: float) -> tuple[Tensor, float]:
    """Solve the coefficient problem (D) on the simplex: ``min <g_Gamma, g_0> + kappa ||g_0|| ||g_Gamma||``.

    Parameters
    ----------
    signed : Tensor, shape (U, P)
        Signed gradients ``h_u`` (:func:`signed_gradients`).
    g0 : Tensor, shape (P,)
        The anchor ``grad_FL``.
    kappa : float

    Returns
    -------
    gamma : Tensor, shape (U,)
        Optimal coefficients (float64).
    value : float
        Optimal value of (D), equal to that of (P) by strong duality.
    """
    h = signed.to(torch.float64).cpu()
    g0 = g0.to(torch.float64).cpu()
    scale = float(h.norm(dim=1).max().clamp_min(torch.finfo(torch.float64).tiny))  # conditioning only
    hs, g0s = h / scale, g0 / scale
    gram = (hs @ hs.T).numpy()  # (U, U)
    b = (hs @ g0s).numpy()  # (U,)  <h_u, g_0>
    radius = kappa * float(g0s.norm())
    u = len(b)
    starts = [np.full(u, 1.0 / u), np.eye(u)[int(np.argmin(b))]]
    best = None
    for start in starts:
        res = minimize(_outer, start, args=(gram, b, radius), jac=True, method="SLSQP",
                       bounds=[(0.0, 1.0)] * u,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(u)}],
                       options={"ftol": 1e-15, "maxiter": 1000})
        gamma = np.clip(res.x, 0.0, None)
        gamma = gamma / gamma.sum()
        value = _outer(gamma, gram, b, radius)[0]
        if best is None or value < best[1]:
            best = (gamma, value)
    return torch.as_tensor(best[0]), best[1] * scale**2


def closed_form_direction(
    retain_grads: Grads,
    forget_grads: Grads,
    kappa: float,
    *,
    anchor: str | Tensor = "retain",
    retain_sizes: Sequence[float] | None = None,
    forget_sizes: Sequence[float] | None = None,
) -> Direction:
    """FOUL's aggregated unlearning direction (Theorem 1, Eq. 10), with its client coefficients.

    ::

        Gamma* = argmin_{Gamma in simplex} <g_Gamma, g_0> + kappa ||g_0|| ||g_Gamma||,
                 g_Gamma = grad_R - grad_F = sum_{u in R} gamma_u g_u - sum_{u in F} gamma_u g_u
        d      = g_0 + kappa ||g_0|| g_Gamma / ||g_Gamma||

    It solves ``max_d min_u <h_u, d>`` s.t. ``||d - g_0|| <= kappa ||g_0||``
    (see the module notes for the derivation and the sign condition).

    Parameters
    ----------
    retain_grads, forget_grads : Tensor (n, P) or sequence of Tensor (P,)
        Uploaded gradients of the retained and of the forgotten clients.
    kappa : float
        Relative radius (>= 0).
    anchor, retain_sizes, forget_sizes
        ``g_0 = grad_FL``, see :func:`anchor_gradient`.

    Returns
    -------
    Direction
        ``direction`` in the dtype of the inputs, ``gamma`` (R + F,), ``value``.
    """
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    dtype = _dtype_of(retain_grads, forget_grads)
    h = signed_gradients(retain_grads, forget_grads)  # (U, P)
    g0 = anchor_gradient(retain_grads, forget_grads, anchor, retain_sizes, forget_sizes)  # (P,)
    radius = kappa * float(g0.norm())
    if radius == 0.0:  # the ball is the point g_0
        gamma = torch.zeros(len(h), dtype=torch.float64)
        gamma[int(torch.argmin(h @ g0))] = 1.0
        return Direction(g0.to(dtype), gamma, float((h @ g0).min()))
    gamma, _ = solve_gamma(h, g0, kappa)
    g_gamma = gamma @ h  # (P,)  grad_R - grad_F
    norm = float(g_gamma.norm())
    if norm <= 1e-12 * float(h.norm(dim=1).max()):  # 0 in the convex hull of the h_u: fall back to g_0
        d = g0
    else:
        d = g0 + radius * g_gamma / norm  # Theorem 1 (Eq. 10): g_FL + kappa ||g_FL|| (g_R - g_F) / ||g_R - g_F||
    return Direction(d.to(dtype), gamma, float((h @ d).min()))


def _kkt_multipliers(hs: np.ndarray, g0s: np.ndarray, r2: float, d: np.ndarray, t: float,
                     tol: float = 1e-6) -> tuple[np.ndarray, float]:
    """Multipliers certifying that ``(d, t)`` solves the epigraph problem, and the KKT residual.

    Stationarity of ``-t - sum_u lambda_u (<h_u, d> - t) - mu (r^2 - ||d - g_0||^2)``
    asks ``sum_u lambda_u = 1`` and ``sum_u lambda_u h_u = 2 mu (d - g_0)``, with
    ``lambda, mu >= 0`` and zero multipliers on inactive constraints. Solved by
    non-negative least squares over the active constraints; for this convex
    problem a zero residual proves optimality.
    """
    active = np.flatnonzero(hs @ d - t <= tol)  # client constraints that hold with equality
    ball_active = r2 - np.sum((d - g0s) ** 2) <= tol * max(r2, 1.0)
    columns = [np.append(hs[u], 1.0) for u in active]
    if ball_active:
        columns.append(np.append(-2 * (d - g0s), 0.0))
    lam = np.zeros(len(hs))
    if not columns:
        return lam, 1.0
    coef, residual = nnls(np.stack(columns, axis=1), np.append(np.zeros(len(d)), 1.0))
    lam[active] = coef[: len(active)]
    return lam, float(residual)


def solve_direction_numerically(
    retain_grads: Grads,
    forget_grads: Grads,
    kappa: float,
    *,
    anchor: str | Tensor = "retain",
    retain_sizes: Sequence[float] | None = None,
    forget_sizes: Sequence[float] | None = None,
    kkt_tol: float = 1e-6,
) -> Direction:
    """Solve the primal problem (P) with a generic solver, to check :func:`closed_form_direction`.

    Epigraph form over ``(d, t)`` in ``R^{P+1}``, solved with SciPy's SLSQP
    (gradients rescaled by the largest norm for conditioning)::

        max t   s.t.  <h_u, d> >= t  for every client u,   ||d - g_0||^2 <= kappa^2 ||g_0||^2

    The solver knows nothing of Theorem 1. Its answer is then certified by
    the KKT conditions (:func:`_kkt_multipliers`); the multipliers of the
    client constraints are the coefficients ``Gamma`` (they sum to one), an
    independent check of those of the closed form. Meant for small ``P``
    (tests, the book's check).

    Raises
    ------
    RuntimeError
        When SLSQP fails, or stops at a point whose KKT residual exceeds
        ``kkt_tol``. (SLSQP often ends with "Positive directional derivative
        for linesearch" at the optimum, when it cannot improve at working
        precision; the KKT check decides.)
    """
    dtype = _dtype_of(retain_grads, forget_grads)
    h = signed_gradients(retain_grads, forget_grads)  # (U, P)
    g0 = anchor_gradient(retain_grads, forget_grads, anchor, retain_sizes, forget_sizes)  # (P,)
    if kappa * float(g0.norm()) == 0.0:
        return Direction(g0.to(dtype), None, float((h @ g0).min()))
    scale = float(h.norm(dim=1).max())
    hs, g0s = (h / scale).numpy(), (g0 / scale).numpy()
    r2 = (kappa * np.linalg.norm(g0s)) ** 2
    p = len(g0s)

    def objective(z):
        grad = np.zeros_like(z)
        grad[-1] = -1.0
        return -z[-1], grad

    constraints = [
        {"type": "ineq", "fun": lambda z: hs @ z[:p] - z[-1],
         "jac": lambda z: np.hstack([hs, -np.ones((len(hs), 1))])},
        {"type": "ineq", "fun": lambda z: np.array([r2 - np.sum((z[:p] - g0s) ** 2)]),
         "jac": lambda z: np.hstack([-2 * (z[:p] - g0s), [0.0]])[None]},
    ]
    # start half-way to the sphere (at the centre the ball constraint has a zero gradient, which stalls SLSQP)
    toward = hs.mean(axis=0)
    toward = toward / np.linalg.norm(toward) if np.linalg.norm(toward) > 0 else np.eye(p)[0]
    d0 = g0s + 0.5 * np.sqrt(r2) * toward
    res = minimize(objective, np.append(d0, (hs @ d0).min()), jac=True, method="SLSQP", constraints=constraints,
                   options={"ftol": 1e-12, "maxiter": 2000})
    if res.status not in (0, 8):  # 8: "Positive directional derivative for linesearch", judged by the KKT check
        raise RuntimeError(f"SLSQP did not solve the primal problem: {res.message}")
    lam, residual = _kkt_multipliers(hs, g0s, r2, res.x[:p], res.x[-1])
    if residual > kkt_tol:
        raise RuntimeError(f"SLSQP stopped ({res.message}) at a point with KKT residual {residual:.2e} > {kkt_tol}")
    d = torch.as_tensor(res.x[:p] * scale)
    return Direction(d.to(dtype), torch.as_tensor(lam), float((h @ d).min()))


# ---------------------------------------------------------------- clients


def _loss_fn(config: FOULConfig):
    if config.loss == "ce":
        return lambda model, x, y: F.cross_entropy(model(x), y)
    return lambda model, x, y: l2u_loss(model.parts(x), x, y, config.l2u)  # Eq. 3


def client_gradient(model: nn.Module, data, names: Sequence[str], config: FOULConfig, generator: torch.Generator,
                    device: torch.device) -> Tensor:
    """Mean gradient of the client loss w.r.t. the named parameters on ``data``, flattened; shape (P,).

    Computed in ``eval()`` mode over ``config.local_steps`` shuffled
    mini-batches (all of ``data`` when ``None``), weighted by batch size.
    The model's parameters and buffers are not changed.
    """
    named = dict(model.named_parameters())
    params = [named[n] for n in names]
    loss_fn = _loss_fn(config)
    schedule = FedConfig(local_epochs=1, local_steps=config.local_steps, batch_size=config.batch_size)
    totals = [torch.zeros_like(p) for p in params]
    seen = 0
    model.eval()
    for idx in _batches(len(data.y), schedule, generator):
        xb, yb = data.x[idx].to(device), data.y[idx].to(device)
        grads = torch.autograd.grad(loss_fn(model, xb, yb), params, allow_unused=True)
        for total, g in zip(totals, grads):
            if g is not None:
                total.add_(g, alpha=len(idx))
        seen += len(idx)
    return torch.cat([t.reshape(-1) for t in totals]) / max(seen, 1)  # (P,)


def _forget_parts(federation, request) -> tuple[list, list[int]]:
    """Each client's data to forget and the client ids, for clients that hold some."""
    datasets, ids = [], []
    for c, data in enumerate(federation.clients):
        mask = federation.forget_mask(c, request)
        if mask.any():
            datasets.append(data.subset(torch.nonzero(mask).flatten().numpy()))
            ids.append(c)
    return datasets, ids


def forget_domain(federation, domain: int):
    """The client request that forgets every client of ``domain`` (FOUL's setting, Sec. 4).

    Needs ``federation.client_domains`` (e.g. from :func:`fuhelpers.partition.client_domains`).
    """
    from ...federation import Request

    require(federation.client_domains is not None, "forget_domain", "federation.client_domains",
            "build the federation with client_domains=partition.client_domains(domains, parts)")
    ids = np.flatnonzero(np.asarray(federation.client_domains) == domain)
    if len(ids) == 0:
        raise ValueError(f"no client holds domain {domain}; domains: {sorted(set(federation.client_domains.tolist()))}")
    return Request.client(*ids.tolist())


def _mean_cosine(grads: Sequence[Tensor], d: Tensor) -> float:
    """Mean cosine similarity of the clients' gradients with the applied direction (nan for no client)."""
    if not grads:
        return float("nan")
    d = d.detach().double().cpu()
    return float(np.mean([float(F.cosine_similarity(g.detach().double().cpu(), d, dim=0)) for g in grads]))


def _samples_used(n: int, config: FOULConfig) -> int:
    """Samples a client's gradient computation processes."""
    return n if config.local_steps is None else min(n, config.local_steps * config.batch_size)


# ---------------------------------------------------------------- the method


def unlearn(model: nn.Module, federation, request, config: FOULConfig, history=None, *, evaluate=None,
            device=None) -> Unlearned:
    """Unlearn by updating only the non-causal encoder with Theorem 1's on-server aggregation.

    Each round ``r``: the server sends ``theta_V`` to every client; each
    retained client uploads the gradient of its loss on its retained data,
    each client holding data to forget the gradient on that data (only
    ``theta_V``'s entries); the server computes ``d`` with
    :func:`closed_form_direction` and sets ``theta_V <- theta_V - lr d``.

    Parameters
    ----------
    model : L2UModel
        The L2U-trained global model (not edited).
    federation : Federation
    request : Request
        Usually ``Request.client(*ids)`` with every client of one domain
        (:func:`forget_domain`).
    config : FOULConfig
    history : ignored
        Accepted for the common signature; FOUL stores nothing.
    evaluate : callable, optional
        ``evaluate(model) -> dict``, called before round 1 (``log[0]``) and after
        every round; not counted in the cost.
    device : torch.device or str, optional
        Where clients compute; default: the model's device.

    Returns
    -------
    Unlearned
        ``info``: ``retain_clients``, ``forget_clients``, ``noncausal`` (parameter
        names), ``noncausal_params``, ``noncausal_bytes``, per round
        ``cosine`` = ``{"retain": [...], "forget": [...]}`` (mean cosine of the
        clients' gradients with ``d``), ``gamma`` (lists, retained clients
        first), ``value`` (``min_u <h_u, d>``), ``direction_norm``; and
        ``time_to_forget`` when ``evaluate`` returns ``forget_acc``. ``cost``
        counts the unlearning rounds only (L2U training is the learning stage).
    """
    require(hasattr(model, "noncausal"), "FOUL", "an L2U model with a non-causal encoder",
            "train a fuhelpers.unlearn.foul.l2u.L2UModel with fuhelpers.unlearn.foul.l2u.train_l2u first")
    if config.loss == "ce" and getattr(model, "classifier_input", "causal") != "both":
        raise ValueError("loss='ce' with a classifier on z_K only: the cross-entropy has no gradient w.r.t. V; "
                         "use loss='l2u' or an L2UModel with classifier_input='both'")
    device = resolve_device(device, model)
    out = copy.deepcopy(model).to(device)
    was_training = out.training
    out.eval()  # no reparameterisation noise, no running-statistics updates (see client_gradient)
    names = noncausal_names(out)
    named = dict(out.named_parameters())
    params = [named[n] for n in names]
    retain, retain_ids = federation.retain_clients(request)
    forget, forget_ids = _forget_parts(federation, request)
    if not forget:
        raise ValueError(f"the request {request} matches no training sample")
    v_bytes = tensor_bytes(p.detach() for p in params)
    num_params = sum(p.numel() for p in params)
    participants = len(set(retain_ids) | set(forget_ids))
    probe = (forget + retain)[0]
    xb, yb = probe.x[:config.batch_size].to(device), probe.y[:config.batch_size].to(device)
    flops_per_sample = loss_flops_per_sample(out, xb, yb, _loss_fn(config), key=("foul", config.loss))

    cost, log = Cost(), []
    info = {"retain_clients": retain_ids, "forget_clients": forget_ids, "noncausal": names,
            "noncausal_params": num_params, "noncausal_bytes": v_bytes,
            "cosine": {"retain": [], "forget": []}, "gamma": [], "value": [], "direction_norm": []}
    if evaluate is not None:
        log.append({"round": 0, **evaluate(out)})
    for t in progress_bar(range(1, config.num_rounds + 1), desc="FOUL"):
        with stopwatch(cost):
            uploads = {}
            for role, datasets, ids in (("retain", retain, retain_ids), ("forget", forget, forget_ids)):
                grads = []
                for data, cid in zip(datasets, ids):
                    gen = torch.Generator().manual_seed(derive_seed(config.seed, t, cid, role == "forget"))
                    grads.append(client_gradient(out, data, names, config, gen, device))
                    cost.add_compute(_samples_used(len(data), config), flops_per_sample)
                uploads[role] = grads
            step = closed_form_direction(uploads["retain"], uploads["forget"], config.kappa, anchor=config.anchor,
                                         retain_sizes=[len(d) for d in retain],
                                         forget_sizes=[len(d) for d in forget])
            _apply_(params, step.direction, config.lr)
            u = len(step.gamma)
            cost.flops += 2.0 * u * u * num_params + 6.0 * u * num_params  # Gram matrix, <h_u, g_0>, g_Gamma, update
            # theta_V to every client; one gradient of theta_V's size back per upload
            cost.add_round(clients=participants, down=v_bytes, uploads=len(retain) + len(forget))
        for role in ("retain", "forget"):
            info["cosine"][role].append(_mean_cosine(uploads[role], step.direction))
        info["gamma"].append(step.gamma.tolist())
        info["value"].append(step.value)
        info["direction_norm"].append(float(step.direction.norm()))
        if evaluate is not None:
            log.append({"round": t, **evaluate(out)})
    out.train(was_training)
    if log and "forget_acc" in log[0]:
        info["time_to_forget"] = time_to_forget([entry["forget_acc"] for entry in log])
    return Unlearned(out, cost, info, log)


def _apply_(params: Sequence[nn.Parameter], direction: Tensor, lr: float) -> None:
    """``theta_V <- theta_V - lr d``, with ``d`` flat in parameter order."""
    offset = 0
    with torch.no_grad():
        for p in params:
            chunk = direction[offset:offset + p.numel()].view_as(p).to(p.device, p.dtype)
            p.sub_(lr * chunk)
            offset += p.numel()
