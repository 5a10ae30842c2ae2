"""L2U, FOUL's "learning to unlearn" stage (Nguyen et al., CVPR 2026, arXiv 2603.13795, Sec. 3.1 and App. B).

During federated training every client's model is split into five parts,
``theta_u = {theta_E, theta_K, theta_V, theta_D, theta_C}``::

    x ──> E (shallow extractor) ──┬──> K (causal encoder)     ──> z_K ──> C (classifier) ──> logits
                                  └──> V (non-causal encoder) ──> z_V
                                        concat(z_K, z_V) ──> D (decoder) ──> x_hat

and trained on (Eq. 3, as given in a published summary of the paper)::

    L_L2U = alpha_V L_V + alpha_K L_K + alpha_gtc L_gtc + L_rec

* ``L_K`` (Eq. 4), :func:`prototype_loss`: pulls same-class causal features
  together around their in-batch class prototype (domain-invariant knowledge);
* ``L_V`` (Eq. 5), :func:`hinge_variance_loss`: pushes same-class non-causal
  features apart until their per-dimension standard deviation reaches a
  threshold (domain-specific variation);
* ``L_gtc`` (Eq. 7): cross-entropy of the classifier on the causal features;
* ``L_rec`` (Eq. 8), :func:`reconstruction_loss`: VAE-style MSE + KL, the two
  representations together must reconstruct the input.

Training alternates two steps with Reptile (App. B, Eqs. 11-12): the *L2U
generator* (reconstruction and the two representation losses) and the
*meaningful invariant discriminator* (MID, the classification through the
causal branch), see :func:`l2u_local_train`; :func:`train_l2u` runs it under
FedAvg through :func:`fuhelpers.fl.train`. Unlearning
(:mod:`fuhelpers.unlearn.foul`) later changes only ``V``.

What is ours, not the paper's
-----------------------------
Our text of the paper (arXiv 2603.13795) lost every formula in extraction; a
published summary of the paper keeps Eq. 5 and the total loss. Marked [infer] below:

* Eq. 4's exact form: a softmax over cosine similarities to the in-batch
  class prototypes with a temperature (the prototypical-network reading).
* Where the VAE posterior lives: each encoder outputs a mean and a
  log-variance; ``z_K`` and ``z_V`` are the means (used by ``L_K``, ``L_V``
  and the classifier), the decoder reads a sample of the concatenated
  posterior while training and its mean in ``eval()`` mode.
* Reductions: MSE and KL are both averaged over elements (the paper's
  scaling is lost; the usual VAE sums over pixels and latent dimensions
  would weigh ``L_rec`` by the image size against the other terms, which
  are per-sample averages).
* Which terms each Reptile step minimises (Eqs. 11-12 are lost): by default
  the generator takes ``L_rec + alpha_V L_V + alpha_K L_K`` and the MID takes
  ``alpha_gtc L_gtc``; both are configurable (:class:`L2UConfig`).
* Architectures (the paper uses ResNet-18/50 with unknown split points): see
  :class:`L2UModel`.

Classifier input. Eq. 7 classifies from ``z_K`` alone (the default,
``classifier_input="causal"``). Then the logits do not depend on ``V`` at all,
so unlearning ``V`` cannot change predictions (forget, retain and test
accuracy stay exactly where L2U left them). ``classifier_input="both"`` feeds
``concat(z_K, z_V)`` to the classifier, so that forgetting in ``V`` shows in
the accuracies; the paper's tables (accuracies that move after unlearning)
suggest the deployed classifier sees ``V`` somehow, but the text does not say how.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from itertools import islice
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ...fl import FedConfig, FedResult, _batches, train
from ...device import resolve_device
from ...history import History
from ...models import BasicBlock, ResNet18

__all__ = [
    "BACKBONES",
    "L2UConfig",
    "L2UModel",
    "L2UParts",
    "TERMS",
    "hinge_variance_loss",
    "l2u_local_train",
    "l2u_loss",
    "l2u_loss_on",
    "l2u_terms",
    "noncausal_names",
    "prototype_loss",
    "reconstruction_loss",
    "train_l2u",
]

BACKBONES = ("cnn", "resnet18")
CLASSIFIER_INPUTS = ("causal", "both")
TERMS = ("V", "K", "gtc", "rec")  # the four losses of Eq. 3


# ---------------------------------------------------------------- configuration


@dataclass
class L2UConfig:
    """Weights of the L2U loss (Eq. 3) and settings of the Reptile alternation (App. B).

    Attributes
    ----------
    alpha_v, alpha_k, alpha_gtc : float
        Weights of ``L_V``, ``L_K`` and ``L_gtc`` (``L_rec`` has weight 1).
        Our choice 1.0: App. F fixes the other coefficients to a value lost in
        extraction while varying one.
    temperature : float
        Temperature of the cosine softmax in ``L_K`` (our choice, 0.1, usual
        for cosine-similarity softmaxes; Eq. 4's form is our reading).
    threshold : float
        Hinge level of ``L_V``: the target per-dimension standard deviation,
        1 in Eq. 5 as the paper's published summary gives it (as in VICReg).
    eps : float
        Added to the variance under the square root of ``L_V``; 1e-4 as in
        VICReg (Bardes et al., 2022), which Eq. 5 follows.
    kl_weight : float
        Weight of the KL term inside ``L_rec``; 1 (Eq. 8 as "MSE + KL").
    inner_steps : int
        Mini-batch SGD steps of one Reptile inner loop, i.e. of one generator
        or one MID phase (our choice, 2: App. B's value is lost; 2 learnt
        faster than 5 in our rotated-MNIST smoke runs).
    meta_lr : float
        Reptile's outer step size epsilon: after a phase the weights move to
        ``theta_0 + meta_lr (theta_k - theta_0)`` (Nichol et al., 2018).
        Our choice 1.0, which makes the alternation plain: each phase keeps
        its ``inner_steps`` steps; smaller values damp each phase.
    generator_terms, mid_terms : tuple of str
        Terms of :data:`TERMS` minimised by the generator step (Eq. 11) and by
        the MID step (Eq. 12) [infer]. A term's weight is its alpha.
    """

    alpha_v: float = 1.0
    alpha_k: float = 1.0
    alpha_gtc: float = 1.0
    temperature: float = 0.1
    threshold: float = 1.0
    eps: float = 1e-4
    kl_weight: float = 1.0
    inner_steps: int = 2
    meta_lr: float = 1.0
    generator_terms: tuple[str, ...] = ("rec", "V", "K")
    mid_terms: tuple[str, ...] = ("gtc",)

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if not 0 < self.meta_lr <= 1:
            raise ValueError(f"meta_lr must be in (0, 1], got {self.meta_lr}")
        for name in ("generator_terms", "mid_terms"):
            terms = tuple(getattr(self, name))
            bad = [t for t in terms if t not in TERMS]
            if bad or not terms:
                raise ValueError(f"{name} must be a non-empty subset of {TERMS}, got {terms}")
            setattr(self, name, terms)

    def weights(self) -> dict[str, float]:
        """Weight of each term of Eq. 3."""
        return {"V": self.alpha_v, "K": self.alpha_k, "gtc": self.alpha_gtc, "rec": 1.0}


# ---------------------------------------------------------------- the model


class L2UParts(NamedTuple):
    """Everything one forward pass of :meth:`L2UModel.parts` produces (N = batch, L = latent size).

    ``z_k`` (N, causal_dim) and ``z_v`` (N, noncausal_dim) are the posterior
    means of the two encoders; ``mu`` and ``logvar`` (N, L) the concatenated
    posterior, ``L = causal_dim + noncausal_dim``; ``recon`` the decoded input
    (N, C, H, W), or ``None`` when not decoded; ``logits`` (N, num_classes).
    """

    z_k: Tensor
    z_v: Tensor
    mu: Tensor
    logvar: Tensor
    recon: Tensor | None
    logits: Tensor


class GaussianEncoder(nn.Module):
    """A convolutional body, then a linear head giving a posterior mean and log-variance."""

    def __init__(self, body: nn.Module, body_features: int, dim: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(body_features, 2 * dim)
        self.dim = dim

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        # h: (N, C_e, S_e, S_e) extractor features
        mu, logvar = self.head(self.body(h)).chunk(2, dim=1)  # (N, dim) each
        return mu, logvar


class Decoder(nn.Module):
    """Latent vector -> image: a linear layer to a small map, then 2x transposed convolutions, then a crop.

    With ``k = max(2, ceil(log2(S / 7)))`` upsampling stages the linear layer
    produces a ``(channels, s0, s0)`` map, ``s0 = ceil(S / 2^k)`` (7 for 28x28
    and 224x224 inputs, 2 for 8x8); each stage doubles the side and halves the
    channels (at least 8), the last one outputs the image channels; the result
    is cropped to ``S x S``.
    """

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, channels: int) -> None:
        super().__init__()
        stages = max(2, math.ceil(math.log2(image_size / 7)))
        self.image_size = image_size
        self.s0 = math.ceil(image_size / 2**stages)
        self.channels = channels
        self.fc = nn.Linear(latent_dim, channels * self.s0 * self.s0)
        layers: list[nn.Module] = [nn.ReLU()]
        c = channels
        for i in range(stages):
            last = i == stages - 1
            c_out = out_channels if last else max(8, c // 2)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1))  # side x 2
            if not last:
                layers.append(nn.ReLU())
            c = c_out
        self.up = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        # z: (N, L)
        h = self.fc(z).view(len(z), self.channels, self.s0, self.s0)  # (N, c, s0, s0)
        out = self.up(h)  # (N, C, s0 2^k, s0 2^k)
        return out[..., : self.image_size, : self.image_size]  # (N, C, S, S)


def _cnn_parts(in_channels: int, width: int, image_size: int, pool_size: int):
    """Extractor and encoder bodies of the small-CNN backbone.

    Blocks are conv -> GroupNorm with one group (normalising over channels and
    positions, so it also works on the 1x1 maps of 8x8 inputs) -> ReLU; the
    convolutions have no bias, which the normalisation would cancel.
    """
    c = 2 * width
    extractor = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),  # (N, w, S/2, S/2), sides rounded up
        nn.GroupNorm(1, width),
        nn.ReLU(),
        nn.Conv2d(width, c, 3, stride=2, padding=1, bias=False),  # (N, 2w, S/4, S/4)
        nn.GroupNorm(1, c),
        nn.ReLU(),
    )
    side = max(1, min(pool_size, math.ceil(image_size / 8)))

    def body() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),  # (N, 2w, S/8, S/8), rounded up
            nn.GroupNorm(1, c),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(side),  # (N, 2w, side, side)
            nn.Flatten(),  # (N, 2w side^2)
        )

    return extractor, body, c * side * side, width


def _resnet_parts(in_channels: int, width: int, norm: str):
    """Extractor (ResNet-18 stem + stages 1-3) and encoder bodies (one stage-4-like stage each, half width)."""
    net = ResNet18(num_classes=2, in_channels=in_channels, norm=norm, width=width)
    extractor = nn.Sequential(net.conv1, net.norm1, net.relu, net.layer1, net.layer2, net.layer3)  # (N, 4w, S/4, S/4)
    c_in, c = 4 * width, 4 * width

    def body() -> nn.Module:
        return nn.Sequential(
            BasicBlock(c_in, c, 2, norm),  # (N, 4w, S/8, S/8)
            BasicBlock(c, c, 1, norm),
            nn.AdaptiveAvgPool2d(1),  # (N, 4w, 1, 1)
            nn.Flatten(),  # (N, 4w)
        )

    return extractor, body, c, width


class L2UModel(nn.Module):
    """FOUL's disentangled classifier: extractor E, causal encoder K, non-causal encoder V, decoder D, classifier C.

    ``model(x)`` returns logits, so :mod:`fuhelpers.metrics` and
    :func:`fuhelpers.fl.train` treat it like any classifier;
    :meth:`parts` returns every intermediate the L2U losses need.

    Parameters
    ----------
    in_channels : int
        Input channels.
    num_classes : int
        Number of logits.
    image_size : int
        Side of the square inputs (at least 4).
    backbone : {"cnn", "resnet18"}
        ``"cnn"``: E is two stride-2 conv/GroupNorm/ReLU blocks (``width``
        and ``2 width`` channels, output side ``S / 4``); K and V are each a
        stride-2 conv/GroupNorm/ReLU block, an adaptive average pool to at
        most ``pool_size`` x ``pool_size`` and a linear head.
        ``"resnet18"``: E is the stem and stages 1-3 of
        :class:`~fuhelpers.models.ResNet18` (``width`` channels in the stem);
        K and V are each a stage-4-like pair of basic blocks with ``4 width``
        channels (half of ResNet-18's stage 4), global pooling and a linear
        head. The paper's split points are unknown.
    width : int
        Channel width of the backbone (16 for the CNN keeps CPU runs fast;
        64 is the usual ResNet-18).
    causal_dim, noncausal_dim : int
        Sizes of ``z_K`` and ``z_V`` (App. H varies them at a fixed total).
    pool_size : int
        Spatial side the CNN encoders pool to before their heads.
    classifier_input : {"causal", "both"}
        What C reads: ``z_K`` (Eq. 7, the default) or ``concat(z_K, z_V)``
        (see the module notes).
    norm : {"batch", "group", "none"}
        Normalisation of the ResNet backbone (GroupNorm by default: clients'
        BatchNorm statistics differ across domains, and unlearning must leave
        E's buffers untouched).

    Notes
    -----
    Attribute names: ``extractor``, ``causal``, ``noncausal``, ``decoder``,
    ``classifier``; :func:`noncausal_names` lists V's parameters.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        *,
        backbone: str = "cnn",
        width: int = 16,
        causal_dim: int = 32,
        noncausal_dim: int = 32,
        pool_size: int = 4,
        classifier_input: str = "causal",
        norm: str = "group",
    ) -> None:
        super().__init__()
        for name, value in dict(in_channels=in_channels, num_classes=num_classes, width=width,
                                causal_dim=causal_dim, noncausal_dim=noncausal_dim, pool_size=pool_size).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if image_size < 4:
            raise ValueError(f"image_size must be >= 4, got {image_size}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        if classifier_input not in CLASSIFIER_INPUTS:
            raise ValueError(f"classifier_input must be one of {CLASSIFIER_INPUTS}, got {classifier_input!r}")
        if backbone == "cnn":
            extractor, body, body_features, dec_channels = _cnn_parts(in_channels, width, image_size, pool_size)
        else:
            extractor, body, body_features, dec_channels = _resnet_parts(in_channels, width, norm)
        self.classifier_input = classifier_input
        self.extractor = extractor
        self.causal = GaussianEncoder(body(), body_features, causal_dim)
        self.noncausal = GaussianEncoder(body(), body_features, noncausal_dim)
        self.decoder = Decoder(causal_dim + noncausal_dim, in_channels, image_size, dec_channels)
        head_in = causal_dim + (noncausal_dim if classifier_input == "both" else 0)
        self.classifier = nn.Linear(head_in, num_classes)

    def _classify(self, z_k: Tensor, z_v: Tensor | None) -> Tensor:
        if self.classifier_input == "both":
            return self.classifier(torch.cat([z_k, z_v], dim=1))  # Eq. 7 on (z_K, z_V): (N, classes)
        return self.classifier(z_k)  # Eq. 7: C(z_K), (N, classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``C(z_K)`` (or ``C(z_K, z_V)``), shape (N, num_classes)."""
        h = self.extractor(x)  # (N, C_e, S_e, S_e)
        z_k, _ = self.causal(h)  # (N, causal_dim)
        z_v = self.noncausal(h)[0] if self.classifier_input == "both" else None
        return self._classify(z_k, z_v)

    def parts(self, x: Tensor, generator: torch.Generator | None = None, *, sample: bool | None = None,
              decode: bool = True) -> L2UParts:
        """All representations of one forward pass.

        Parameters
        ----------
        x : Tensor, shape (N, C, H, W)
        generator : torch.Generator, optional
            CPU generator of the reparameterisation noise (same draws on any device).
        sample : bool, optional
            Decode a posterior sample ``mu + exp(logvar / 2) * noise``
            (default: in training mode) instead of the mean.
        decode : bool
            Run the decoder (skip it when no reconstruction term is needed).

        Returns
        -------
        L2UParts
        """
        h = self.extractor(x)  # (N, C_e, S_e, S_e)
        mu_k, logvar_k = self.causal(h)  # (N, causal_dim) each
        mu_v, logvar_v = self.noncausal(h)  # (N, noncausal_dim) each
        mu = torch.cat([mu_k, mu_v], dim=1)  # (N, L)
        logvar = torch.cat([logvar_k, logvar_v], dim=1)  # (N, L)
        recon = None
        if decode:
            z = mu
            if sample is None:
                sample = self.training
            if sample:
                noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
                z = mu + torch.exp(0.5 * logvar) * noise  # reparameterisation (Kingma & Welling, 2013)
            recon = self.decoder(z)  # (N, C, H, W)
        return L2UParts(mu_k, mu_v, mu, logvar, recon, self._classify(mu_k, mu_v))


def noncausal_names(model: nn.Module) -> list[str]:
    """Names of the non-causal encoder's parameters (what FOUL unlearns), in model order."""
    if not hasattr(model, "noncausal"):
        raise ValueError(f"{type(model).__name__} has no 'noncausal' encoder; use fuhelpers.unlearn.foul.l2u.L2UModel")
    return [n for n, _ in model.named_parameters() if n.startswith("noncausal.")]


# ---------------------------------------------------------------- the losses


def prototype_loss(z: Tensor, y: Tensor, temperature: float = 0.1) -> Tensor:
    """Prototypical loss of the causal features, ``L_K`` (Eq. 4).

    Each class present in the batch gets a prototype, the mean of its
    features; each sample is classified by a softmax over its cosine
    similarities to the prototypes, divided by ``temperature``::

        p_c = (1 / |B_c|) sum_{i in B_c} z_i
        L_K = -(1 / N) sum_i log( exp(cos(z_i, p_{y_i}) / T) / sum_c exp(cos(z_i, p_c) / T) )

    The prototype's definition is the paper's (Eq. 4, after Snell et al.,
    2017); the softmax over cosine similarities with a temperature is our
    reading of the lost formula [infer]. The loss is smallest when features
    of one class coincide (cosine 1 to their prototype) and different
    classes point away from each other.

    Parameters
    ----------
    z : Tensor, shape (N, D)
        Causal features.
    y : Tensor, shape (N,)
        Integer labels.
    temperature : float
        Softmax temperature T > 0.

    Returns
    -------
    Tensor
        Scalar; 0 when the batch holds a single class.
    """
    classes, target = torch.unique(y, return_inverse=True)  # (K,), (N,) index of y_i among classes
    onehot = F.one_hot(target, len(classes)).to(z.dtype)  # (N, K)
    prototypes = onehot.T @ z / onehot.sum(0)[:, None]  # (K, D)  Eq. 4: p_c = mean of class c in the batch
    cos = F.normalize(z, dim=1) @ F.normalize(prototypes, dim=1).T  # (N, K)  cos(z_i, p_c)
    return F.cross_entropy(cos / temperature, target)  # Eq. 4 [infer: softmax over cos / T]


def hinge_variance_loss(z: Tensor, y: Tensor, threshold: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Hinge variance loss of the non-causal features, ``L_V`` (Eq. 5).

    Per class ``c`` and per feature dimension ``j``, the standard deviation of
    the class's features is hinged at ``threshold``::

        s_cj = sqrt(Var_{i in B_c}(z_ij) + eps)
        L_V  = (1 / C) sum_c (1 / D) sum_j max(0, threshold - s_cj)

    (Eq. 5 as the paper's published summary gives it, threshold 1, per dimension
    as in VICReg). The loss
    is large while same-class features are collapsed and exactly zero once
    every ``s_cj >= threshold``, so the variance is pushed up only to that
    level. The variance is the unbiased one; classes with fewer than two
    samples in the batch are skipped and ``C`` counts the others.

    Parameters
    ----------
    z : Tensor, shape (N, D)
        Non-causal features.
    y : Tensor, shape (N,)
        Integer labels.
    threshold : float
        Target standard deviation (1 in Eq. 5).
    eps : float
        Stabiliser under the square root.

    Returns
    -------
    Tensor
        Scalar; 0 (still attached to ``z``) when no class has two samples.
    """
    per_class = []
    for c in torch.unique(y):
        zc = z[y == c]  # (n_c, D)
        if len(zc) < 2:
            continue
        std = torch.sqrt(zc.var(dim=0) + eps)  # (D,)  Eq. 5: sqrt(Var(Z_V^c) + eps)
        per_class.append(F.relu(threshold - std).mean())  # Eq. 5: max(0, 1 - sqrt(.)), averaged over dims
    if not per_class:
        return z.sum() * 0.0
    return torch.stack(per_class).mean()  # Eq. 5: (1 / C) sum_c


def reconstruction_loss(recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, kl_weight: float = 1.0) -> Tensor:
    """VAE reconstruction loss ``L_rec`` (Eq. 8): MSE plus KL to a standard normal prior.

    ::

        L_rec = mean_elements (x_hat - x)^2
              + kl_weight * mean_{n, j} ( -1/2 (1 + logvar_nj - mu_nj^2 - exp(logvar_nj)) )

    The KL term is the closed form of KL(N(mu, diag(exp(logvar))) || N(0, I))
    (Kingma & Welling, 2013), averaged over batch and latent dimensions like
    the MSE (the paper's reduction is lost; our choice).

    Parameters
    ----------
    recon, target : Tensor, same shape (N, ...)
        Reconstruction and original input.
    mu, logvar : Tensor, shape (N, L)
        Posterior mean and log-variance.
    kl_weight : float
        Weight of the KL term.

    Returns
    -------
    Tensor
        Scalar.
    """
    if recon.shape != target.shape:
        raise ValueError(f"recon has shape {tuple(recon.shape)} but target has {tuple(target.shape)}")
    mse = F.mse_loss(recon, target)  # Eq. 8: ||x_hat - x||^2, mean over elements
    kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())  # Eq. 8: KL(q(z|x) || N(0, I))
    return mse + kl_weight * kl


def l2u_terms(parts: L2UParts, x: Tensor, y: Tensor, cfg: L2UConfig, terms: Sequence[str] = TERMS) -> dict[str, Tensor]:
    """The unweighted terms of Eq. 3 named in ``terms`` (``"V"``, ``"K"``, ``"gtc"``, ``"rec"``)."""
    out = {}
    if "V" in terms:
        out["V"] = hinge_variance_loss(parts.z_v, y, cfg.threshold, cfg.eps)  # Eq. 5
    if "K" in terms:
        out["K"] = prototype_loss(parts.z_k, y, cfg.temperature)  # Eq. 4
    if "gtc" in terms:
        out["gtc"] = F.cross_entropy(parts.logits, y)  # Eq. 7
    if "rec" in terms:
        if parts.recon is None:
            raise ValueError("the reconstruction term needs parts computed with decode=True")
        out["rec"] = reconstruction_loss(parts.recon, x, parts.mu, parts.logvar, cfg.kl_weight)  # Eq. 8
    return out


def _weighted(terms: dict[str, Tensor], cfg: L2UConfig) -> Tensor:
    weights = cfg.weights()
    return sum(weights[name] * value for name, value in terms.items())


def l2u_loss(parts: L2UParts, x: Tensor, y: Tensor, cfg: L2UConfig) -> Tensor:
    """The L2U objective (Eq. 3): ``alpha_V L_V + alpha_K L_K + alpha_gtc L_gtc + L_rec``.

    Parameters
    ----------
    parts : L2UParts
        From :meth:`L2UModel.parts` on ``x`` (with ``decode=True``).
    x : Tensor, shape (N, C, H, W)
        The input, the reconstruction target.
    y : Tensor, shape (N,)
        Labels.
    cfg : L2UConfig
        The weights and loss settings.

    Returns
    -------
    Tensor
        Scalar.
    """
    return _weighted(l2u_terms(parts, x, y, cfg), cfg)  # Eq. 3


@torch.no_grad()
def l2u_loss_on(model: L2UModel, data, cfg: L2UConfig, *, batch_size: int = 256,
                device: torch.device | str | None = None) -> dict[str, float]:
    """Each term of Eq. 3 and their weighted total, averaged over ``data`` in ``eval()`` mode (no sampling).

    Batches are taken in order; batch-level terms (``L_K``, ``L_V``) are
    averaged over batches weighted by their sizes.
    """
    device = resolve_device(device, model)
    was_training = model.training
    model.eval()
    sums, n = {name: 0.0 for name in (*TERMS, "total")}, 0
    for start in range(0, len(data.y), batch_size):
        xb = data.x[start:start + batch_size].to(device)
        yb = data.y[start:start + batch_size].to(device)
        terms = l2u_terms(model.parts(xb), xb, yb, cfg)
        terms["total"] = _weighted(terms, cfg)
        for name, value in terms.items():
            sums[name] += float(value) * len(yb)
        n += len(yb)
    model.train(was_training)
    return {name: value / max(n, 1) for name, value in sums.items()}


# ---------------------------------------------------------------- training


def _phase_step(model: L2UModel, opt: torch.optim.Optimizer, xb: Tensor, yb: Tensor, terms: Sequence[str],
                cfg: L2UConfig, generator: torch.Generator) -> None:
    """One SGD step on the weighted sum of ``terms`` (parameters a term does not reach get no gradient)."""
    opt.zero_grad(set_to_none=True)
    parts = model.parts(xb, generator, decode="rec" in terms)
    _weighted(l2u_terms(parts, xb, yb, cfg, terms), cfg).backward()
    opt.step()


def l2u_local_train(
    model: L2UModel,
    data,
    cfg: L2UConfig,
    fed_config: FedConfig,
    generator: torch.Generator,
    device: torch.device,
    mask=None,
    seen_by_phase: dict[str, int] | None = None,
) -> int:
    """One client's L2U training: generator and MID steps alternated with Reptile (App. B); in place.

    The mini-batches are those of :func:`fuhelpers.fl.local_train` (epochs or
    ``fed_config.local_steps`` steps of ``fed_config.batch_size``, order from
    ``generator``). They are used in chunks of ``cfg.inner_steps``, the
    phases alternating, generator first (App. B)::

        theta_0 = theta;  inner_steps SGD steps on the phase loss -> theta_k
        theta  <- theta_0 + meta_lr (theta_k - theta_0)          (Reptile, Eqs. 11-12)

    Generator phase: ``cfg.generator_terms`` (default ``L_rec + alpha_V L_V +
    alpha_K L_K``); MID phase: ``cfg.mid_terms`` (default ``alpha_gtc L_gtc``).
    Each phase has its own SGD optimiser (``fed_config``'s lr, momentum and
    weight decay) whose state lasts for the local round; parameters that a
    phase's loss does not reach get no gradient and do not move.

    Parameters
    ----------
    model : L2UModel
        Starts as the broadcast global model; trained in place.
    data : ArrayDataset
        The client's data.
    cfg : L2UConfig
    fed_config : FedConfig
        Local epochs or steps, batch size, optimiser.
    generator : torch.Generator
        Batch order and reparameterisation noise.
    device : torch.device
    mask : None
        Masked training is not supported (accepted for :func:`fuhelpers.fl.train`'s call).
    seen_by_phase : dict, optional
        ``{"generator": n, "mid": m}`` counters to add the samples of each phase to.

    Returns
    -------
    int
        Samples processed, both phases together (the contract of :func:`fuhelpers.fl.local_train`).
    """
    if mask is not None:
        raise ValueError("l2u_local_train does not support masked training")
    params = [p for p in model.parameters() if p.requires_grad]

    def sgd() -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=fed_config.lr, momentum=fed_config.momentum,
                               weight_decay=fed_config.weight_decay)

    phases = (("generator", cfg.generator_terms, sgd()), ("mid", cfg.mid_terms, sgd()))
    batches = _batches(len(data.y), fed_config, generator)
    model.train()
    seen, phase = 0, 0
    while True:
        chunk = list(islice(batches, cfg.inner_steps))
        if not chunk:
            break
        name, terms, opt = phases[phase]
        start = [p.detach().clone() for p in params] if cfg.meta_lr != 1.0 else None
        for idx in chunk:
            xb, yb = data.x[idx].to(device, non_blocking=True), data.y[idx].to(device, non_blocking=True)
            _phase_step(model, opt, xb, yb, terms, cfg, generator)
        if start is not None:
            with torch.no_grad():
                for p, p0 in zip(params, start):
                    p.copy_(p0 + cfg.meta_lr * (p - p0))  # Reptile: theta_0 + eps (theta_k - theta_0), Eqs. 11-12
        n = sum(len(idx) for idx in chunk)
        seen += n
        if seen_by_phase is not None:
            seen_by_phase[name] = seen_by_phase.get(name, 0) + n
        phase = 1 - phase
    return seen


_FLOPS_CACHE: dict[tuple, float] = {}


def loss_flops_per_sample(model: nn.Module, xb: Tensor, yb: Tensor, loss_fn: Callable, key: tuple = ()) -> float:
    """FLOPs of one forward + backward of ``loss_fn(model, xb, yb)`` per sample (cached; run on a copy).

    Like :func:`fuhelpers.cost.train_flops_per_sample`, for losses other than
    a cross-entropy of ``model(x)``; ``key`` names the loss in the cache. The count depends on the batch
    size and on how many classes the batch holds (the prototype loss's products scale with it), so both
    are part of the cache key: the count does not depend on which batch a process happened to see first.
    """
    cache_key = (type(model).__name__, tuple(p.shape for p in model.parameters()), tuple(xb.shape),
                 int(yb.unique().numel()), key)
    if cache_key not in _FLOPS_CACHE:
        probe = copy.deepcopy(model)
        counter = FlopCounterMode(display=False)
        with counter:
            loss_fn(probe, xb, yb).backward()
        _FLOPS_CACHE[cache_key] = counter.get_total_flops() / len(xb)
    return _FLOPS_CACHE[cache_key]


class _L2UTrainer:
    """:func:`l2u_local_train` with the call signature of :func:`fuhelpers.fl.local_train`; counts FLOPs per phase.

    It may train in :class:`fuhelpers.processes.ClientProcesses`' workers: each client gets a :meth:`fresh`
    copy there, and :meth:`merge` adds the copy's FLOPs back, the same total as in one process.
    """

    runs_in_workers = True

    def __init__(self, cfg: L2UConfig):
        self.cfg = cfg
        self.flops = 0.0

    def fresh(self) -> _L2UTrainer:
        return _L2UTrainer(self.cfg)

    def merge(self, other: _L2UTrainer) -> None:
        self.flops += other.flops

    def _phase_flops(self, model, data, fed_config, device, terms) -> float:
        xb = data.x[: fed_config.batch_size].to(device)
        yb = data.y[: fed_config.batch_size].to(device)

        def loss(m, x, y):
            m.train()
            parts = m.parts(x, torch.Generator().manual_seed(0), decode="rec" in terms)
            return _weighted(l2u_terms(parts, x, y, self.cfg, terms), self.cfg)

        return loss_flops_per_sample(model, xb, yb, loss, key=("l2u", tuple(terms)))

    def __call__(self, model, data, fed_config, generator, device, mask=None) -> int:
        counts: dict[str, int] = {}
        seen = l2u_local_train(model, data, self.cfg, fed_config, generator, device, mask, counts)
        for name, terms in (("generator", self.cfg.generator_terms), ("mid", self.cfg.mid_terms)):
            if counts.get(name):
                self.flops += counts[name] * self._phase_flops(model, data, fed_config, device, terms)
        return seen


def train_l2u(
    model: L2UModel,
    clients: Sequence,
    fed_config: FedConfig,
    l2u_config: L2UConfig | None = None,
    *,
    device: torch.device | str | None = None,
    client_ids: Sequence[int] | None = None,
    history: History | None = None,
    evaluate: Callable[[nn.Module], dict] | None = None,
    progress: bool | None = None,
) -> FedResult:
    """Federated L2U training: FedAvg (:func:`fuhelpers.fl.train`) with :func:`l2u_local_train` on every client.

    Everything travels as in FedAvg (all five parts are averaged every
    round); the seeding is :func:`fuhelpers.fl.train`'s, so the same seed on
    CPU gives the same weights.

    Parameters
    ----------
    model : L2UModel
        Initial global model; trained in place and returned in the result.
    clients : sequence of ArrayDataset
    fed_config : FedConfig
        Rounds, local epochs or steps, batch size, optimiser, participation, seed.
    l2u_config : L2UConfig, optional
        Loss weights and Reptile settings (default :class:`L2UConfig`).
    device, client_ids, history, evaluate, progress
        As in :func:`fuhelpers.fl.train`.

    Returns
    -------
    FedResult
        ``cost.flops`` counts each phase's own forward and backward pass
        (measured with ``torch.utils.flop_counter`` on one batch per phase).
    """
    trainer = _L2UTrainer(l2u_config or L2UConfig())
    result = train(model, clients, fed_config, device=device, client_ids=client_ids, history=history,
                   evaluate=evaluate, progress=progress, desc="L2U", local_trainer=trainer)
    result.cost.flops = trainer.flops
    return result
