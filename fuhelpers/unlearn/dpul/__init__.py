"""DPUL (Zhou et al., INFOCOM 2026, arXiv 2512.13381): server-side unlearning of one client from a stored history.

The server kept every round's global model ``M_t`` and the target client's
upload ``U_t``. Three stages, none of which needs a client:

1. **Memory rollback.** Remove the target's share of each round's aggregate,
   giving the *others' model* ``M^u_t = (N M_t - n_u U_t) / (N - n_u)`` (``N``:
   samples of the round's participants, ``n_u``: the target's). A parameter is
   *high-weight* in round ``t`` when the target's update dominates it:
   ``|dU_t| / lambda > |dM_t|`` with ``dU_t = U_t - M_{t-1}``. From the first
   round in which it is flagged, it stays frozen at its value in the previous
   (rolled-back) round. This gives the rolled-back trajectory ``M'_t``.
2. **Reconstruction.** Cut the flat parameter vector into ``I`` strided slices
   (``v[j::I]``) and train one beta-VAE per slice, with a latent of size 1, to map
   the original ``M_t`` slice to the rolled-back ``M'_t`` slice over the history.
   Passing the final model through the VAEs gives the reconstructed model.
3. **Projected boost (recovery).** Repeatedly train one epoch on a small
   server-side set; the change is only used as a direction, and the step gets
   the length of a historical global update ``||M_t - M_{t-1}||``, starting
   from the historical round whose accuracy matches and moving one round on per step.

Choices and differences with the authors' code (github.com/00taotao/DPUL),
which runs on the flattened LoRA classifier head of a ViT (``params`` selects
such a subset here):

* ``compare="others"`` flags with the others' update ``M^u_t - M_{t-1}`` (the
  paper's wording); ``compare="global"`` with the global update
  ``M_t - M_{t-1}`` (the code, lambda = 6). An older code version used
  ``lambda = N / n_u``.
* ``N`` and ``n_u`` are the sizes of the round's participants (FedAvg's
  weights); the code uses all clients' sizes (full participation).
* The code freezes a flagged parameter from the round *before* the one in
  which it is flagged (an off-by-one); here freezing starts in that round.
* The VAE is a small 1-D convolutional one that works for any slice length
  (the code's encoder needs slices of at least about 50 entries); the loss is
  the code's ``MSE - beta * sum(1 + log s^2 - mu^2 - s^2)``, which is
  ``2 beta`` times the usual KL divergence. The VAEs are trained on rounds
  ``1 .. T-1`` and applied to ``M_T``, as in the code, and decode the posterior
  mean at the end (the code samples, so its output is random).
* Recovery: the code matches the starting round by *test* accuracy and draws
  the auxiliary set from the training data (it may overlap the forgotten data);
  here the starting round is matched by accuracy on the server set, which
  must be held out from every client and is used without the classes the
  request removes altogether (``Federation.server_data``), so that recovery
  cannot teach a forgotten class again.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ...cost import Cost, stopwatch, tensor_bytes
from ...history import History
from ..base import Unlearned, require
from .reconstruction import SliceVAE, reconstruct, stitch, strided_slices, train_slice_vaes, vae_loss, vae_training_flops
from .recovery import Recovery, matching_round, projected_recovery
from .rollback import (COMPARES, _check_flag_args, _rollback, _write_flat_, first_flagged_rounds, flat_state,
                       high_weight_mask, others_model, rollback, state_names)

NEEDS = {"history", "server_data"}
STAGES = ("rollback", "vae", "recovery")


# ---------------------------------------------------------------- the method


@dataclass
class DPULConfig:
    """DPUL settings (defaults: the authors' code where it fixes them).

    Attributes
    ----------
    lam : float
        lambda of the high-weight test (code: 6).
    compare : {"others", "global"}
        Compare the target's update with the others' (paper) or the global one (code).
    num_slices : int
        ``I``, strided slices and VAEs (code: 10).
    beta : float
        KL weight of the VAEs (code: 0.5).
    vae_epochs : int
        Passes over the history (code: 2000; the paper's figures use fewer).
    vae_lr : float
        SGD learning rate of the VAEs (code: 0.1, momentum 0.9).
    vae_batch_size : int
        History pairs per VAE step (code: 1).
    vae_batched : bool
        Train the slice VAEs together, vectorised (see :func:`train_slice_vaes`);
        the same result up to rounding, much faster on a GPU. Default: one after
        the other, as the code.
    recovery_steps : int
        Projected-boost steps.
    recovery_lr, recovery_momentum : float
        SGD settings of the epoch on the server set.
    recovery_batch_size : int
    recovery_start : int, optional
        First historical round of recovery; default: matched by server-set accuracy.
    params : list of str, optional
        Parameter names DPUL acts on (e.g. the classifier head, like the code's
        LoRA head); all others stay bit-identical. Default: all parameters.
    stages : tuple of str
        Subset of ``("rollback", "vae", "recovery")`` for ablations. Without
        ``"rollback"`` nothing is frozen (the VAE targets, or the output, are the
        others' models ``M^u_t``); without ``"vae"`` the output of the first
        phase is ``M'_T`` itself; without ``"recovery"`` no server data is needed.
    seed : int
    """

    lam: float = 6.0
    compare: str = "others"
    num_slices: int = 10
    beta: float = 0.5
    vae_epochs: int = 200
    vae_lr: float = 0.1
    vae_batch_size: int = 1
    vae_batched: bool = False
    recovery_steps: int = 5
    recovery_lr: float = 0.01
    recovery_momentum: float = 0.9
    recovery_batch_size: int = 32
    recovery_start: int | None = None
    params: list[str] | None = None
    stages: tuple[str, ...] = STAGES
    seed: int = 0

    def __post_init__(self):
        _check_flag_args(self.lam, self.compare)
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages must be distinct names from {STAGES}, got {self.stages}")
        if self.num_slices < 1 or self.vae_epochs < 1 or self.vae_batch_size < 1 or self.recovery_steps < 0:
            raise ValueError("num_slices, vae_epochs and vae_batch_size must be >= 1 and recovery_steps >= 0")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")


def _parameter_names(model: nn.Module, params: Sequence[str] | None) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    if params is None:
        return names
    unknown = [p for p in params if p not in names]
    if unknown or not params:
        raise ValueError(f"params must be a non-empty subset of the model's parameters {names}, got {list(params)}")
    return [n for n in names if n in params]  # model order, so flat vectors match


def _first_phase(model: nn.Module, history: History, target: int, config: DPULConfig, names: list[str],
                 device: torch.device) -> tuple[Tensor, Tensor, float]:
    """Rollback and/or reconstruction: the new flat vector, first flagged rounds, VAE FLOPs."""
    targets, first = _rollback(history, target, config.lam, config.compare, names, freeze="rollback" in config.stages)
    if "vae" not in config.stages:
        return targets[-1], first, 0.0
    T = history.num_rounds
    if T < 2:
        raise ValueError("the 'vae' stage trains on rounds 1..T-1 and needs at least 2 stored rounds")
    originals = [flat_state(history.global_model(t), names) for t in range(1, T)]
    vaes = train_slice_vaes(originals, targets[1:T], config.num_slices, config.beta, config.vae_epochs,
                            config.vae_lr, config.seed, batch_size=config.vae_batch_size, device=device,
                            batched=config.vae_batched)
    final = flat_state(dict(model.named_parameters()), names).cpu()
    flops = vae_training_flops(vaes, len(originals), config.vae_epochs, config.beta)
    return reconstruct(final, vaes), first, flops


def unlearn(model, federation, request, config: DPULConfig, history: History | None = None, *,
            evaluate=None, device=None) -> Unlearned:
    """Forget one client on the server only: rollback, VAE reconstruction, projected recovery.

    Parameters
    ----------
    model : nn.Module
        The trained model (not edited); normally the last model of ``history``.
    federation : Federation
        Gives the server set for recovery, without the classes the request forgets
        (:meth:`~fuhelpers.federation.Federation.server_data`).
    request : Request
        A client request naming exactly one client.
    config : DPULConfig
    history : History
        The training record, with the target's uploads.
    evaluate : callable, optional
        ``evaluate(model) -> dict`` after the first phase (round 0) and each recovery step.
    device : torch.device or str, optional
        Where the VAEs and recovery run; default: the model's device.

    Returns
    -------
    Unlearned
        ``info``: ``target``, ``stages``, ``params``, ``flagged`` (count),
        ``flagged_fraction``, ``first_flagged`` (round per entry, 0 never),
        ``recovery_rounds``.
    """
    if request.kind != "client" or len(request.clients) != 1:
        raise ValueError(f"DPUL forgets exactly one client; got {request}")
    target = request.clients[0]
    require(history is not None and history.num_rounds > 0, "DPUL", "the stored training history",
            "train with History(record_clients=[target]) (or 'all') and pass it as history=")
    require(history.records(target), "DPUL", f"the uploads of client {target}",
            f"train with History(record_clients=[{target}]) or History(record_clients='all')")
    if "recovery" in config.stages:
        require(federation.server is not None, "DPUL", "a server-side set held out from every client",
                "build the Federation with server=<held-out data>, or drop 'recovery' from stages")
    out = copy.deepcopy(model)
    if device is not None:
        out.to(device)
    device = next(out.parameters()).device
    names = _parameter_names(out, config.params)
    server = federation.server_data(request) if "recovery" in config.stages else None
    cost, log = Cost(storage_bytes=storage_bytes(history, target, server)), []
    with stopwatch(cost):
        vec, first, cost.flops = _first_phase(out, history, target, config, names, device)
        _write_flat_(out, names, vec.to(device))
    if evaluate is not None:
        log.append({"round": 0, **evaluate(out)})
    recovery_rounds = []
    if "recovery" in config.stages:
        rec = projected_recovery(
            out, server, history, config.recovery_steps, lr=config.recovery_lr,
            batch_size=config.recovery_batch_size, momentum=config.recovery_momentum, names=names,
            start_round=config.recovery_start, seed=config.seed, evaluate=evaluate)
        out, recovery_rounds, cost = rec.model, rec.rounds, cost + rec.cost
        log.extend(rec.log)
    flagged = int((first > 0).sum())
    info = {"target": target, "stages": tuple(config.stages), "params": names, "flagged": flagged,
            "flagged_fraction": flagged / first.numel(), "first_flagged": first, "recovery_rounds": recovery_rounds}
    return Unlearned(out, cost, info, log)


def storage_bytes(history: History, target: int, server=None) -> int:
    """What DPUL keeps from training: every global model, the target's uploads, and the server set.

    Not the other clients' uploads: the others' model of a round is derived from the global model and
    the target's upload (:func:`others_model`).
    """
    rounds = sum(target in w for w in history.weights)
    first = next(t for t in range(1, history.num_rounds + 1) if target in history.weights[t - 1])
    globals_ = tensor_bytes(history.global_model(0).values()) * (history.num_rounds + 1)
    uploads = tensor_bytes(history.upload(first, target).values()) * rounds
    return globals_ + uploads + (tensor_bytes([server.x, server.y]) if server is not None else 0)


__all__ = [
    "COMPARES", "DPULConfig", "NEEDS", "Recovery", "STAGES", "SliceVAE", "first_flagged_rounds", "flat_state",
    "high_weight_mask", "matching_round", "others_model", "projected_recovery", "reconstruct", "rollback",
    "state_names", "stitch", "storage_bytes", "strided_slices", "train_slice_vaes", "unlearn", "vae_loss",
    "vae_training_flops",
]
