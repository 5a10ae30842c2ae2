"""FedEraser (Liu et al., IWQoS 2021): replay the stored training without the forgotten clients.

During training the server keeps every round's global model ``M_t`` and every
client's upload. To forget clients it replays the stored rounds from the
initial model ``M_0``. In a replayed round ``t`` the retained clients that took
part run a few local epochs from the current unlearned model ``M~_{t-1}``
("calibration training"), giving calibration updates ``U^_c``. The server keeps
each client's *stored* update length and gives it the *calibrated* direction::

    U_c  = upload(t, c) - M_{t-1}                       (stored update)
    U~_c = ||U_c|| * U^_c / ||U^_c||                     (the paper's calibration)
    M~_t = M~_{t-1} + sum_c (n_c / n) U~_c               (FedAvg over retained participants)

This is the paper's rule (the stored update says how far to go, the calibration
update which way) and what the authors' released code does in
``unlearning_step_once`` (``step_length`` from the old update, ``step_direction``
from the new one); it is ``keep="norm"``, the default. ``keep="direction"``
swaps the roles (stored direction, calibrated length): an ablation of ours that
neither the paper nor the code uses.

Choices made here, each as in the authors' released code unless said otherwise:

* Norms are taken per state tensor (each weight, bias and floating buffer on
  its own), not over the whole model.
* Only every ``interval``-th stored round is replayed (rounds 1, 1 + interval,
  ...); the updates of the skipped rounds are dropped (the paper's Delta t).
* The first replayed round starts from ``M_0`` itself, so the stored updates are
  exact there: they are aggregated as they are, without calibration, and that
  round costs no client work.
* Calibration runs ``calibration_epochs`` local epochs; the paper uses half of
  training's (ratio r = 0.5, rounded up). Each client keeps the data order it
  had in the same round of training (seeds derived from ``(seed, t, client)``).

Where the released code differs from the paper (``unlearning_step_once``), not
reproduced here: it averages the clients' models uniformly *before* rescaling
(the paper rescales each client's update, then takes the FedAvg average), and
it measures the stored update against the global model *after* the round
instead of before it.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..cost import Cost, stopwatch, tensor_bytes
from ..device import resolve_device
from ..fl import FedConfig, fedavg, payload_names, train_round
from ..history import History
from ..progress import progress as progress_bar
from .base import Unlearned, require

NEEDS = {"clients", "history"}
KEEP = ("norm", "direction")

State = dict[str, torch.Tensor]


@dataclass
class FedEraserConfig:
    """FedEraser settings.

    Attributes
    ----------
    fed : FedConfig
        Local training settings of calibration (``lr``, ``batch_size``,
        ``momentum``, ``weight_decay``, ``seed``); use the original training's.
        ``num_rounds``, ``participation`` and ``local_epochs`` are not used:
        rounds and participants come from the history. If ``fed.local_steps``
        is set it overrides ``calibration_epochs`` (scale it yourself).
    calibration_epochs : int
        Local epochs of calibration training (paper: half of training's).
    interval : int
        Replay every ``interval``-th stored round (the paper's Delta t).
    keep : {"norm", "direction"}
        What is kept from the stored update. ``"norm"`` (default): its length,
        with the calibration update's direction, as in the paper and the
        authors' released code. ``"direction"``: its direction, with the
        calibration update's length, an unpublished ablation.
    """

    fed: FedConfig = field(default_factory=FedConfig)
    calibration_epochs: int = 1
    interval: int = 1
    keep: str = "norm"

    def __post_init__(self):
        if self.calibration_epochs < 1:
            raise ValueError(f"calibration_epochs must be >= 1, got {self.calibration_epochs}")
        if self.interval < 1:
            raise ValueError(f"interval must be >= 1, got {self.interval}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {self.keep!r}")


@dataclass
class Calibration:
    """What :func:`calibrate` returns.

    Attributes
    ----------
    state : dict
        The unlearned global state after the last replayed round.
    cost : Cost
        Calibration rounds, bytes and FLOPs (``storage_bytes`` left at 0).
    rounds : list of int
        The replayed stored rounds.
    trajectory : dict of int to dict
        Unlearned global state after each replayed round (empty unless asked for).
    log : list of dict
        ``{"round": t, **evaluate(model)}`` per replayed round, when ``evaluate`` is given.
    """

    state: State
    cost: Cost
    rounds: list[int]
    trajectory: dict[int, State] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)


def replayed_rounds(num_rounds: int, interval: int) -> list[int]:
    """The stored rounds FedEraser replays: ``1, 1 + interval, ...`` up to ``num_rounds``."""
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    return list(range(1, num_rounds + 1, interval))


def rescale_update(stored: torch.Tensor, calibrated: torch.Tensor, keep: str = "norm") -> torch.Tensor:
    """One tensor's new update from its stored and calibrated updates.

    Parameters
    ----------
    stored : torch.Tensor
        The update of the original training, ``U = upload - M_{t-1}``.
    calibrated : torch.Tensor
        The calibration update ``U^`` of the same tensor.
    keep : {"norm", "direction"}
        ``"norm"`` (default; the paper's rule and the released code's):
        ``||stored|| * calibrated / ||calibrated||``. ``"direction"`` (an
        unpublished ablation): ``||calibrated|| * stored / ||stored||``.

    Returns
    -------
    torch.Tensor
        The rescaled update, in the dtype of the tensor giving the direction;
        zero when that tensor is zero.
    """
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    direction, length = (stored, calibrated) if keep == "direction" else (calibrated, stored)
    direction_norm = direction.double().norm()
    if direction_norm == 0:
        return torch.zeros_like(direction)
    return (length.double().norm() / direction_norm * direction.double()).to(direction.dtype)


def _rescaled_upload(start: State, calibrated: State, stored: State, previous: State, keep: str,
                     device: torch.device) -> State:
    """A client's calibrated upload: from ``start``, its stored update rescaled by its calibration update."""
    upload = {}
    for key, value in calibrated.items():
        if not value.is_floating_point():
            upload[key] = value
            continue
        stored_update = stored[key].to(device) - previous[key].to(device)
        upload[key] = start[key] + rescale_update(stored_update, value.to(device) - start[key], keep)
    return upload


def _stored_uploads(history: History, t: int, clients: Sequence[int], device: torch.device) -> list[State]:
    return [{k: v.to(device) for k, v in history.upload(t, c).items()} for c in clients]


def calibrate(
    model: nn.Module,
    history: History,
    clients: Sequence,
    client_ids: Sequence[int],
    config: FedEraserConfig,
    *,
    device: torch.device | str | None = None,
    evaluate: Callable[[nn.Module], dict] | None = None,
    keep_trajectory: bool = False,
    progress: bool | None = None,
) -> Calibration:
    """Replay the stored rounds with the clients ``client_ids`` only (FedEraser's core).

    Parameters
    ----------
    model : nn.Module
        Gives the architecture; used as scratch space (its state is overwritten).
    history : History
        The original training's record, with the uploads of every client in ``client_ids``.
    clients : sequence of ArrayDataset
        The retained clients' data, aligned with ``client_ids``.
    client_ids : sequence of int
        Global ids of ``clients``. With every client of the training and a
        calibration identical to training, the replay reproduces the stored
        trajectory.
    config : FedEraserConfig
    device : torch.device or str, optional
        Default: the model's current device.
    evaluate : callable, optional
        ``evaluate(model) -> dict`` after each replayed round (not counted in the cost).
    keep_trajectory : bool
        Keep the unlearned global state of every replayed round (memory: one model per round).
    progress : bool, optional
        Show a progress bar.

    Returns
    -------
    Calibration
    """
    if len(clients) != len(client_ids):
        raise ValueError(f"{len(clients)} clients but {len(client_ids)} client_ids")
    if history.num_rounds < 1:
        raise ValueError("the history holds no round: train with a History before unlearning")
    device = resolve_device(device, model)
    model.to(device)
    data_of = dict(zip(client_ids, clients))
    cal_config = dataclasses.replace(config.fed, local_epochs=config.calibration_epochs)
    names = payload_names(model)
    state = {k: v.to(device) for k, v in history.global_model(0).items()}
    rounds = replayed_rounds(history.num_rounds, config.interval)
    out = Calibration(state=state, cost=Cost(), rounds=rounds)
    for t in progress_bar(rounds, desc="FedEraser", enabled=progress):
        chosen = [c for c in history.participants[t - 1] if c in data_of]
        if not chosen:  # only forgotten clients took part: the round leaves no trace
            continue
        weights = [history.weights[t - 1][c] for c in chosen]
        with stopwatch(out.cost):
            if t == 1:  # starts from M_0 itself: the stored uploads are exact
                uploads = _stored_uploads(history, t, chosen, device)
            else:
                previous = history.global_model(t - 1)
                # calibration training: every retained client of round t, from the calibrated global model
                trained = train_round(model, state, [data_of[c] for c in chosen], chosen, cal_config, t, device)
                uploads = [_rescaled_upload(state, done.state, history.upload(t, c), previous, config.keep, device)
                           for c, done in zip(chosen, trained)]
                for done in trained:
                    out.cost.add_compute(done.seen, done.flops_per_sample)
                payload = tensor_bytes(state[n] for n in names)
                out.cost.add_round(clients=len(chosen), down=payload)
            state = fedavg(uploads, weights)
        if keep_trajectory:
            out.trajectory[t] = {k: v.clone() for k, v in state.items()}
        if evaluate is not None:
            model.load_state_dict(state)
            out.log.append({"round": t, **evaluate(model)})
    out.state = state
    return out


def unlearn(model, federation, request, config: FedEraserConfig, history: History | None = None, *,
            evaluate=None, device=None) -> Unlearned:
    """Forget whole clients by calibrating the stored training trajectory.

    Parameters
    ----------
    model : nn.Module
        The trained model; only its architecture is used, and it is not edited.
    federation : Federation
    request : Request
        A client request (``Request.client(...)``); FedEraser forgets whole clients only.
    config : FedEraserConfig
    history : History
        The original training's record with every retained client's uploads.
    evaluate : callable, optional
        Per replayed round evaluation.
    device : torch.device or str, optional

    Returns
    -------
    Unlearned
        ``info``: ``clients`` (retained ids), ``rounds`` (replayed stored rounds).
    """
    if request.kind != "client":
        raise ValueError(f"FedEraser forgets whole clients; got a {request.kind!r} request")
    clients, ids = federation.retain_clients(request)
    require(history is not None and history.num_rounds > 0, "FedEraser", "the stored training history",
            "train with History(record_clients='all') and pass it as history=")
    missing = [c for c in ids if not history.records(c)]
    require(not missing, "FedEraser", f"the uploads of every retained client (missing: {missing})",
            "train with History(record_clients='all')")
    scratch = copy.deepcopy(model)
    result = calibrate(scratch, history, clients, ids, config, device=device, evaluate=evaluate)
    scratch.load_state_dict(result.state)
    result.cost.storage_bytes = history.storage_bytes
    return Unlearned(scratch, result.cost, {"clients": ids, "rounds": result.rounds}, result.log)
