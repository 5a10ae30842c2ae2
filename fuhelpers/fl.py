"""FedAvg (McMahan et al., 2017): the training every chapter starts from.

Each round the server broadcasts the global model, the participating clients
run local SGD on their own data, and the server averages the uploads weighted
by the clients' data sizes::

    w_{t+1} = sum_k (n_k / n) w_{t+1}^k        (McMahan et al., Algorithm 1)

The engine runs on CPU or CUDA, can record a :class:`~fuhelpers.history.History`
for history-based unlearning, and counts a :class:`~fuhelpers.cost.Cost`.
Same seed on CPU -> same weights: client sampling and batch order come from
generators derived from ``(seed, round, client)``, never from global state.
Local training runs in fp32 unless ``FedConfig.precision`` asks for the
bfloat16 fast path (:mod:`fuhelpers.precision`).

Where the clients train is a *client runtime*: by default this process, one
client after another (:class:`InProcess`); inside ``with client_runtime(r):``
every round of every method (FedAvg, Retrain, FT, NoT's recovery, FedEraser's
calibration, TIS's targeted retraining) is sent to ``r`` instead, e.g. to
Flower's clients (:mod:`fuhelpers.flower`). The server's code is the same.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from .cost import Cost, stopwatch, tensor_bytes, train_flops_per_sample
from .device import resolve_device
from .history import History
from .precision import Precision, check_precision
from .progress import progress as progress_bar

State = dict[str, torch.Tensor]


@dataclass
class FedConfig:
    """Hyper-parameters of FedAvg; defaults follow the TIS authors' code (SGD, lr 0.01, momentum 0.9, batch 32).

    ``precision`` chooses the arithmetic of local training (:mod:`fuhelpers.precision`):

    * ``"fp32"`` (default): the reference. Every chapter, every committed result and every exactness
      test uses it; the loop is the plain ``forward -> cross-entropy -> backward -> SGD step``.
    * ``"bf16"``: the fast path. Weights, optimizer state and averaging stay fp32; the forward pass
      runs under ``torch.autocast`` in bfloat16 with the model and images in channels-last format
      (on a 2-core AVX-512/bf16 CPU, a FedAvg round over full FMNIST: 1.4-1.8x the images per second of
      fp32 with the ``cpu`` scale's CNN, same accuracy; 2.35x with the clients in two one-thread processes,
      :class:`fuhelpers.processes.ClientProcesses`; ``make bench``). Results differ from fp32 in the last
      bits, so seeded runs are not comparable with fp32 ones digit for digit.
    * ``"fp16"``: CUDA only, with loss scaling.

    There is deliberately no ``torch.compile`` option: on CPU it was slower than eager for these small
    models, and at one model width it returned zero convolution gradients, which would silently
    freeze training. ``tests/test_precision.py`` fails if such an option is added without a test
    comparing compiled and eager gradients.
    """

    num_rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    participation: float = 1.0  # fraction of non-empty clients sampled per round
    local_steps: int | None = None  # if set, exactly this many SGD steps per round instead of epochs
    seed: int = 0
    precision: str = "fp32"  # "fp32" (reference), "bf16" (fast), "fp16" (CUDA); see the docstring

    def __post_init__(self) -> None:
        check_precision(self.precision)


@dataclass
class FedResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : nn.Module
        The final global model (the same object that was passed in, trained).
    cost : Cost
        Seconds (training only, not evaluation), rounds, bytes, FLOPs.
    history : History or None
        Recorded states, when a history was passed.
    log : list of dict
        Per round ``t`` (0 = before training): ``{"round": t, **evaluate(model)}``.
    initial_state : dict
        The global state before round 1 (for reset-to-init methods).
    """

    model: nn.Module
    cost: Cost
    history: History | None = None
    log: list[dict] = field(default_factory=list)
    initial_state: State | None = None


