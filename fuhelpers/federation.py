"""The federation: clients' data, the test set, a held-out server set, and unlearning requests.

Retain / forget / test views come from here, so that no chapter rebuilds them::

    fed = Federation.from_partition(train, parts, test)
    request = Request.client(3)                  # forget everything client 3 contributed
    fed.retain_clients(request)                  # per-client datasets FedAvg may still use
    fed.forget_data(request), fed.retain_data(request)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from .data import ArrayDataset

KINDS = ("client", "class", "sample")


@dataclass(frozen=True)
class Request:
    """What is to be forgotten.

    Attributes
    ----------
    kind : {"client", "class", "sample"}
        Client unlearning (all data of ``clients``), categorical unlearning
        (every sample of ``classes`` on every client), or sample unlearning
        (``samples[c]``: local indices on client ``c``).
    clients : tuple of int
        Forgotten clients (``kind="client"``).
    classes : tuple of int
        Forgotten classes (``kind="class"``).
    samples : mapping of int to tuple of int
        Forgotten local indices per client (``kind="sample"``).
    """

    kind: str
    clients: tuple[int, ...] = ()
    classes: tuple[int, ...] = ()
    samples: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown request kind {self.kind!r}; expected one of {KINDS}")
        needed = {"client": self.clients, "class": self.classes, "sample": self.samples}[self.kind]
        if not needed:
            raise ValueError(f"a {self.kind!r} request must name at least one {self.kind}")

    @classmethod
    def client(cls, *clients: int) -> "Request":
        """Forget every sample of ``clients``."""
        return cls("client", clients=tuple(int(c) for c in clients))

    @classmethod
    def for_class(cls, *classes: int) -> "Request":
        """Forget every sample of ``classes``, on every client."""
        return cls("class", classes=tuple(int(k) for k in classes))

    @classmethod
    def for_samples(cls, samples: Mapping[int, Sequence[int]]) -> "Request":
        """Forget the given local sample indices of each client."""
        return cls("sample", samples={int(c): tuple(int(i) for i in idx) for c, idx in samples.items()})

    def involves(self, client: int) -> bool:
        """Whether ``client`` holds data to forget (for class requests: always possibly)."""
        if self.kind == "client":
            return client in self.clients
        if self.kind == "sample":
            return client in self.samples
        return True


def concat(datasets: Sequence[ArrayDataset], classes: list[str] | None = None) -> ArrayDataset:
    """Concatenate datasets with the same sample shape into one."""
    datasets = [d for d in datasets if d is not None]
    if not datasets:
        raise ValueError("nothing to concatenate")
    has_domains = all(d.domains is not None for d in datasets)
    return ArrayDataset(
        x=torch.cat([d.x for d in datasets]),
        y=torch.cat([d.y for d in datasets]),
        classes=classes or datasets[0].classes,
        domains=torch.cat([d.domains for d in datasets]) if has_domains else None,
        domain_names=datasets[0].domain_names if has_domains else None,
    )


@dataclass
class Federation:
    """Clients' datasets, the test set and an optional server-side held-out set.

    Attributes
    ----------
    clients : list of ArrayDataset
        One dataset per client, in client-id order.
    test : ArrayDataset
        Test set, never seen in training.
    server : ArrayDataset, optional
        Small auxiliary set held by the server and disjoint from every client
        (DPUL's recovery data); methods read it through :meth:`server_data`,
        which leaves out the classes a request forgets.
    triggered_test : ArrayDataset, optional
        Triggered test images relabelled to the backdoor target (attack success).
    triggered_test_true : ArrayDataset, optional
        The same images with their true labels (backdoor accuracy).
    client_domains : np.ndarray, optional
        Domain id of each client, for domain-client settings.
    """

    clients: list[ArrayDataset]
    test: ArrayDataset
    server: ArrayDataset | None = None
    triggered_test: ArrayDataset | None = None
    triggered_test_true: ArrayDataset | None = None
    client_domains: np.ndarray | None = None

    @classmethod
    def from_partition(cls, train: ArrayDataset, parts: Sequence[np.ndarray], test: ArrayDataset, **kwargs) -> "Federation":
        """Build a federation from a training set and one index array per client."""
        return cls(clients=[train.subset(p) for p in parts], test=test, **kwargs)

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.clients)

    @property
    def sizes(self) -> list[int]:
        """Samples per client."""
        return [len(c) for c in self.clients]

    @property
    def classes(self) -> list[str]:
        """Class names."""
        return self.test.classes

    def _check(self, request: Request) -> None:
        bad = [c for c in (*request.clients, *request.samples) if not 0 <= c < self.num_clients]
        if bad:
            raise ValueError(f"request names clients {bad}, but the federation has clients 0..{self.num_clients - 1}")
        bad_cls = [k for k in request.classes if not 0 <= k < len(self.classes)]
        if bad_cls:
            raise ValueError(f"request names classes {bad_cls}, but there are {len(self.classes)} classes")

    def forget_mask(self, client: int, request: Request) -> torch.Tensor:
        """Bool mask over ``client``'s samples: True where the sample is to be forgotten."""
        self._check(request)
        data = self.clients[client]
        mask = torch.zeros(len(data), dtype=torch.bool)
        if request.kind == "client" and client in request.clients:
            mask[:] = True
        elif request.kind == "class":
            mask = torch.isin(data.y, torch.tensor(request.classes))
        elif request.kind == "sample" and client in request.samples:
            mask[list(request.samples[client])] = True
        return mask

    def retain_clients(self, request: Request) -> tuple[list[ArrayDataset], list[int]]:
        """Per-client retained datasets and their client ids, dropping clients left empty.

        This is what Retrain and fine-tuning train on.
        """
        datasets, ids = [], []
        for c, data in enumerate(self.clients):
            keep = ~self.forget_mask(c, request)
            if keep.any():
                datasets.append(data.subset(torch.nonzero(keep).flatten().numpy()))
                ids.append(c)
        return datasets, ids

    def retain_data(self, request: Request) -> ArrayDataset:
        """All retained training samples, pooled."""
        return concat(self.retain_clients(request)[0], self.classes)

    def forget_data(self, request: Request) -> ArrayDataset:
        """All training samples to forget, pooled."""
        parts = []
        for c, data in enumerate(self.clients):
            mask = self.forget_mask(c, request)
            if mask.any():
                parts.append(data.subset(torch.nonzero(mask).flatten().numpy()))
        if not parts:
            raise ValueError(f"the request {request} matches no training sample")
        return concat(parts, self.classes)

    def forgotten_classes(self, request: Request) -> list[int]:
        """Classes that the request removes from the training data altogether.

        For a class request, its classes. For client and sample requests, the classes
        that occur in the forgotten data and in no retained sample (e.g. the exclusive
        class of the forgotten client in the categorical setting).
        """
        if request.kind == "class":
            return sorted(int(k) for k in request.classes)
        forgotten = set(self.forget_data(request).y.unique().tolist())
        retained = {k for data in self.retain_clients(request)[0] for k in data.y.unique().tolist()}
        return sorted(int(k) for k in forgotten - retained)

    def server_data(self, request: Request) -> ArrayDataset | None:
        """The server set as a method may use it for ``request``: it never holds what the request forgets.

        Its samples are disjoint from every client's by construction; here the samples of
        :meth:`forgotten_classes` are dropped as well, so that, e.g., DPUL's recovery cannot
        teach a forgotten class again. Returns ``server`` itself when nothing is dropped, and
        None without a server set.
        """
        if self.server is None:
            return None
        dropped = self.forgotten_classes(request)
        if not dropped:
            return self.server
        held = ~torch.isin(self.server.y, torch.tensor(dropped))
        return self.server.subset(torch.nonzero(held).flatten().numpy())

    def test_split(self, request: Request) -> tuple[ArrayDataset, ArrayDataset | None]:
        """Test samples of retained classes and of forgotten classes (class requests only).

        For client and sample requests the whole test set is returned with ``None``.
        """
        if request.kind != "class":
            return self.test, None
        forgotten = torch.isin(self.test.y, torch.tensor(request.classes))
        return (
            self.test.subset(torch.nonzero(~forgotten).flatten().numpy()),
            self.test.subset(torch.nonzero(forgotten).flatten().numpy()),
        )
