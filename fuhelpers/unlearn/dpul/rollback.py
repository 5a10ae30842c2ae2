"""DPUL stage 1, memory rollback: the others' model per round, high-weight flags, the frozen trajectory.

Also the flat-vector helpers the other stages share (a state's chosen entries as one 1-D tensor).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ...history import History

State = dict[str, Tensor]
COMPARES = ("others", "global")


# ---------------------------------------------------------------- flat vectors


def state_names(state: State, names: Sequence[str] | None = None) -> list[str]:
    """``names`` checked against ``state``; default: every floating-point entry, in state order."""
    if names is None:
        return [k for k, v in state.items() if v.is_floating_point()]
    unknown = [n for n in names if n not in state]
    if unknown:
        raise ValueError(f"unknown entries {unknown}; the state has {list(state)}")
    return list(names)


def flat_state(state: State, names: Sequence[str]) -> Tensor:
    """The entries ``names`` of ``state`` concatenated into one 1-D tensor."""
    return torch.cat([state[n].detach().reshape(-1) for n in names])


def _write_flat_(model: nn.Module, names: Sequence[str], vec: Tensor) -> None:
    """Copy ``vec`` into the parameters ``names`` of ``model`` (inverse of :func:`flat_state`)."""
    params = dict(model.named_parameters())
    offset = 0
    with torch.no_grad():
        for n in names:
            p = params[n]
            p.copy_(vec[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    if offset != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, the parameters {names} have {offset}")


# ---------------------------------------------------------------- stage 1: rollback


def _check_round(history: History, t: int) -> None:
    if not 1 <= t <= history.num_rounds:
        raise ValueError(f"round must be in 1..{history.num_rounds}, got {t}")


def others_model(history: History, t: int, target: int) -> State:
    """The aggregate of round ``t`` without the target: ``M^u_t = (N M_t - n_u U_t) / (N - n_u)``.

    ``N`` and ``n_u`` are the samples of the round's participants and of the
    target (``history.weights[t - 1]``), so this is FedAvg over the other
    participants. If the target did not take part, ``M^u_t = M_t``. Integer
    buffers are taken from ``M_t``.
    """
    _check_round(history, t)
    global_t = history.global_model(t)
    weights = history.weights[t - 1]
    if target not in weights:
        return {k: v.clone() for k, v in global_t.items()}
    upload = history.upload(t, target)
    if upload is None:
        raise ValueError(f"round {t} lists client {target} as a participant but holds no upload of it")
    n_all, n_target = sum(weights.values()), weights[target]
    if n_all == n_target:
        raise ValueError(f"client {target} was the only participant of round {t}: no others' model exists")
    out = {}
    for key, value in global_t.items():
        if value.is_floating_point():
            others = (n_all * value.double() - n_target * upload[key].double()) / (n_all - n_target)
            out[key] = others.to(value.dtype)
        else:
            out[key] = value.clone()
    return out


def _round_vectors(history: History, t: int, target: int, names: Sequence[str] | None):
    """Flat (M_{t-1}, M_t, M^u_t, U_t or None) of round ``t`` and the names used."""
    previous = history.global_model(t - 1)
    names = state_names(previous, names)
    upload = history.upload(t, target) if target in history.weights[t - 1] else None
    return (flat_state(previous, names), flat_state(history.global_model(t), names),
            flat_state(others_model(history, t, target), names),
            None if upload is None else flat_state(upload, names)), names


def _flags(vectors, lam: float, compare: str) -> Tensor:
    previous, global_t, others, upload = vectors
    if upload is None:
        return torch.zeros_like(previous, dtype=torch.bool)
    reference = others if compare == "others" else global_t
    return (upload - previous).abs() / lam > (reference - previous).abs()


def _check_flag_args(lam: float, compare: str) -> None:
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if compare not in COMPARES:
        raise ValueError(f"compare must be one of {COMPARES}, got {compare!r}")


def high_weight_mask(history: History, t: int, target: int, lam: float = 6.0, compare: str = "others",
                     names: Sequence[str] | None = None) -> Tensor:
    """Flat bool mask of the parameters the target dominates in round ``t``.

    Parameter ``i`` is flagged when ``|dU_t^i| / lam > |dM_t^i|``, with
    ``dU_t = U_t - M_{t-1}`` the target's update and ``dM_t`` the others' update
    ``M^u_t - M_{t-1}`` (``compare="others"``, paper) or the global update
    ``M_t - M_{t-1}`` (``compare="global"``, authors' code).

    Parameters
    ----------
    history : History
        With the target's uploads recorded.
    t : int
        Round, 1-based.
    target : int
        The forgotten client.
    lam : float
        lambda > 0; larger flags fewer parameters.
    compare : {"others", "global"}
    names : sequence of str, optional
        State entries making up the flat vector; default all floating-point ones.

    Returns
    -------
    Tensor of bool, shape (n,)
        All False when the target did not take part in round ``t``.
    """
    _check_flag_args(lam, compare)
    _check_round(history, t)
    vectors, _ = _round_vectors(history, t, target, names)
    return _flags(vectors, lam, compare)


def _rollback(history: History, target: int, lam: float, compare: str, names: Sequence[str] | None,
              freeze: bool = True) -> tuple[list[Tensor], Tensor]:
    """Rolled-back flat trajectory (rounds 0..T) and each parameter's first flagged round (0: never)."""
    _check_flag_args(lam, compare)
    if history.num_rounds < 1:
        raise ValueError("the history holds no round")
    names = state_names(history.global_model(0), names)
    rolled = [flat_state(history.global_model(0), names)]
    first = torch.zeros_like(rolled[0], dtype=torch.long)
    frozen_value = torch.zeros_like(rolled[0])
    for t in range(1, history.num_rounds + 1):
        vectors, _ = _round_vectors(history, t, target, names)
        if freeze:
            newly = _flags(vectors, lam, compare) & (first == 0)
            frozen_value[newly] = rolled[-1][newly]  # the value before the round it is first flagged in
            first[newly] = t
        rolled.append(torch.where(first > 0, frozen_value, vectors[2]))
    return rolled, first


def rollback(history: History, target: int, lam: float = 6.0, compare: str = "others",
             names: Sequence[str] | None = None) -> list[Tensor]:
    """DPUL's memory rollback: the others' trajectory with high-weight parameters frozen.

    ``M'_t = M^u_t`` except for the parameters flagged by :func:`high_weight_mask`
    in some round ``f <= t``: those keep ``M'_{f-1}`` (their value before the
    round in which they were first flagged) for every later round.

    Returns
    -------
    list of Tensor
        ``T + 1`` flat vectors; index ``t`` is round ``t`` (index 0: ``M_0``).
    """
    return _rollback(history, target, lam, compare, names)[0]


def first_flagged_rounds(history: History, target: int, lam: float = 6.0, compare: str = "others",
                         names: Sequence[str] | None = None) -> Tensor:
    """For each parameter of the flat vector, the first round it is flagged in (0: never)."""
    return _rollback(history, target, lam, compare, names)[1]