def derive_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys, stable across runs and platforms."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def state_copy(model: nn.Module) -> State:
    """Detached copy of the model's ``state_dict``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fedavg(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> State:
    """Weighted average of client states: ``sum_k (n_k / n) w^k``.

    Floating-point entries are averaged; integer buffers (BatchNorm's
    ``num_batches_tracked``) are taken from the first state.

    Parameters
    ----------
    states : sequence of dict
        Client ``state_dict``s with the same keys.
    weights : sequence of float
        Non-negative weights (usually sample counts), not all zero.
    """
    if len(states) == 0 or len(states) != len(weights):
        raise ValueError(f"need one weight per state, got {len(states)} states and {len(weights)} weights")
    w = torch.as_tensor(weights, dtype=torch.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    w = w / w.sum()
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = sum(wk.item() * s[key].double() for wk, s in zip(w, states))
            out[key] = acc.to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def payload_names(model: nn.Module) -> list[str]:
    """State entries that travel each round: trainable parameters and floating buffers."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    buffers = [n for n, b in model.named_buffers() if b.is_floating_point()]
    return trainable + buffers


def _batches(n: int, config: FedConfig, generator: torch.Generator):
    """Index batches for one round of local training: epochs of shuffled batches, or a fixed step count."""
    steps_left = config.local_steps
    epochs = config.local_epochs if steps_left is None else 10**9
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            if steps_left is not None:
                if steps_left == 0:
                    return
                steps_left -= 1
            yield perm[start : start + config.batch_size]


def local_train(
    model: nn.Module,
    data,
    config: FedConfig,
    generator: torch.Generator,
    device: torch.device,
    mask: Mapping[str, torch.Tensor] | None = None,
) -> int:
    """Run one client's local SGD in place; return the number of samples processed.

    Parameters
    ----------
    model : nn.Module
        Starts as the broadcast global model; trained in place.
    data : ArrayDataset
        The client's data (tensors ``x`` and ``y``).
    mask : dict of bool tensors, optional
        Only entries where the mask is True may change (TRIM-style targeted
        retraining); the others are restored after each step, which also
        undoes momentum and weight decay on them.

    The client's data is moved to ``device`` once, before the loop, and the
    loop never reads a value back to the host, so on CUDA the steps queue
    without synchronising (except fp16's GradScaler, which checks for
    infinities each step). ``config.precision`` selects the arithmetic
    (:class:`~fuhelpers.precision.Precision`); with ``"fp32"`` the loop is
    exactly ``forward -> cross-entropy -> backward -> SGD step``. The model
    leaves with the memory format (strides) it came with.
    """
    prec = Precision(getattr(config, "precision", "fp32"), device)
    x, y = data.x.to(device), data.y.to(device)  # resident for the whole round (a no-op on CPU)
    with prec.memory_format(model):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = prec.sgd(params, config.lr, config.momentum, config.weight_decay)
        frozen = {}
        if mask is not None:
            named = dict(model.named_parameters())
            frozen = {n: (named[n], named[n].detach().clone(), m.to(device)) for n, m in mask.items()}
        model.train()
        seen = 0
        for idx in _batches(len(y), config, generator):
            idx_d = idx.to(x.device, non_blocking=True)
            xb, yb = prec.inputs(x[idx_d]), y[idx_d]
            opt.zero_grad(set_to_none=True)
            with prec.autocast():
                loss = nn.functional.cross_entropy(model(xb), yb)
            prec.step(loss, opt)
            for p, start, m in frozen.values():
                p.data.copy_(torch.where(m, p.data, start))
            seen += len(idx)
    return seen


def flops_per_sample(model: nn.Module, data, batch_size: int, device: torch.device) -> float:
    """Training FLOPs per sample of ``model``, measured on the first batch of ``data`` (cached)."""
    xb, yb = data.x[:batch_size].to(device), data.y[:batch_size].to(device)
    return train_flops_per_sample(model, xb, yb)


@dataclass
class Trained:
    """One client's answer to a round: its trained state, the samples it processed, its FLOPs per sample."""

    state: State
    seen: int
    flops_per_sample: float


