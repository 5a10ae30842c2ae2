"""Diagonals of the Hessian (or of its Gauss-Newton approximation) of the mean loss over a dataset.

For a model with parameters theta and a dataset D of N samples, the mean
cross-entropy loss is ``L(theta; D) = (1/N) sum_n l(f(x_n; theta), y_n)``.
:func:`hessian_diagonal` returns ``diag(d^2 L / d theta^2)``, one tensor per
trainable parameter, shaped like the parameter. Four ways to get it:

``"exact"``
    Autograd double backward, one Hessian-vector product per parameter entry
    (batched with ``is_grads_batched``). Exact, slow, for tiny models only:
    the reference the others are tested against.
``"diag_hessian"``
    BackPACK's ``DiagHessian``: the exact diagonal, propagated layer by layer
    (Dangel et al., 2020). Not available for residual networks.
``"ggn_exact"``
    BackPACK's ``DiagGGNExact``: the diagonal of the generalised Gauss-Newton
    matrix ``G = sum_n J_n^T (d^2 l / d f^2) J_n / N``, which drops the terms
    with second derivatives of the network. ``G`` is positive semi-definite,
    and equals the Hessian when the network is linear in its parameters.
``"ggn_mc"``
    BackPACK's ``DiagGGNMC``: an unbiased Monte-Carlo estimate of the GGN
    diagonal from ``mc_samples`` labels drawn from the model's predictive
    distribution; cheaper, and noisier.

Every method evaluates the model in ``eval()`` mode: BackPACK's second-order
extensions do not support BatchNorm in training mode, whose batch statistics
couple the samples and make the loss no longer a mean of per-sample losses.
The input model is never touched: the work happens on a deep copy.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .data import ArrayDataset
from .device import resolve_device

METHODS = ("exact", "diag_hessian", "ggn_exact", "ggn_mc")
EXACT_MAX_PARAMETERS = 20_000

_BACKPACK_SAVEFIELD = {"diag_hessian": "diag_h", "ggn_exact": "diag_ggn_exact", "ggn_mc": "diag_ggn_mc"}


def hessian_diagonal(
    model: nn.Module,
    data: ArrayDataset,
    method: str = "ggn_exact",
    *,
    batch_size: int = 128,
    mc_samples: int = 1,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Diagonal of the Hessian (or GGN) of the mean cross-entropy loss over ``data``.

    Parameters
    ----------
    model : nn.Module
        The classifier; left unchanged (mode, hooks, parameters, gradients).
    data : ArrayDataset
        Samples ``x`` and labels ``y``; the loss is their mean.
    method : {"exact", "diag_hessian", "ggn_exact", "ggn_mc"}
        How to compute it (see the module docstring).
    batch_size : int
        Samples per pass. The result does not depend on it (up to rounding):
        each batch's mean-loss diagonal is weighted by ``len(batch) / N``.
    mc_samples : int
        Sampled labels per input for ``"ggn_mc"``; ignored otherwise.
    seed : int
        Seed of the label sampling of ``"ggn_mc"``; the global RNG is left untouched.
    device : torch.device or str, optional
        Where to compute; default: the model's device.

    Returns
    -------
    dict of str to Tensor
        Trainable parameter name -> diagonal, shaped like the parameter, on ``device``.

    Raises
    ------
    ValueError
        Unknown method, empty data, bad sizes, ``"exact"`` on a model above
        ``EXACT_MAX_PARAMETERS`` parameters, or a BackPACK method that does not
        support one of the model's modules (e.g. ``"diag_hessian"`` on a residual net).
    """
    _check_arguments(data, method, batch_size, mc_samples)
    device = resolve_device(device, model)
    work = copy.deepcopy(model).to(device).eval()
    if method == "exact":
        return _exact_diagonal(work, data, batch_size, device)
    return _backpack_diagonal(work, data, method, batch_size, mc_samples, seed, device)


def _check_arguments(data: ArrayDataset, method: str, batch_size: int, mc_samples: int) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown curvature method {method!r}; choose one of {METHODS}")
    if len(data) == 0:
        raise ValueError("data is empty: the mean loss (and its Hessian) is undefined")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mc_samples < 1:
        raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _weighted_batches(data: ArrayDataset, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor, float]]:
    """Batches in order, each with the weight ``len(batch) / N`` of its mean loss in the mean over ``data``."""
    n = len(data)
    for start in range(0, n, batch_size):
        xb, yb = data.x[start : start + batch_size], data.y[start : start + batch_size]
        yield xb.to(device), yb.to(device), len(yb) / n


# ---------------------------------------------------------------- exact (autograd)


def _exact_diagonal(model: nn.Module, data: ArrayDataset, batch_size: int, device: torch.device) -> dict[str, Tensor]:
    params = _trainable(model)
    total = sum(p.numel() for p in params.values())
    if total > EXACT_MAX_PARAMETERS:
        raise ValueError(f"method='exact' needs one Hessian-vector product per parameter; the model has {total:,} "
                         f"parameters (limit {EXACT_MAX_PARAMETERS:,}). Use 'diag_hessian' or a GGN method.")
    diag = {name: torch.zeros_like(p) for name, p in params.items()}
    for xb, yb, weight in _weighted_batches(data, batch_size, device):
        loss = nn.functional.cross_entropy(model(xb), yb)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        for (name, p), g in zip(params.items(), grads):
            diag[name] += weight * _block_hessian_diagonal(g, p)
    return {name: d.detach() for name, d in diag.items()}


