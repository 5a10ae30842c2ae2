"""NoT: federated unlearning by weight negation (Khalil et al., CVPR 2025, arXiv 2503.05657).

The server multiplies the weights of chosen layers by -1 (``theta' = -theta*``)
and then recovers utility with a few FedAvg rounds on retained data. Neither a
stored history nor the data to forget is needed: in client-wise unlearning the
target client simply takes no part in the recovery; in class- or sample-wise
unlearning the target clients take part with their retained data.

Why negation. Negating layer ``k`` breaks the co-adaptation between layer ``k``
and the layers after it (the network forgets), yet the model stays one
layer-wise step from an optimum: for an odd activation (tanh), negating layer
``k``'s weight and bias and then layer ``k + 1``'s weight gives back the same
function; for ReLU, ``relu(y) - relu(-y) = y``, so the activations change by as
much as they can among weights of the same norm (the point of the sphere
``||theta'|| = ||theta||`` farthest from ``theta`` is ``-theta``).

What is and is not from the paper
---------------------------------
* Default layer set: the first layer's weights only, the reading of the
  third-party re-implementations (they cite the paper's ablation, where
  negating the first layer beat negating the last or all layers). Whether the
  paper also negates biases and normalisation parameters is unconfirmed (no
  official code is public); both are options here, off by default.
* The ablation's Gaussian-noise and re-initialisation perturbations are
  :func:`perturb_` kinds. Their exact scaling in the paper is unknown; here the
  noise has the norm of negation's change, ``||delta|| = 2 ||theta||`` per
  tensor, and re-initialisation is not rescaled. Negation changes the
  activations most only among weights of equal norm, ``||theta'|| = ||theta||``;
  noise of this scaling can change them more. What we can state exactly is one
  case: a layer without bias whose rows have equal norms, and zero-mean
  isotropic Gaussian inputs. Then a unit's pre-activation ``y`` and its noisy
  version ``y + delta`` are Gaussian with variances ``s^2`` and ``5 s^2`` and
  correlation ``1/sqrt(5)``, and the expected squared change of the ReLU
  activations is ``2 - (2 - arccos(1/sqrt 5)) / pi``, about 1.72 times
  negation's (``E[y^2] = s^2``). Trained layers and real inputs (not Gaussian,
  e.g. the non-negative outputs of a ReLU) give other ratios, and the order can
  differ from one network to another.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..cost import Cost, stopwatch
from ..fl import FedConfig, train
from ..models import first_layer, last_layer, layer_names
from .base import Unlearned

NEEDS = {"clients"}
LAYER_SETS = ("first", "last", "all")
PERTURBATIONS = ("negate", "noise", "reinit")
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)  # the layer types of models.first_layer / last_layer
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


# ---------------------------------------------------------------- which tensors


def _module_params(module: nn.Module, prefix: str, include_bias: bool) -> list[str]:
    """``prefix.weight`` and, with ``include_bias``, ``prefix.bias``, where the module has them."""
    own = dict(module.named_parameters(recurse=False))
    keys = ["weight", "bias"] if include_bias else ["weight"]
    return [f"{prefix}.{k}" for k in keys if own.get(k) is not None]


def _norm_after(model: nn.Module, layer: str) -> str | None:
    """The normalisation layer registered right after ``layer`` (the one applied to its output in our models)."""
    names = layer_names(model)
    modules = dict(model.named_modules())
    i = names.index(layer)
    if i + 1 < len(names) and isinstance(modules[names[i + 1]], NORM_LAYERS):
        return names[i + 1]
    return None


def _chosen_modules(model: nn.Module, layers: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """(module names, explicit parameter names) that ``layers`` designates."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    if isinstance(layers, str):
        if layers not in LAYER_SETS:
            raise ValueError(f"layers must be one of {LAYER_SETS} or a list of module/parameter names, "
                             f"got {layers!r} (for one module write [{layers!r}])")
        if layers == "first":
            return [first_layer(model)], []
        if layers == "last":
            return [last_layer(model)], []
        return [n for n in layer_names(model) if isinstance(modules[n], WEIGHT_LAYERS)], []
    layers = list(layers)
    if not layers:
        raise ValueError("layers is an empty list: nothing to negate")
    holders = set(layer_names(model))
    unknown = [n for n in layers if n not in params and n not in holders]
    if unknown:
        raise ValueError(f"{unknown} name neither a parameter nor a module holding parameters; "
                         f"modules: {sorted(holders)}")
    return [n for n in layers if n not in params], [n for n in layers if n in params]