class ClientRuntime(Protocol):
    """Where clients train: ``train_round`` runs one round's local training of ``clients``, all from ``state``.

    A runtime that can also train with a custom local trainer has ``takes_local_trainer(trainer) -> bool`` and
    accepts the trainer as ``train_round``'s last argument (see :func:`train_round`).
    """

    def train_round(self, model: nn.Module, state: State, clients: Sequence, client_ids: Sequence[int],
                    config: FedConfig, round_: int, device: torch.device,
                    mask: Mapping[str, torch.Tensor] | None = None) -> list[Trained]: ...


@dataclass
class InProcess:
    """The default runtime: every client trains here, in turn, with ``local_trainer`` (default :func:`local_train`)."""

    local_trainer: Callable | None = None

    def train_round(self, model, state, clients, client_ids, config, round_, device, mask=None) -> list[Trained]:
        trainer = local_train if self.local_trainer is None else self.local_trainer
        out = []
        for data, cid in zip(clients, client_ids):
            model.load_state_dict(state)
            gen = torch.Generator().manual_seed(derive_seed(config.seed, round_, cid))
            seen = trainer(model, data, config, gen, device, mask)
            out.append(Trained(state_copy(model), seen, flops_per_sample(model, data, config.batch_size, device)))
        return out


_RUNTIME: ContextVar[ClientRuntime | None] = ContextVar("fuhelpers_client_runtime", default=None)


@contextmanager
def client_runtime(runtime: ClientRuntime):
    """Send every client's local training inside the block to ``runtime`` (e.g. Flower's clients)."""
    token = _RUNTIME.set(runtime)
    try:
        yield runtime
    finally:
        _RUNTIME.reset(token)


def active_runtime() -> ClientRuntime | None:
    """The runtime set by :func:`client_runtime`, or None when clients train in this process."""
    return _RUNTIME.get()


def train_round(model: nn.Module, state: State, clients: Sequence, client_ids: Sequence[int], config: FedConfig,
                round_: int, device: torch.device, mask: Mapping[str, torch.Tensor] | None = None,
                local_trainer: Callable | None = None) -> list[Trained]:
    """One round of local training of ``clients`` (global ids ``client_ids``), each starting from ``state``.

    Client ``c`` of round ``t`` draws its batches from ``derive_seed(config.seed, t, c)``, wherever it runs.
    ``model`` is scratch space (its state is overwritten). A custom ``local_trainer`` goes to a runtime that
    has ``takes_local_trainer(local_trainer)`` (:class:`fuhelpers.processes.ClientProcesses`): where that
    says True, the runtime trains with it, else its rounds train in this process; any other runtime refuses it.
    """
    runtime = active_runtime()
    if runtime is None:
        return InProcess(local_trainer).train_round(model, state, clients, client_ids, config, round_, device, mask)
    if local_trainer is None:
        return runtime.train_round(model, state, clients, client_ids, config, round_, device, mask)
    takes = getattr(runtime, "takes_local_trainer", None)
    if takes is None:
        raise ValueError(f"a custom local trainer ({getattr(local_trainer, '__name__', local_trainer)}) runs in "
                         f"this process only, not on {type(runtime).__name__}")
    if takes(local_trainer):
        return runtime.train_round(model, state, clients, client_ids, config, round_, device, mask, local_trainer)
    return InProcess(local_trainer).train_round(model, state, clients, client_ids, config, round_, device, mask)


def _sample_clients(sizes: Sequence[int], config: FedConfig, t: int) -> list[int]:
    nonempty = [c for c, n in enumerate(sizes) if n > 0]
    if not nonempty:
        raise ValueError("every client is empty: nothing to train on")
    m = max(1, int(round(config.participation * len(nonempty))))
    if m >= len(nonempty):
        return nonempty
    rng = np.random.default_rng(derive_seed(config.seed, t, 7))
    return sorted(rng.choice(nonempty, size=m, replace=False).tolist())


