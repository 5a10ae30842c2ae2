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
  here the starting round is matched by accuracy on ``federation.server``,
  which must be held out from every client.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..cost import Cost, stopwatch, train_flops_per_sample
from ..fl import FedConfig, derive_seed, local_train, state_copy
from ..history import History
from .base import Unlearned, require

NEEDS = {"history", "server_data"}
COMPARES = ("others", "global")
STAGES = ("rollback", "vae", "recovery")

State = dict[str, Tensor]


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


# ---------------------------------------------------------------- stage 2: reconstruction


def strided_slices(vec: Tensor, num_slices: int) -> list[Tensor]:
    """Cut a 1-D vector into ``num_slices`` strided slices ``vec[j::num_slices]`` (lengths differ by at most 1)."""
    if vec.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {tuple(vec.shape)}")
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    return [vec[j::num_slices] for j in range(num_slices)]


def stitch(slices: Sequence[Tensor], num_slices: int, n: int) -> Tensor:
    """Inverse of :func:`strided_slices`: ``slices[j]`` fills positions ``j, j + I, ...`` of a length-``n`` vector."""
    if len(slices) != num_slices:
        raise ValueError(f"expected {num_slices} slices, got {len(slices)}")
    out = torch.empty(n, dtype=slices[0].dtype, device=slices[0].device)
    for j, piece in enumerate(slices):
        expected = len(range(j, n, num_slices))
        if piece.numel() != expected:
            raise ValueError(f"slice {j} has {piece.numel()} entries; a length-{n} vector needs {expected}")
        out[j::num_slices] = piece
    return out


class SliceVAE(nn.Module):
    """A small 1-D convolutional beta-VAE for one slice of the parameter vector.

    Encoder: two 1-D convolutions, average pooling to a fixed length and a
    linear layer giving the mean and log-variance of the latent. Decoder: a
    linear layer from the latent to ``channels`` feature maps of the slice's
    length, then a 1-D convolution to one output channel. Works for any slice
    length, including 1.

    Parameters
    ----------
    length : int
        Entries in the slice.
    latent : int
        Latent size (1 in DPUL).
    channels : int
        Feature maps of the convolutions.
    pooled : int
        Length the encoder pools to before its linear layer.
    """

    def __init__(self, length: int, latent: int = 1, channels: int = 8, pooled: int = 8):
        super().__init__()
        if min(length, latent, channels, pooled) < 1:
            raise ValueError(f"length, latent, channels, pooled must be >= 1, got {(length, latent, channels, pooled)}")
        self.length, self.latent = length, latent
        self.encoder = nn.Sequential(
            nn.Unflatten(1, (1, length)),                                  # (B, 1, L)
            nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),               # (B, C, L)
            nn.Conv1d(channels, channels, 5, stride=2, padding=2), nn.ReLU(),  # (B, C, ceil(L/2))
            nn.AdaptiveAvgPool1d(pooled), nn.Flatten(),                    # (B, C * pooled)
            nn.Linear(channels * pooled, 2 * latent),                      # (B, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, channels * length), nn.Unflatten(1, (channels, length)), nn.ReLU(),  # (B, C, L)
            nn.Conv1d(channels, 1, 5, padding=2), nn.Flatten(),            # (B, L)
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of the latent, each ``(B, latent)``, for slices ``x`` of shape ``(B, L)``."""
        stats = self.encoder(x)
        return stats[:, : self.latent], stats[:, self.latent:]

    def decode(self, z: Tensor) -> Tensor:
        """Slices ``(B, L)`` from latents ``(B, latent)``."""
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction from a sampled latent, with the latent's mean and log-variance."""
        mu, logvar = self.encode(x)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return self.decode(mu + noise * torch.exp(0.5 * logvar)), mu, logvar

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction: decode the latent's mean."""
        return self.decode(self.encode(x)[0])


def vae_loss(recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float) -> Tensor:
    """The authors' loss: ``MSE(recon, target) - beta * sum(1 + logvar - mu^2 - exp(logvar))``.

    The KL term is summed over the latent and averaged over the batch; it is
    twice the usual KL divergence to N(0, 1), so ``beta = 0.5`` weighs the KL by 1.
    """
    kl_term = -torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
    return nn.functional.mse_loss(recon, target) + beta * kl_term


def _seeded_vae(length: int, seed: int, **kwargs) -> SliceVAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SliceVAE(length, **kwargs)


