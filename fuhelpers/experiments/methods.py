"""The one registry of methods: names, labels, what each needs, where it applies, and default options.

A runner takes a :class:`~fuhelpers.experiments.setting.Prepared` run and the method's options
(:data:`DEFAULTS`, updated with ``Setting.options``, then with a :class:`Variant`'s own) and returns an
:class:`~fuhelpers.unlearn.Unlearned`. Every method starts from the same trained model.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import metrics, models
from ..fl import FedConfig
from ..unlearn.foul.l2u import L2UConfig, L2UModel, train_l2u
from ..unlearn import dpul, federaser, finetune, foul, negation, random_reset, retrain, tis
from ..unlearn.base import Unlearned

# Options of each method, the defaults of its chapter (chapter numbers in the comments).
DEFAULTS = {
    "retrain": {},
    "ft": {},                                        # ch. 3: FedAvg from the trained model, recovery rounds
    "random_reset": {},                              # ch. 2: as many entries per layer as TIS resets
    # ch. 5: the paper's (and the released code's) rescaling: stored length, calibrated direction
    "federaser": dict(calibration_epochs=1, interval=1, keep="norm"),
    "federaser_direction": dict(calibration_epochs=1, interval=1, keep="direction"),  # unpublished ablation
    # ch. 2 picks gamma with Retrain's numbers (an oracle); the benchmark fixes it in the paper's range (25-54 %)
    "tis": dict(gamma=0.5, curvature="ggn_exact", retrain_rounds=0),
    "not": dict(layers="first", recovery_lr_scale=1.0),  # ch. 3: negate the first layer, recover like training
    # recovery with a fifth of training's learning rate: at medium scale the chapter's recovery (lr 0.05,
    # momentum 0.9) kills the negated network's ReLUs in its first round (chapter 6, section 6.5)
    "not_gentle": dict(layers="first", recovery_lr_scale=0.2),
    "dpul": dict(vae_epochs=30, recovery_steps=3, head_only=True, vae_batched=False),  # ch. 5 (smoke)
    # ch. 4: classifier on (z_K, z_V), the only one whose predictions FOUL can change
    "foul": dict(kappa=1.5, lr=0.05, num_rounds=20, classifier_input="both",
                 l2u_kwargs=dict(backbone="cnn", width=8, causal_dim=16, noncausal_dim=16)),
}


@dataclass(frozen=True)
class Method:
    """One registered method.

    Attributes
    ----------
    name, label : str
        Key in records, and the name shown in tables.
    needs : str
        What it needs beyond the trained model, in one line.
    run : callable
        ``run(prepared, options) -> Unlearned``.
    module : module
        The :mod:`fuhelpers.unlearn` module implementing it (its ``NEEDS`` names the requirements).
    applies : callable
        ``applies(prepared) -> str | None``: None where the method runs, else why it does not.
    history : bool
        Whether it reads the training history (every client's upload of every round is then recorded).
    source : str
        Where its default options come from.
    uses : tuple of str
        Other methods whose options it reads (a change of theirs changes its result).
    """

    name: str
    label: str
    needs: str
    run: Callable
    module: object
    applies: Callable = lambda p: None
    history: bool = False
    source: str = ""
    uses: tuple = ()

    @property
    def requires(self) -> set[str]:
        """What the implementing module says it needs (``NEEDS``)."""
        return set(self.module.NEEDS)


@dataclass(frozen=True)
class Variant:
    """A registered method under its own name with some options changed (a sweep point, an ablation).

    Attributes
    ----------
    name : str
        Key in records, e.g. ``"tis_g30"``.
    method : str
        Key of :data:`METHODS`.
    options : dict
        Overrides of the method's options.
    label : str, optional
        Shown in tables (default: the method's label with the options).
    where : tuple of str, optional
        The scenarios it runs in (default: every scenario of the experiment).
    """

    name: str
    method: str
    options: dict = field(default_factory=dict)
    label: str = ""
    where: tuple = ()

    def title(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return self.label or f"{METHODS[self.method].label} ({extra})"


def as_variant(entry) -> Variant:
    """A method name or a :class:`Variant`, as a :class:`Variant` (a bare name keeps its options)."""
    if isinstance(entry, Variant):
        if entry.method not in METHODS:
            raise ValueError(f"unknown method {entry.method!r}; known: {list(METHODS)}")
        return entry
    if entry not in METHODS:
        raise ValueError(f"unknown method {entry!r}; known: {list(METHODS)}")
    return Variant(entry, entry, {}, METHODS[entry].label)


def needs_history(entries) -> bool:
    """Whether any of the methods (names or :class:`Variant`) reads the training history."""
    return any(METHODS[as_variant(e).method].history for e in entries)


def options(setting, name: str, variant: Variant | None = None) -> dict:
    """Options method ``name`` runs with under ``setting``: :data:`DEFAULTS`, ``setting.options``, the variant's.

    Parameters
    ----------
    setting : Setting
        The scenario's setting at one scale (``Experiment.setting(scenario, scale)``).
    name : str
        A method of :data:`METHODS` (``"foul"``, ``"dpul"``, ...).
    variant : Variant, optional
        A variant of that method; its options override the others.
    """
    extra = variant.options if variant is not None else {}
    return {**DEFAULTS[name], **setting.options.get(name, {}), **extra}


def run_variant(prepared, entry) -> Unlearned:
    """Run one method (a name or a :class:`Variant`) on the prepared run with its options."""
    v = as_variant(entry)
    return METHODS[v.method].run(prepared, options(prepared.setting, v.method, v))


def per_round(prepared) -> Callable:
    """Cheap per-round evaluation for the curves: forget and test accuracy, ASR for a backdoor, and retain
    accuracy when a whole domain is forgotten (FOUL's Fig. 4a plots forget and retain accuracy).

    The curves use :func:`~fuhelpers.metrics.fast_accuracy` in the setting's precision (bf16 at ``cpu`` and
    ``gpu`` scale: half the time of fp32; on 90-round schedules the curves cost more than the training). The
    final measures of every model are fp32 (:func:`~fuhelpers.experiments.measures.measure`), so a curve's
    last point may differ from them on near-ties.
    """
    fed, req, device = prepared.federation, prepared.request, prepared.device
    forget = fed.forget_data(req)
    retain = fed.retain_data(req) if prepared.scenario == "domain" else None

    def acc(model, data):
        return metrics.fast_accuracy(model, data, precision=prepared.setting.precision, device=device)

    def evaluate(model):
        out = {"forget_acc": acc(model, forget), "test_acc": acc(model, fed.test)}
        if fed.triggered_test is not None:
            out["asr"] = acc(model, fed.triggered_test)   # attack success: triggered images, target labels
        if retain is not None:
            out["retain_acc"] = acc(model, retain)
        return out

    return evaluate


def _retrain(p, o) -> Unlearned:
    cfg = retrain.RetrainConfig(fed=p.fed_config, init_state=p.init_state)
    return retrain.unlearn(p.model, p.federation, p.request, cfg, evaluate=per_round(p), device=p.device)


def _finetune(p, o) -> Unlearned:
    cfg = finetune.FinetuneConfig(fed=p.recovery_config)
    return finetune.unlearn(p.model, p.federation, p.request, cfg, evaluate=per_round(p), device=p.device)


def _tis(p, o) -> Unlearned:
    # optional targeted retraining (TIS App. 2): FedAvg on the retained clients, reset entries only
    again = dict(retrain=trim_config(p, o["retrain_rounds"])) if o["retrain_rounds"] else {}
    cfg = tis.TISConfig(gamma=o["gamma"], curvature=o["curvature"], init_state=p.init_state,
                        scores=tis_scores(p, o["curvature"]), **again)
    out = tis.unlearn(p.model, p.federation, p.request, cfg, evaluate=per_round(p) if again else None,
                      device=p.device)
    out.cost = out.cost + cfg.scores.cost  # the curvature round, computed once per run, charged to every TIS run
    p.cache[("tis", repr(sorted(o.items())))] = out
    return out


def trim_config(p, rounds: int) -> FedConfig:
    """TIS's targeted retraining (App. 2): ``rounds`` FedAvg rounds of the pre-training's local epochs, never a
    step count (a pre-training of many short rounds would otherwise make "one round" a few steps)."""
    return dataclasses.replace(p.fed_config, num_rounds=rounds, local_steps=None)


def tis_scores(p, curvature: str):
    """TIS's per-parameter scores (one curvature round with every client), computed once per run and curvature."""
    key = ("tis_scores", curvature)
    if key not in p.cache:
        cfg = tis.TISConfig(curvature=curvature)
        p.cache[key] = tis.compute_scores(p.model, p.federation, p.request, cfg, device=p.device)
    return p.cache[key]


def _random_reset(p, o) -> Unlearned:
    # as many entries per layer as TIS resets with this run's options (a variant may set gamma), without its
    # targeted retraining; the counts come from TIS's curvature round with every client, which is charged
    o_tis = {**options(p.setting, "tis"), **{k: o[k] for k in ("gamma",) if k in o}, "retrain_rounds": 0}
    reference = p.cache.get(("tis", repr(sorted(o_tis.items())))) or _tis(p, o_tis)
    cfg = random_reset.RandomResetConfig(counts=reference.info["counts"], init_state=p.init_state, seed=p.seed,
                                         counts_cost=reference.info["scoring_cost"])
    out = random_reset.unlearn(p.model, p.federation, p.request, cfg)
    if o.get("retrain_rounds"):  # the TIS paper's "Random Retrained": TIS's targeted retraining of these entries
        again = trim_config(p, o["retrain_rounds"])
        result = tis.targeted_retrain(out.model, p.federation, p.request, out.info["masks"], again,
                                      evaluate=per_round(p), device=p.device)
        out.cost, out.log = out.cost + result.cost, result.log
    return out


def _federaser(p, o) -> Unlearned:
    cfg = federaser.FedEraserConfig(fed=p.fed_config, calibration_epochs=o["calibration_epochs"],
                                    interval=o["interval"], keep=o["keep"])
    return federaser.unlearn(p.model, p.federation, p.request, cfg, p.history, evaluate=per_round(p),
                             device=p.device)


def _negation(p, o) -> Unlearned:
    recovery = dataclasses.replace(p.recovery_config, lr=p.recovery_config.lr * o["recovery_lr_scale"])
    cfg = negation.NegationConfig(layers=o["layers"], recovery=recovery, seed=p.seed,
                                  perturbation=o.get("perturbation", "negate"))  # the ablation's variants set it
    return negation.unlearn(p.model, p.federation, p.request, cfg, evaluate=per_round(p), device=p.device)


def classifier_head(model) -> list[str]:
    """Names of the last layer's parameters (DPUL's default target, like the code's LoRA head)."""
    return [n for n, _ in model.named_parameters() if n.startswith(models.last_layer(model) + ".")]


def _dpul(p, o) -> Unlearned:
    # a variant may stop early (the ablation's stages) or change the paper's lambda, beta or number of slices I
    extra = {k: (tuple(o[k]) if k == "stages" else o[k]) for k in ("stages", "lam", "beta", "num_slices") if k in o}
    cfg = dpul.DPULConfig(vae_epochs=o["vae_epochs"], recovery_steps=o["recovery_steps"], seed=p.seed,
                          params=classifier_head(p.model) if o["head_only"] else None, vae_batched=o["vae_batched"],
                          **extra)
    return dpul.unlearn(p.model, p.federation, p.request, cfg, p.history, evaluate=per_round(p), device=p.device)


def l2u_start(p, o):
    """FOUL's starting point: an L2U model pre-trained with the same FedAvg settings, seeds and clients.

    One per classifier input and architecture in a run (FOUL's variants that differ only in kappa or lr share it).
    """
    key = ("l2u", o["classifier_input"], repr(sorted(o["l2u_kwargs"].items())))
    if key not in p.cache:
        x = p.federation.clients[0].x
        torch.manual_seed(p.seed)
        net = L2UModel(x.shape[1], p.federation.clients[0].num_classes, x.shape[-1],
                       classifier_input=o["classifier_input"], **o["l2u_kwargs"]).to(p.device)
        p.cache[key] = (net, train_l2u(net, p.federation.clients, p.fed_config, L2UConfig(), device=p.device,
                                       progress=False))
    return p.cache[key]


def l2u_start_name(o) -> str:
    """The record's name of FOUL's starting point: ``foul_start``, or ``foul_start_causal`` for C(z_K)."""
    return "foul_start" if o["classifier_input"] == "both" else f"foul_start_{o['classifier_input']}"


def _foul(p, o) -> Unlearned:
    net, learned = l2u_start(p, o)
    cfg = foul.FOULConfig(kappa=o["kappa"], lr=o["lr"], num_rounds=o["num_rounds"], l2u=L2UConfig(), seed=p.seed)
    out = foul.unlearn(net, p.federation, p.request, cfg, evaluate=per_round(p), device=p.device)
    out.info["pretrain_cost"] = learned.cost
    return out


def _needs_server_and_one_client(p) -> str | None:
    if p.history is None:
        return "needs the training history"
    if len(p.request.clients) != 1:
        return "forgets one client per request"
    if p.federation.server is None:
        return "needs a server-side set (Setting.n_server = 0)"
    return None


def _needs_history(p) -> str | None:
    return None if p.history is not None else "needs the training history"


def _domain_only(p) -> str | None:
    return None if p.scenario == "domain" else "needs an L2U model; run in the domain scenario only"


METHODS = {m.name: m for m in [
    Method("retrain", "Retrain", "every retained client, a full FedAvg run from the initial model", _retrain,
           retrain, source="the gold standard of every paper"),
    Method("ft", "FT", "the retained clients for a few FedAvg rounds", _finetune, finetune,
           source="NoT paper's baseline; recovery rounds of the setting"),
    Method("random_reset", "Random Reset", "the initial model, and TIS's curvature round with every client "
           "(it resets as many entries per layer as TIS)", _random_reset, random_reset,
           source="TIS paper, Sec. 6 (control)", uses=("tis",)),
    Method("federaser", "FedEraser", "every client's stored updates; retained clients for calibration rounds "
           "(stored length, calibrated direction, as the paper)", _federaser, federaser, _needs_history,
           history=True, source="FedEraser paper and code (DPUL's baseline)"),
    Method("federaser_direction", "FedEraser (stored direction)",
           "as FedEraser; keeps the stored update's direction with the calibrated length, an unpublished ablation "
           "(the paper and its code keep the length)", _federaser, federaser, _needs_history, history=True,
           source="this book (chapter 5)"),
    Method("tis", "TIS", "one curvature round with every client, the target's data included; the initial model",
           _tis, tis, source="TIS paper: gamma in its 25-54 % range, exact GGN diagonal"),
    Method("not", "NoT", "the retained clients for a few FedAvg rounds", _negation, negation,
           source="NoT paper: negate the first layer, recover with FedAvg"),
    Method("not_gentle", "NoT (lr x 0.2)", "as NoT; recovery with a fifth of training's learning rate", _negation,
           negation, source="this book (chapter 6): a gentler recovery"),
    Method("dpul", "DPUL", "stored global models and the target's uploads, a server-side set; no client",
           _dpul, dpul, _needs_server_and_one_client, history=True, source="DPUL paper; head only, like its code"),
    Method("foul", "FOUL", "L2U pre-training; every client sends gradients of V each round", _foul, foul,
           _domain_only, source="FOUL paper, kappa 1.5"),
]}