def train(
    model: nn.Module,
    clients: Sequence,
    config: FedConfig,
    *,
    device: torch.device | str | None = None,
    client_ids: Sequence[int] | None = None,
    history: History | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
    evaluate: Callable[[nn.Module], dict] | None = None,
    eval_rounds: Collection[int] | None = None,
    progress: bool | None = None,
    desc: str = "FedAvg",
    local_trainer: Callable | None = None,
) -> FedResult:
    """Train ``model`` with FedAvg on ``clients``.

    Parameters
    ----------
    model : nn.Module
        Initial global model; trained in place and returned in the result.
    clients : sequence of ArrayDataset
        One dataset per client; empty clients never take part.
    config : FedConfig
        Rounds, local epochs or steps, batch size, optimiser, participation, seed.
    device : torch.device or str, optional
        Where to train; default: the model's current device.
    client_ids : sequence of int, optional
        Global ids of ``clients`` (used for seeding and history); default ``range(len(clients))``.
        Retraining without client 3 passes the other ids so each keeps its own data order.
    history : History, optional
        Filled with the global model of every round and the uploads it records.
    mask : dict of bool tensors, optional
        Restrict training to masked entries (see :func:`local_train`).
    evaluate : callable, optional
        ``evaluate(model) -> dict`` called before round 1 and after every round
        (not counted in the cost); its values show on the progress bar.
    eval_rounds : collection of int, optional
        Call ``evaluate`` only at these rounds (0: before round 1); default every round. Evaluating
        the 10k test images costs about an eighth of a full-data round on 2 CPU cores.
    progress : bool, optional
        Show a progress bar (default: on unless ``FUHELPERS_PROGRESS=0``).
    local_trainer : callable, optional
        Replaces :func:`local_train` (same arguments, same return value: the
        samples processed), e.g. FOUL's L2U training (see
        :func:`fuhelpers.unlearn.foul.l2u.train_l2u`). FLOPs are still counted with
        :func:`flops_per_sample` (a cross-entropy step of ``model``); a
        caller whose step costs differently corrects ``cost.flops`` itself.

    Returns
    -------
    FedResult
    """
    device = resolve_device(device, model)
    model.to(device)
    ids = list(range(len(clients))) if client_ids is None else list(client_ids)
    if len(ids) != len(clients):
        raise ValueError(f"{len(clients)} clients but {len(ids)} client_ids")
    sizes = [len(c) for c in clients]
    names = payload_names(model)
    initial = state_copy(model)
    cost, log = Cost(), []
    if history is not None:
        history.add_global(initial)
    def due(t: int) -> bool:
        return evaluate is not None and (eval_rounds is None or t in eval_rounds)

    if due(0):
        log.append({"round": 0, **evaluate(model)})

    bar = progress_bar(range(1, config.num_rounds + 1), desc=desc, enabled=progress)
    for t in bar:
        with stopwatch(cost):
            chosen = _sample_clients(sizes, config, t)
            global_state = state_copy(model)
            payload = tensor_bytes(global_state[n] for n in names)
            if history is not None:
                history.add_round([ids[c] for c in chosen], {ids[c]: sizes[c] for c in chosen})
            trained = train_round(model, global_state, [clients[c] for c in chosen], [ids[c] for c in chosen],
                                  config, t, device, mask, local_trainer)
            for c, done in zip(chosen, trained):
                cost.add_compute(done.seen, done.flops_per_sample)
                if history is not None:
                    history.add_upload(ids[c], done.state)
            model.load_state_dict(fedavg([done.state for done in trained], [sizes[c] for c in chosen]))
            cost.add_round(clients=len(chosen), down=payload)  # the model out, the trained model back
            if history is not None:
                history.add_global(state_copy(model))
        if due(t):
            log.append({"round": t, **evaluate(model)})
            bar.set_postfix({k: round(v, 3) for k, v in log[-1].items() if isinstance(v, float)})
    if history is not None:
        cost.storage_bytes = history.storage_bytes
    return FedResult(model=model, cost=cost, history=history, log=log, initial_state=initial)