def resolve_layers(
    model: nn.Module,
    layers: str | Sequence[str] = "first",
    *,
    include_bias: bool = False,
    include_norm: bool = False,
) -> list[str]:
    """Names of the parameter tensors that NoT negates.

    Parameters
    ----------
    model : nn.Module
        The model whose parameters are named.
    layers : {"first", "last", "all"} or list of str
        ``"first"`` / ``"last"``: the first / last convolution or linear layer
        (:func:`~fuhelpers.models.first_layer`, :func:`~fuhelpers.models.last_layer`);
        ``"all"``: every convolution and linear layer. A list names modules
        (e.g. ``"conv1"``, expanded like the sets) or parameters (e.g.
        ``"fc1.bias"``, taken as they are).
    include_bias : bool
        Also the biases of the chosen modules. Default off: weights only, the
        reading of third-party re-implementations (the paper's choice is
        unconfirmed).
    include_norm : bool
        Also the affine parameters of normalisation layers: with ``"all"``
        every normalisation layer, otherwise the one registered right after
        each chosen module. Its weight (gamma) is taken, its bias (beta) only
        with ``include_bias``. Caution: BatchNorm with batch statistics
        turns the negated output of its convolution into ``-x_hat``, so
        negating gamma as well cancels the negation (with beta negated too,
        only beta's sign differs).

    Returns
    -------
    list of str
        Parameter names, without repeats, in ``model.named_parameters()`` order.
    """
    module_names, chosen = _chosen_modules(model, layers)
    modules = dict(model.named_modules())
    chosen = set(chosen)
    for name in module_names:
        chosen.update(_module_params(modules[name], name, include_bias))
    if include_norm:
        if layers == "all":
            norms = [n for n in layer_names(model) if isinstance(modules[n], NORM_LAYERS)]
        else:
            norms = [_norm_after(model, n) for n in module_names]
        for name in filter(None, norms):
            chosen.update(_module_params(modules[name], name, include_bias))
    return [n for n, _ in model.named_parameters() if n in chosen]


# ---------------------------------------------------------------- perturbations


def _named_params(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"{unknown} are not parameters of the model")
    return {n: params[n] for n in names}


def negate_(model: nn.Module, names: Sequence[str]) -> None:
    """Multiply the named parameters by -1, in place (NoT's perturbation, ``theta' = -theta``)."""
    with torch.no_grad():
        for p in _named_params(model, names).values():
            p.mul_(-1)


def _add_noise_(params: dict[str, nn.Parameter], seed: int) -> None:
    """Add Gaussian noise with ``||delta|| = 2 ||p||`` to each tensor (drawn on CPU: same result on any device)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            scale = 2 * p.detach().double().norm().cpu() / noise.norm()
            p.add_((noise * scale).to(p.device, p.dtype))


def _reinit_(model: nn.Module, params: dict[str, nn.Parameter], seed: int) -> None:
    """Overwrite the named tensors with a fresh initialisation of their modules, drawn under ``seed``."""
    modules = dict(model.named_modules())
    owners = list(dict.fromkeys(n.rpartition(".")[0] for n in params))  # module names, model order kept
    fresh = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for owner in owners:
            if not hasattr(modules[owner], "reset_parameters"):
                raise ValueError(f"module {owner!r} ({type(modules[owner]).__name__}) has no reset_parameters")
            # a CPU copy: the CPU generator decides the values on any device, and
            # parameters of the module that were not named stay untouched
            clone = copy.deepcopy(modules[owner]).cpu()
            clone.reset_parameters()
            fresh.update({f"{owner}.{k}" if owner else k: v for k, v in clone.named_parameters(recurse=False)})
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(fresh[name])


def perturb_(model: nn.Module, names: Sequence[str], kind: str = "negate", seed: int = 0) -> None:
    """Perturb the named parameters in place: NoT's negation or an ablation's alternative.

    Parameters
    ----------
    model : nn.Module
        Edited in place.
    names : sequence of str
        Parameter names (e.g. from :func:`resolve_layers`).
    kind : {"negate", "noise", "reinit"}
        ``"negate"``: ``theta' = -theta``. ``"noise"``: ``theta' = theta + delta``
        with Gaussian ``delta`` scaled so that ``||delta|| = 2 ||theta||`` per
        tensor, the size of negation's change. ``"reinit"``: the tensors get a
        fresh initialisation from their modules' ``reset_parameters`` (not
        rescaled; its change is ``||theta_init - theta||``).
    seed : int
        Seed of ``"noise"`` and ``"reinit"`` (the global RNG is left untouched).
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"kind must be one of {PERTURBATIONS}, got {kind!r}")
    params = _named_params(model, names)
    if kind == "negate":
        negate_(model, names)
    elif kind == "noise":
        _add_noise_(params, seed)
    else:
        _reinit_(model, params, seed)


