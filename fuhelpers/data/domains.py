"""Domain datasets (DomainBed-style) derived from an MNIST-like dataset: Rotated and Colored MNIST."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import ArrayDataset, _check_probability


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate images counter-clockwise about their centre (bilinear, zeros outside).

    Parameters
    ----------
    x : torch.Tensor
        Square images ``(N, C, H, H)``.
    angle : float
        Degrees; 90 gives ``torch.rot90(x, 1, dims=(-2, -1))`` up to interpolation error.

    Returns
    -------
    torch.Tensor
        Rotated images, same shape and dtype.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"expected square images (N, C, H, H), got shape {tuple(x.shape)}")
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    # affine_grid maps each output location to where it samples the input.
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _split_into_domains(n: int, num_domains: int, seed: int) -> np.ndarray:
    """Domain id per sample: a seeded permutation cut into ``num_domains`` near-equal parts."""
    domains = np.empty(n, dtype=np.int64)
    for domain, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), num_domains)):
        domains[part] = domain
    return domains


def rotated_mnist(
    ds: ArrayDataset, angles: Sequence[float] = (0, 15, 30, 45, 60, 75), seed: int = 0
) -> ArrayDataset:
    """Rotated MNIST: each domain is a disjoint share of the samples rotated by one angle.

    Parameters
    ----------
    ds : ArrayDataset
        MNIST-like images ``(N, C, H, H)``.
    angles : sequence of float, default (0, 15, 30, 45, 60, 75)
        One domain per angle, in degrees (counter-clockwise).
    seed : int, default 0
        Seed of the assignment of samples to domains.

    Returns
    -------
    ArrayDataset
        Sample ``i`` is ``ds.x[i]`` rotated by ``angles[domains[i]]``; labels unchanged; domain names
        like ``"15°"``. Domain sizes differ by at most one.
    """
    if len(angles) == 0:
        raise ValueError("angles must not be empty")
    if len(angles) > len(ds):
        raise ValueError(f"{len(angles)} angles need at least as many samples, got {len(ds)}")
    domains = _split_into_domains(len(ds), len(angles), seed)
    x = ds.x.clone()
    for domain, angle in enumerate(angles):
        members = torch.as_tensor(np.flatnonzero(domains == domain))
        x[members] = rotate(ds.x[members], angle)
    return ArrayDataset(x=x, y=ds.y.clone(), classes=list(ds.classes),
                        domains=torch.as_tensor(domains), domain_names=[f"{a:g}°" for a in angles])


def colored_mnist(
    ds: ArrayDataset,
    env_probs: Sequence[float] = (0.1, 0.2, 0.9),
    label_noise: float = 0.25,
    seed: int = 0,
) -> ArrayDataset:
    """Colored MNIST (Arjovsky et al., 2019; DomainBed): colour is a label shortcut that flips across domains.

    The label is binary, ``0`` for digits below 5 and ``1`` otherwise, then flipped with probability
    ``label_noise``. The colour equals that label, flipped with probability ``e`` of the sample's
    environment. Colour 0 is red and 1 is green: the image goes into that channel, the other is zero.

    Parameters
    ----------
    ds : ArrayDataset
        Single-channel digit images ``(N, 1, H, W)`` with labels 0-9.
    env_probs : sequence of float, default (0.1, 0.2, 0.9)
        Colour-flip probability of each environment (domain).
    label_noise : float, default 0.25
        Probability of flipping the binary label.
    seed : int, default 0
        Seed of the environment assignment and of both flips.

    Returns
    -------
    ArrayDataset
        Images ``(N, 2, H, W)`` (red, green), classes ``["<5", ">=5"]``, one domain per environment
        (near-equal disjoint shares), samples in their original order. Unlike DomainBed, the images keep
        their resolution (no 2x downsampling).
    """
    if ds.x.dim() != 4 or ds.x.shape[1] != 1:
        raise ValueError(f"expected single-channel images (N, 1, H, W), got shape {tuple(ds.x.shape)}")
    if len(ds) and (int(ds.y.min()) < 0 or int(ds.y.max()) > 9):
        raise ValueError("colored_mnist expects digit labels 0-9")
    if len(env_probs) == 0:
        raise ValueError("env_probs must not be empty")
    for probability in env_probs:
        _check_probability(probability, "each entry of env_probs")
    _check_probability(label_noise, "label_noise")
    rng = np.random.default_rng(seed)
    n = len(ds)
    domains = _split_into_domains(n, len(env_probs), int(rng.integers(2**31)))
    labels = (ds.y.numpy() >= 5).astype(np.int64) ^ (rng.random(n) < label_noise)
    colours = labels ^ (rng.random(n) < np.asarray(env_probs, dtype=float)[domains])
    x = torch.zeros((n, 2, *ds.x.shape[2:]), dtype=ds.x.dtype)
    x[torch.arange(n), torch.as_tensor(colours)] = ds.x[:, 0]
    return ArrayDataset(x=x, y=torch.as_tensor(labels), classes=["<5", ">=5"],
                        domains=torch.as_tensor(domains), domain_names=[f"flip={e:g}" for e in env_probs])
