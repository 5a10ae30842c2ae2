"""The shared setting: data, partition, model and FedAvg pre-training, the same for every method.

A :class:`Setting` says what every method of one scenario shares; :func:`prepare`
turns it into a :class:`Prepared` run (the federation, the request, the trained
original model with its history) for one seed. Every experiment, the chapters'
and the benchmark's, is built from settings (:mod:`fuhelpers.experiments.registry`).
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import data, models, partition, scenarios
from ..scenarios import FORGETTING_METRIC, SCENARIOS
from ..cost import Cost
from ..device import resolve_device
from ..federation import Federation, Request
from ..fl import FedConfig, train
from ..history import History
from ..precision import effective_precision

@dataclass(frozen=True)
class Setting:
    """What every method of one scenario shares (defaults: the benchmark's smoke scale).

    Attributes
    ----------
    dataset : str
        A :func:`fuhelpers.data.load_dataset` name, or ``"rotated_mnist"`` (domains are rotations, FOUL's
        smoke setting). Without it here, the first available of MNIST, mnist5k and digits is used.
    n_train, n_test : int or None
        Samples drawn (stratified, seeded) from the training and test pools; None: all.
    n_server : int
        Samples held out from the training pool for the server (DPUL's auxiliary set); 0: none. Samples of
        a class the request removes altogether (the categorical scenario's class) are then dropped from it,
        so the server set may end up smaller (:meth:`fuhelpers.federation.Federation.server_data`).
    test_seed_offset : int
        The test subsample is drawn with ``seed + test_seed_offset``.
    num_clients, target_client : int, int or "largest"
        Clients, and the one that asks to be forgotten ("largest": the client with most samples).
    alpha, poison_fraction, backdoor_target, split
        Passed to :func:`fuhelpers.scenarios.build` (Dirichlet alpha, backdoor settings, partition override).
    angles, forget_domain, test_fraction
        Domain scenario: the rotations (rotated MNIST), the domain whose clients are forgotten, and the
        test share of PACS.
    arch, arch_kwargs
        :func:`fuhelpers.models.model_for` arguments.
    num_rounds, local_epochs, local_steps, lr, batch_size
        FedAvg pre-training (and Retrain, which repeats it without the target); ``local_steps``, when set,
        replaces the local epochs by that many SGD steps per client and round.
    precision : {"fp32", "bf16", "fp16"}
        Arithmetic of every FedAvg loop of the experiment (:class:`fuhelpers.fl.FedConfig`); fp32 is
        the reference, bf16 the fast path of the ``cpu`` and ``gpu`` scales, run as fp32 on a device that
        only emulates bf16 (:meth:`on`).
    recovery_rounds, recovery_seed_offset
        FedAvg rounds of FT and NoT's recovery, seeded with ``seed + recovery_seed_offset``.
    audit_refs, audit_pairs : int, int or None
        The per-example privacy audit (:mod:`fuhelpers.audit`): reference federations (0: no audit; an even
        number >= 4) and at most how many forgotten and held-out samples it scores each.
    history_dir : str, optional
        Keep the training history on disk (``"temp"``: a temporary folder) instead of in memory.
    options : dict
        Per-method overrides of :data:`fuhelpers.experiments.methods.DEFAULTS`, e.g. ``{"tis": {"gamma": 0.4}}``.
    """

    dataset: str = "fashion_mnist"
    n_train: int | None = 1000
    n_test: int | None = 500
    n_server: int = 100
    test_seed_offset: int = 0
    num_clients: int = 5
    target_client: int | str = 0
    alpha: float = 0.5
    poison_fraction: float = 0.5
    backdoor_target: int = 9
    split: str | None = None
    angles: tuple = (0, 30, 60, 90)
    forget_domain: int = 3
    test_fraction: float = 0.2
    arch: str = "mnist_cnn"
    arch_kwargs: dict = field(default_factory=lambda: dict(width=(8, 16), hidden=32))
    num_rounds: int = 8
    local_epochs: int = 2
    local_steps: int | None = None
    lr: float = 0.05
    batch_size: int = 32
    precision: str = "fp32"
    recovery_rounds: int = 3
    recovery_seed_offset: int = 1000
    audit_refs: int = 0
    audit_pairs: int | None = None
    history_dir: str | None = None
    options: dict = field(default_factory=dict)

    def fed_config(self, seed: int) -> FedConfig:
        """FedAvg of the pre-training (and of Retrain)."""
        return FedConfig(num_rounds=self.num_rounds, local_epochs=self.local_epochs, local_steps=self.local_steps,
                         lr=self.lr, batch_size=self.batch_size, seed=seed, precision=self.precision)

    def on(self, device) -> Setting:
        """This setting with the arithmetic ``device`` affords: bf16 becomes fp32 where it is emulated.

        See :func:`fuhelpers.precision.effective_precision`; returns ``self`` when nothing changes.
        """
        precision = effective_precision(self.precision, resolve_device(device))
        return self if precision == self.precision else dataclasses.replace(self, precision=precision)

    def recovery_config(self, seed: int) -> FedConfig:
        """FedAvg of FT and of NoT's recovery: fewer rounds, their own seed."""
        return dataclasses.replace(self.fed_config(seed), num_rounds=self.recovery_rounds,
                                   seed=seed + self.recovery_seed_offset)


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {list(SCENARIOS)}")


@dataclass
class Prepared:
    """One scenario and seed, ready for unlearning: every method starts from ``model``.

    Attributes
    ----------
    scenario, seed
    setting : Setting
        The setting as run: with fp32 in place of bf16 on a device that emulates bf16 (:meth:`Setting.on`).
    federation, request
        The clients (and server set) and what to forget.
    target : ArrayDataset
        Where ``target_acc`` is measured (e.g. test samples of the forgotten class).
    mia_federation : Federation
        The federation whose test set supplies the membership attack's non-members (the forgotten
        domain's test samples in the domain scenario, else ``federation`` itself). In the domain scenario
        the attack is calibrated on retain samples (other domains) against forgotten-domain test samples,
        so its fitted threshold, and with it ``mia_acc``, also learns the shift between domains (``mia_auc``
        does not depend on it; see ``_domain_task``).
    model, init_state, history, pretrain_cost
        The trained original model, its initial state, the training history (or None) and what
        pre-training cost.
    device : torch.device
    cache : dict
        Results methods share within this run (e.g. TIS's masks, reused by Random Reset).
    """

    scenario: str
    seed: int
    setting: Setting
    federation: Federation
    request: Request
    target: data.ArrayDataset
    mia_federation: Federation
    model: nn.Module
    init_state: dict
    history: History | None
    pretrain_cost: Cost
    device: torch.device
    cache: dict = field(default_factory=dict)

    @property
    def fed_config(self) -> FedConfig:
        return self.setting.fed_config(self.seed)

    @property
    def recovery_config(self) -> FedConfig:
        return self.setting.recovery_config(self.seed)

    @property
    def forgetting_metric(self) -> str:
        return FORGETTING_METRIC[self.scenario]

    def new_model(self) -> nn.Module:
        """The architecture of ``model`` with the run's initial parameters."""
        net = copy.deepcopy(self.model)
        net.load_state_dict(self.init_state)
        return net


def load_split(setting: Setting, seed: int):
    """Training set, test set and server set (or None) of ``setting`` for ``seed``.

    The training pool is subsampled to ``n_train + n_server`` (seeded); with a server set, a seeded
    permutation sends ``n_server`` of those samples to the server and the rest to the clients.
    """
    train_pool, test_pool = _pools(setting, seed)
    n_pool = (setting.n_train or len(train_pool) - setting.n_server) + setting.n_server
    pool = data.subsample(train_pool, n_pool, seed=seed) if n_pool < len(train_pool) else train_pool
    server = None
    if setting.n_server:
        order = np.random.default_rng(seed).permutation(len(pool))
        pool, server = pool.subset(order[setting.n_server:]), pool.subset(order[:setting.n_server])
    if setting.dataset == "rotated_mnist":
        return pool, test_pool, server  # subsampled and rotated in _pools
    test = test_pool if setting.n_test is None else data.subsample(test_pool, setting.n_test,
                                                                 seed=seed + setting.test_seed_offset)
    return pool, test, server


def _pools(setting: Setting, seed: int):
    if setting.dataset == "pacs":
        pool = data.load_dataset("pacs", "all")
        strata = pool.domains.numpy() * pool.num_classes + pool.y.numpy()  # every (domain, class) split alike
        train_idx, test_idx = data.stratified_split_indices(strata, setting.test_fraction, seed=seed)
        return pool.subset(train_idx), pool.subset(test_idx)
    if setting.dataset == "rotated_mnist":  # FOUL's smoke setting: rotation angles are the domains
        _, train_pool, test_pool = data.load_default(prefer=data.MNIST_LIKE)
        train = data.subsample(train_pool, setting.n_train, seed=seed) if setting.n_train else train_pool
        test = data.subsample(test_pool, setting.n_test, seed=seed) if setting.n_test else test_pool
        return (data.rotated_mnist(train, setting.angles, seed=seed),
                data.rotated_mnist(test, setting.angles, seed=seed + 1))
    _, train_pool, test_pool = data.load_default(prefer=(setting.dataset, *data.MNIST_LIKE))
    return train_pool, test_pool


def build_task(scenario: str, setting: Setting, seed: int):
    """Federation, request, target data and MIA federation of ``scenario`` (no training)."""
    _check_scenario(scenario)
    train_set, test_set, server = load_split(setting, seed)
    if scenario == "domain":
        return _domain_task(setting, train_set, test_set, seed)
    kwargs = dict(num_clients=setting.num_clients, seed=seed, alpha=setting.alpha,
                  poison_fraction=setting.poison_fraction, backdoor_target=setting.backdoor_target,
                  split=setting.split)
    target = setting.target_client
    if target == "largest":  # the same partition for any target; pick the client holding most samples
        target = int(np.argmax(scenarios.build(scenario, train_set, test_set, target_client=0,
                                               **kwargs).federation.sizes))
    sc = scenarios.build(scenario, train_set, test_set, target_client=int(target), **kwargs)
    sc.federation.server = server
    # the server set never holds what the request forgets (categorical: the target's exclusive class)
    sc.federation.server = sc.federation.server_data(sc.request)
    return sc.federation, sc.request, sc.target, sc.federation


def _domain_task(setting: Setting, train_set, test_set, seed: int):
    """The domain scenario (FOUL's): every client of one domain is forgotten.

    Known limitation of its membership attack. :func:`fuhelpers.metrics.evaluate` fits the attack on
    retain samples against one half of its non-member pool and scores forget samples against the other
    half. Here every client of the forgotten domain is forgotten, so no retained sample comes from that
    domain: the calibration pair is retain samples of the *other* domains against *forgotten-domain*
    test samples, and the fitted threshold learns the loss shift between domains as well as membership.
    ``mia_acc``, which uses that threshold, is biased by an amount that depends on each model's domain
    shift. ``mia_auc`` and ``mia_tpr_1pct`` are not: the attack has one feature (the log-loss), the
    fitted logistic regression is monotone in it, and AUC and TPR depend only on how the scored samples
    rank (forget samples against forgotten-domain test samples, both of one domain), as long as the fit
    keeps the slope's sign (lower loss, more likely a member). The benchmark's derived scores therefore
    use ``mia_auc``; the pairing is kept so that the attack is computed exactly as in chapter 4.
    """
    from ..unlearn.foul import forget_domain  # the request FOUL defines: every client of one domain

    domains = train_set.domains.numpy()
    parts = partition.by_domain(domains, setting.num_clients, seed=seed)
    fed = Federation.from_partition(train_set, parts, test_set,
                                    client_domains=partition.client_domains(domains, parts))
    request = forget_domain(fed, setting.forget_domain)
    same_domain = np.flatnonzero(test_set.domains.numpy() == setting.forget_domain)
    mia_fed = dataclasses.replace(fed, test=test_set.subset(same_domain))  # non-members of the same domain
    return fed, request, fed.forget_data(request), mia_fed


def prepare(scenario: str, setting: Setting, seed: int, *, record_history: bool = True, device=None) -> Prepared:
    """Build the task and pre-train the original model with FedAvg (the start of every method).

    Parameters
    ----------
    scenario : str
        One of :data:`SCENARIOS`.
    setting : Setting
    seed : int
        Seeds the data draw, the partition, the initial model and FedAvg.
    record_history : bool
        Keep every client's upload of every round (FedEraser and DPUL need it).
    device : torch.device or str, optional
        Default: the model's (CPU); pass ``fuhelpers.try_gpu()`` for a GPU. Where it only emulates the
        setting's bf16, the run uses fp32, with a warning, and the returned ``setting`` says so (:meth:`Setting.on`).
    """
    fed, request, target, mia_fed = build_task(scenario, setting, seed)
    device = resolve_device(device)
    asked, setting = setting, setting.on(device)
    if setting is not asked:
        warnings.warn(f"{asked.precision} is emulated on this device ({device}), several times slower than "
                      f"{setting.precision}: running {setting.precision}; trained models differ from a "
                      f"{asked.precision} run's as another CPU's do (within the seed spread)", stacklevel=2)
    torch.manual_seed(seed)
    net = models.model_for(fed.clients[0], setting.arch, **setting.arch_kwargs).to(device)
    init_state = copy.deepcopy(net.state_dict())
    history = History(record_clients="all", directory=setting.history_dir) if record_history else None
    result = train(net, fed.clients, setting.fed_config(seed), history=history, device=device, progress=False,
                   desc="Original")
    return Prepared(scenario, seed, setting, fed, request, target, mia_fed, net, init_state, history,
                    result.cost, device)