def _block_hessian_diagonal(grad: Tensor, param: Tensor, chunk: int = 512) -> Tensor:
    """``diag(d grad / d param)``: Hessian-vector products with one-hot vectors, ``chunk`` at a time."""
    n = param.numel()
    if not grad.requires_grad:  # the gradient does not depend on any parameter: zero curvature
        return torch.zeros_like(param)
    flat_grad = grad.reshape(-1)  # (n,)
    out = torch.empty(n, dtype=param.dtype, device=param.device)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=param.device)  # (k,)
        one_hot = torch.zeros(len(rows), n, dtype=param.dtype, device=param.device)  # (k, n)
        one_hot[torch.arange(len(rows)), rows] = 1.0
        hvp = torch.autograd.grad(flat_grad, param, grad_outputs=one_hot, is_grads_batched=True,
                                  retain_graph=True, allow_unused=True)[0]  # (k, *param.shape) or None
        if hvp is None:
            out[rows] = 0.0
        else:
            out[rows] = hvp.reshape(len(rows), n)[torch.arange(len(rows)), rows]
    return out.view_as(param)


# ---------------------------------------------------------------- BackPACK


def _backpack_extension(method: str, mc_samples: int):
    from backpack.extensions import DiagGGNExact, DiagGGNMC, DiagHessian

    if method == "diag_hessian":
        return DiagHessian()
    if method == "ggn_exact":
        return DiagGGNExact()
    return DiagGGNMC(mc_samples=mc_samples)


def is_plain_sequential(model: nn.Module) -> bool:
    """True when ``model`` is an ``nn.Sequential`` of leaf layers (possibly nested), which BackPACK extends directly.

    Anything else (residual sums, custom ``forward``) needs BackPACK's
    ``torch.fx`` converter, ``extend(model, use_converter=True)``.
    """
    if not isinstance(model, nn.Sequential):
        return False
    return all(isinstance(m, nn.Sequential) or not any(True for _ in m.children()) for m in model.modules())


def _backpack_diagonal(model: nn.Module, data: ArrayDataset, method: str, batch_size: int, mc_samples: int,
                       seed: int, device: torch.device) -> dict[str, Tensor]:
    from backpack import extend

    names = {id(p): name for name, p in _trainable(model).items()}
    extended = extend(model, use_converter=not is_plain_sequential(model))
    loss_fn = extend(nn.CrossEntropyLoss(reduction="mean"))
    extension, field = _backpack_extension(method, mc_samples), _BACKPACK_SAVEFIELD[method]
    diag = {name: torch.zeros_like(p) for name, p in _trainable(model).items()}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # only "ggn_mc" draws random numbers (its sampled labels)
        for xb, yb, weight in _weighted_batches(data, batch_size, device):
            extended.zero_grad(set_to_none=True)
            loss = loss_fn(extended(xb), yb)
            _backward_with(extension, loss, method)
            for p in extended.parameters():
                if id(p) in names:
                    diag[names[id(p)]] += weight * getattr(p, field).detach()
    return diag


def _backward_with(extension, loss: Tensor, method: str) -> None:
    """``loss.backward()`` inside BackPACK, turning "no extension for this module" into advice."""
    from backpack import backpack

    try:
        with warnings.catch_warnings():
            # The inputs do not require gradients; BackPACK only needs the output gradients, so
            # torch's warning about full backward hooks firing on outputs only is expected here.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            with backpack(extension):
                loss.backward()
    except NotImplementedError as err:
        if "does not have an extension for Module" not in str(err):
            raise
        advice = ("BackPACK's DiagHessian has no rule for residual sums (SumModule) or other branching; "
                  "use method='ggn_exact' or 'ggn_mc'" if method == "diag_hessian" else
                  "use a model built from BackPACK-supported layers (e.g. norm='batch' or 'none' for ResNet18)")
        raise ValueError(f"curvature method {method!r} does not support this model: {err}. {advice}.") from err


# ---------------------------------------------------------------- cost


_FLOPS_CACHE: dict[tuple, float] = {}


def curvature_flops_per_sample(model: nn.Module, data: ArrayDataset, method: str = "ggn_exact", *,
                               mc_samples: int = 1, probe_size: int = 32) -> float:
    """FLOPs of :func:`hessian_diagonal` per sample, counted on a probe batch.

    Counted with ``torch.utils.flop_counter`` (matrix products and
    convolutions, including BackPACK's) on the first ``probe_size`` samples of
    ``data``, once per model class, parameter shapes, input shape, method and
    ``mc_samples``, then cached, like :func:`fuhelpers.cost.train_flops_per_sample`.

    Parameters
    ----------
    model : nn.Module
    data : ArrayDataset
        Any data of the right input shape (only ``probe_size`` samples are used).
    method : str
        One of :data:`METHODS`.
    mc_samples : int
        For ``"ggn_mc"``.
    probe_size : int
        Samples in the probe batch.
    """
    key = (type(model).__name__, tuple(p.shape for p in model.parameters()), tuple(data.x.shape[1:]), method,
           mc_samples if method == "ggn_mc" else 0)
    if key not in _FLOPS_CACHE:
        probe = data.subset(range(min(probe_size, len(data))))
        counter = FlopCounterMode(display=False)
        with counter:
            hessian_diagonal(model, probe, method, batch_size=len(probe), mc_samples=mc_samples)
        _FLOPS_CACHE[key] = counter.get_total_flops() / len(probe)
    return _FLOPS_CACHE[key]
