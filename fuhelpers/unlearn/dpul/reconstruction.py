"""DPUL stage 2, reconstruction: strided slices of the parameter vector, one small beta-VAE per slice."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ...fl import derive_seed


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
    batched: bool = False,
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
    batched : bool
        Train the VAEs of equal slice length together, as one vectorised model
        (``torch.func.vmap``): the same initialisations, latent noise, clipping
        and SGD with momentum as one after the other, so the result agrees up
        to floating-point rounding, in far fewer kernel launches (the point on
        a GPU). Default: one after the other, as the authors' code.

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
    train_group = _train_group_batched if batched else _train_group_sequential
    groups: dict[int, list[int]] = {}  # slice length -> slice ids (at most two lengths)
    for j in range(num_slices):
        groups.setdefault(len(range(j, x_all.shape[1], num_slices)), []).append(j)
    vaes: dict[int, SliceVAE] = {}
    for length, ids in groups.items():
        xs = torch.stack([x_all[:, j::num_slices] for j in ids]).to(device)  # (G, R, L)
        ys = torch.stack([y_all[:, j::num_slices] for j in ids]).to(device)
        models = [_seeded_vae(length, derive_seed(seed, j, 0)).to(device) for j in ids]
        gens = [torch.Generator(device=device).manual_seed(derive_seed(seed, j, 1)) for j in ids]
        trained = train_group(models, xs, ys, gens, epochs=epochs, lr=lr, momentum=momentum, beta=beta,
                              batch_size=batch_size, max_grad_norm=max_grad_norm)
        vaes.update(zip(ids, trained))
    return [vaes[j].eval() for j in range(num_slices)]


def _train_group_sequential(models, xs, ys, gens, *, epochs, lr, momentum, beta, batch_size, max_grad_norm):
    """SGD on each VAE in turn (the authors' loop)."""
    for vae, x, y, gen in zip(models, xs, ys, gens):
        opt = torch.optim.SGD(vae.parameters(), lr=lr, momentum=momentum)
        vae.train()
        for _ in range(epochs):
            for start in range(0, x.shape[0], batch_size):
                recon, mu, logvar = vae(x[start:start + batch_size], generator=gen)
                loss = vae_loss(recon, y[start:start + batch_size], mu, logvar, beta)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(vae.parameters(), max_grad_norm)
                opt.step()
    return models


def _train_group_batched(models, xs, ys, gens, *, epochs, lr, momentum, beta, batch_size, max_grad_norm):
    """The same SGD for VAEs of one slice length at once: parameters stacked, loss and gradient vmapped."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    params, buffers = stack_module_state(models)                     # each (G, ...)
    base = copy.deepcopy(models[0]).to("meta")

    def one_loss(p, b, x, y, noise):
        stats = functional_call(base.encoder, _sub(p, "encoder."), (x,))              # (B, 2 * latent)
        mu, logvar = stats[:, : base.latent], stats[:, base.latent:]
        recon = functional_call(base.decoder, _sub(p, "decoder."), (mu + noise * torch.exp(0.5 * logvar),))
        return vae_loss(recon, y, mu, logvar, beta)

    step_grad = vmap(grad(one_loss))
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    first = True
    for _ in range(epochs):
        for start in range(0, xs.shape[1], batch_size):
            x, y = xs[:, start:start + batch_size], ys[:, start:start + batch_size]          # (G, B, L)
            noise = torch.stack([torch.randn((x.shape[1], base.latent), generator=g, device=x.device, dtype=x.dtype)
                                 for g in gens])                                              # (G, B, latent)
            grads = step_grad(params, buffers, x, y, noise)
            norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))      # (G,)
            scale = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)                           # clip_grad_norm_
            with torch.no_grad():
                for k, g in grads.items():
                    g = g * scale.view(-1, *[1] * (g.ndim - 1))
                    velocity[k] = g if first else momentum * velocity[k] + g                  # SGD momentum
                    params[k] = params[k] - lr * velocity[k]
            first = False
    for i, vae in enumerate(models):
        with torch.no_grad():
            for name, p in vae.named_parameters():
                p.copy_(params[name][i])
    return models


def _sub(params: dict, prefix: str) -> dict:
    """Entries of a stacked or plain parameter dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


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