def train_slice_vaes(
    originals: Sequence[Tensor],
    rolled: Sequence[Tensor],
    num_slices: int,
    beta: float = 0.5,
    epochs: int = 200,
    lr: float = 0.1,
    seed: int = 0,
    *,
    momentum: float = 0.9,
    batch_size: int = 1,
    max_grad_norm: float = 1.0,
    device: torch.device | str | None = None,
) -> list[SliceVAE]:
    """Train one :class:`SliceVAE` per strided slice to map original slices to rolled-back ones.

    Parameters
    ----------
    originals, rolled : sequence of Tensor
        Pairs of flat vectors of the same length (``M_t`` and ``M'_t`` over rounds).
    num_slices : int
        ``I``: number of strided slices, hence of VAEs.
    beta : float
        Weight of the KL term (see :func:`vae_loss`).
    epochs : int
        Passes over the pairs.
    lr, momentum : float
        SGD settings (the code: 0.1 and 0.9).
    seed : int
        Seeds initialisation and latent sampling (per slice).
    batch_size : int
        Pairs per SGD step; 1 (the code) visits them in order, one at a time.
    max_grad_norm : float
        Gradient-norm clipping, as in the code.
    device : torch.device or str, optional
        Where to train; default: the vectors' device.

    Returns
    -------
    list of SliceVAE
        In slice order, in evaluation mode.
    """
    if len(originals) == 0 or len(originals) != len(rolled):
        raise ValueError(f"need matching non-empty pairs, got {len(originals)} originals and {len(rolled)} targets")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    x_all, y_all = torch.stack(list(originals)), torch.stack(list(rolled))  # (R, n)
    if x_all.shape != y_all.shape:
        raise ValueError(f"originals {tuple(x_all.shape)} and targets {tuple(y_all.shape)} differ in shape")
    if not 1 <= num_slices <= x_all.shape[1]:
        raise ValueError(f"num_slices must be in 1..{x_all.shape[1]}, got {num_slices}")
    device = torch.device(device) if device is not None else x_all.device
    vaes = []
    for j in range(num_slices):
        x, y = x_all[:, j::num_slices].to(device), y_all[:, j::num_slices].to(device)  # (R, L_j)
        vae = _seeded_vae(x.shape[1], derive_seed(seed, j, 0)).to(device)
        gen = torch.Generator(device=device).manual_seed(derive_seed(seed, j, 1))
        opt = torch.optim.SGD(vae.parameters(), lr=lr, momentum=momentum)
        vae.train()
        for _ in range(epochs):
            for start in range(0, len(x), batch_size):
                recon, mu, logvar = vae(x[start:start + batch_size], generator=gen)
                loss = vae_loss(recon, y[start:start + batch_size], mu, logvar, beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(vae.parameters(), max_grad_norm)
                opt.step()
        vaes.append(vae.eval())
    return vaes


def vae_training_flops(vaes: Sequence[SliceVAE], num_pairs: int, epochs: int, beta: float = 0.5) -> float:
    """FLOPs of :func:`train_slice_vaes`: one forward + backward per pair, slice and epoch (measured on one pair)."""
    total = 0.0
    for vae in vaes:
        probe = copy.deepcopy(vae)
        x = torch.zeros(1, vae.length, device=next(vae.parameters()).device)
        counter = FlopCounterMode(display=False)
        with counter:
            recon, mu, logvar = probe(x)
            vae_loss(recon, x, mu, logvar, beta).backward()
        total += counter.get_total_flops()
    return total * num_pairs * epochs


def reconstruct(final_vec: Tensor, vaes: Sequence[SliceVAE]) -> Tensor:
    """Pass each strided slice of ``final_vec`` through its VAE (posterior mean) and stitch the outputs."""
    device = next(vaes[0].parameters()).device
    slices = strided_slices(final_vec, len(vaes))
    outputs = [vae.reconstruct(s.to(device)[None])[0].to(final_vec.device, final_vec.dtype)
               for vae, s in zip(vaes, slices)]
    return stitch(outputs, len(vaes), final_vec.numel())


# ---------------------------------------------------------------- stage 3: recovery


@torch.no_grad()
def _accuracy(model: nn.Module, data, batch_size: int = 512) -> float:
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        logits = model(data.x[start:start + batch_size].to(device))
        correct += int((logits.argmax(1) == data.y[start:start + batch_size].to(device)).sum())
    return correct / len(data)


def matching_round(model: nn.Module, data, history: History) -> int:
    """The first stored round whose global model is at least as accurate on ``data`` as ``model`` (else the last)."""
    target_accuracy = _accuracy(model, data)
    probe = copy.deepcopy(model)
    for t in range(1, history.num_rounds + 1):
        probe.load_state_dict(history.global_model(t))
        if _accuracy(probe, data) >= target_accuracy:
            return t
    return history.num_rounds


@dataclass
class Recovery:
    """What :func:`projected_recovery` returns.

    Attributes
    ----------
    model : nn.Module
        The recovered model (a new object).
    rounds : list of int
        Historical round whose update length each step took.
    cost : Cost
        Seconds (evaluation excluded) and FLOPs of the server's training.
    log : list of dict
        ``{"round": k, "history_round": t, **evaluate(model)}`` per step, when ``evaluate`` is given.
    """

    model: nn.Module
    rounds: list[int]
    cost: Cost = field(default_factory=Cost)
    log: list[dict] = field(default_factory=list)


def projected_recovery(
    model: nn.Module,
    server_data,
    history: History,
    steps: int,
    *,
    lr: float = 0.01,
    batch_size: int = 32,
    momentum: float = 0.9,
    names: Sequence[str] | None = None,
    start_round: int | None = None,
    seed: int = 0,
    evaluate: Callable[[nn.Module], dict] | None = None,
) -> Recovery:
    """DPUL's projected boost: server-side steps along SGD directions with historical lengths.

    Step ``k`` (from 0) trains a copy of the current model for one epoch on
    ``server_data`` (SGD) to get a direction ``d``, then moves the current model
    by ``d / ||d|| * ||M_t - M_{t-1}||`` with ``t = min(start + k, T)``.

    Parameters
    ----------
    model : nn.Module
        Starting model (not edited).
    server_data : ArrayDataset
        The server's auxiliary set, held out from every client.
    history : History
        Gives the historical update lengths ``||M_t - M_{t-1}||``.
    steps : int
        Number of steps.
    lr, batch_size, momentum : float, int, float
        SGD settings of the epoch that gives each direction.
    names : sequence of str, optional
        Parameters that move (others stay bit-identical, buffers too); default all.
        Norms are taken over these parameters only.
    start_round : int, optional
        First historical round; default :func:`matching_round` on ``server_data``.
    seed : int
        Seeds the batch order of each step.
    evaluate : callable, optional
        ``evaluate(model) -> dict`` after each step.

    Returns
    -------
    Recovery
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if len(server_data) == 0:
        raise ValueError("the server set is empty")
    out = copy.deepcopy(model)
    all_names = [n for n, _ in out.named_parameters()]
    names = all_names if names is None else state_names(dict(out.named_parameters()), names)
    mask = None
    if set(names) != set(all_names):
        mask = {n: torch.full_like(p, n in names, dtype=torch.bool) for n, p in out.named_parameters()}
    device = next(out.parameters()).device
    config = FedConfig(local_epochs=1, lr=lr, batch_size=batch_size, momentum=momentum, seed=seed)
    result = Recovery(model=out, rounds=[])
    with stopwatch(result.cost):
        start = matching_round(out, server_data, history) if start_round is None else start_round
    _check_round(history, start)
    for k in range(steps):
        t = min(start + k, history.num_rounds)
        with stopwatch(result.cost):
            _projected_step_(out, server_data, history, t, names, config, derive_seed(seed, k), mask, result.cost)
        result.rounds.append(t)
        if evaluate is not None:
            result.log.append({"round": k + 1, "history_round": t, **evaluate(out)})
    return result


def _projected_step_(model: nn.Module, data, history: History, t: int, names: list[str], config: FedConfig,
                     seed: int, mask, cost: Cost) -> None:
    """One projected-boost step in place: an SGD epoch's direction with the length of round ``t``'s update."""
    device = next(model.parameters()).device
    before = state_copy(model)
    seen = local_train(model, data, config, torch.Generator().manual_seed(seed), device, mask)
    xb, yb = data.x[: config.batch_size].to(device), data.y[: config.batch_size].to(device)
    cost.flops += seen * train_flops_per_sample(model, xb, yb)
    direction = flat_state(state_copy(model), names) - flat_state(before, names)
    length = (flat_state(history.global_model(t), names) - flat_state(history.global_model(t - 1), names)).norm()
    norm = direction.norm()
    step = direction * (length.to(device) / norm) if norm > 0 else torch.zeros_like(direction)
    if mask is not None:  # only the named parameters move: buffers are restored too
        model.load_state_dict(before)
    _write_flat_(model, names, flat_state(before, names) + step)


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
                            config.vae_lr, config.seed, batch_size=config.vae_batch_size, device=device)
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
        Gives the server set (``federation.server``) for recovery.
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
    cost, log = Cost(storage_bytes=history.storage_bytes), []
    with stopwatch(cost):
        vec, first, cost.flops = _first_phase(out, history, target, config, names, device)
        _write_flat_(out, names, vec.to(device))
    if evaluate is not None:
        log.append({"round": 0, **evaluate(out)})
    recovery_rounds = []
    if "recovery" in config.stages:
        rec = projected_recovery(
            out, federation.server, history, config.recovery_steps, lr=config.recovery_lr,
            batch_size=config.recovery_batch_size, momentum=config.recovery_momentum, names=names,
            start_round=config.recovery_start, seed=config.seed, evaluate=evaluate)
        out, recovery_rounds, cost = rec.model, rec.rounds, cost + rec.cost
        log.extend(rec.log)
    flagged = int((first > 0).sum())
    info = {"target": target, "stages": tuple(config.stages), "params": names, "flagged": flagged,
            "flagged_fraction": flagged / first.numel(), "first_flagged": first, "recovery_rounds": recovery_rounds}
    return Unlearned(out, cost, info, log)