# ---------------------------------------------------------------- the method


@dataclass
class NegationConfig:
    """NoT settings.

    Attributes
    ----------
    layers : {"first", "last", "all"} or list of str
        What to negate (see :func:`resolve_layers`); the first layer by default.
    include_bias, include_norm : bool
        Negate biases / normalisation parameters too (see :func:`resolve_layers`).
    perturbation : {"negate", "noise", "reinit"}
        NoT itself, or the ablation's alternatives (see :func:`perturb_`).
    seed : int
        Seed of the "noise" and "reinit" perturbations.
    recovery : FedConfig
        The recovery FedAvg that follows the perturbation (rounds on retained data).
    target_participates : bool
        Only meaningful for client requests, where it must stay False: the
        target client's data is all to be forgotten, so it takes no part in
        recovery (``True`` raises). For class and sample requests the target
        clients always take part with their retained data, as the paper does
        (this is what ``Federation.retain_clients`` gives).
    """

    layers: str | list[str] = "first"
    include_bias: bool = False
    include_norm: bool = False
    perturbation: str = "negate"
    seed: int = 0
    recovery: FedConfig = field(default_factory=lambda: FedConfig(num_rounds=5))
    target_participates: bool = False


def unlearn(model, federation, request, config: NegationConfig, history=None, *, evaluate=None,
            device=None) -> Unlearned:
    """Negate the chosen layers of a copy of ``model``, then recover with FedAvg on the retained data.

    Parameters
    ----------
    model : nn.Module
        The trained global model (not edited).
    federation : Federation
    request : Request
    config : NegationConfig
    history : ignored
        Accepted for the common signature; NoT stores nothing.
    evaluate : callable, optional
        Per-round evaluation, passed to :func:`fuhelpers.fl.train`; ``log[0]``
        is the model right after the perturbation, ``log[t]`` after ``t``
        recovery rounds.
    device : torch.device or str, optional
        Where recovery trains.

    Returns
    -------
    Unlearned
        ``cost`` = perturbation time + recovery FedAvg; ``info`` holds the
        perturbed tensors (``"negated"``, whatever the perturbation), the
        ``"perturbation"``, ``"num_params_perturbed"`` and the recovery
        ``"clients"``.
    """
    if config.target_participates and request.kind == "client":
        raise ValueError("target_participates=True with a client request: the target client has no retained "
                         "data, so it cannot take part in recovery without using the data to forget")
    perturbed = copy.deepcopy(model)
    cost = Cost()
    with stopwatch(cost):
        names = resolve_layers(perturbed, config.layers, include_bias=config.include_bias,
                               include_norm=config.include_norm)
        perturb_(perturbed, names, config.perturbation, config.seed)
    clients, ids = federation.retain_clients(request)
    result = train(perturbed, clients, config.recovery, client_ids=ids, evaluate=evaluate, device=device,
                   desc="NoT recovery")
    params = dict(result.model.named_parameters())
    info = {
        "negated": names,
        "perturbation": config.perturbation,
        "num_params_perturbed": sum(params[n].numel() for n in names),
        "clients": ids,
    }
    return Unlearned(result.model, cost + result.cost, info, result.log)
