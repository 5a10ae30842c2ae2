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
