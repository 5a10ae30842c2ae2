"""Split a centralised data set across federated clients.

Every scheme takes an array of labels (or domain ids) and returns one sorted
``int64`` index array per client. The parts are disjoint, together they cover
every sample, and no part is empty. All randomness comes from the ``seed``
argument (an ``int`` or a ``numpy.random.Generator``), so the same call gives
the same split.

Schemes
-------
``iid``
    Uniformly random split (McMahan et al., 2017).
``dirichlet``
    Per-class Dirichlet label skew (Hsu et al., 2019; as in FedLab / NIID-Bench).
``preferential``
    Shared classes split evenly, plus one exclusive class per client
    (TIS paper, Sec. 6.1).
``shards``
    Pathological non-IID split into label-sorted shards (McMahan et al., 2017).
``by_domain``
    One or more clients per domain, e.g. PACS or Digits-Five.

References
----------
McMahan, Moore, Ramage, Hampson, Agüera y Arcas (2017). Communication-efficient
learning of deep networks from decentralized data. AISTATS.
Hsu, Qi, Brown (2019). Measuring the effects of non-identical data distribution
for federated visual classification. arXiv:1909.06335.
Li, Diao, Chen, He (2022). Federated learning on non-IID data silos: an
experimental study (NIID-Bench). ICDE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

SeedLike = int | np.random.Generator

__all__ = [
    "SCHEMES",
    "by_domain",
    "class_counts",
    "client_domains",
    "dirichlet",
    "iid",
    "partition",
    "plot_partition",
    "preferential",
    "shards",
]


# ---------------------------------------------------------------- validation


def _rng(seed: SeedLike) -> np.random.Generator:
    """Turn an ``int`` seed or a ``Generator`` into a ``Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise ValueError(f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}")


def _as_label_array(labels: ArrayLike, what: str = "labels") -> np.ndarray:
    """Validate a 1-D array of non-negative integer ids (numpy, list or CPU tensor)."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{what} must not be empty")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{what} must be non-negative, got minimum {array.min()}")
    return array.astype(np.int64, copy=False)


def _check_num_clients(num_clients: int, num_samples: int) -> None:
    if not isinstance(num_clients, (int, np.integer)) or isinstance(num_clients, bool):
        raise ValueError(f"num_clients must be an int, got {type(num_clients).__name__}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > num_samples:
        raise ValueError(f"more clients ({num_clients}) than samples ({num_samples})")


def _finalise(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Sort each part, cast to int64 and refuse empty clients."""
    empty = [c for c, part in enumerate(parts) if len(part) == 0]
    if empty:
        raise ValueError(f"clients {empty} would end up with no samples")
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def _deal_round_robin(order: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Client ``c`` gets ``order[c], order[c + C], ...``.

    Any contiguous block of ``order`` is thereby split into counts that differ
    by at most one, so dealing a class-sorted order balances every class.
    """
    return [order[c::num_clients] for c in range(num_clients)]


# ---------------------------------------------------------------- schemes


def iid(labels: ArrayLike, num_clients: int, *, seed: SeedLike = 0) -> list[np.ndarray]:
    """Uniformly random split into parts whose sizes differ by at most one.

    The IID baseline of McMahan et al. (2017): every client's label
    distribution matches the global one up to sampling noise.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class labels; only their number is used.
    num_clients : int
        Number of clients, ``1 <= num_clients <= N``.
    seed : int or numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.
    """
    labels = _as_label_array(labels)
    _check_num_clients(num_clients, len(labels))
    shuffled = _rng(seed).permutation(len(labels))
    return _finalise(np.array_split(shuffled, num_clients))


def _dirichlet_once(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """One draw: each class is cut among clients by proportions ~ Dir(alpha)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    return [np.concatenate(chunks) for chunks in parts]


def dirichlet(
    labels: ArrayLike,
    num_clients: int,
    alpha: float,
    *,
    seed: SeedLike = 0,
    min_size: int = 1,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Label skew: each class is divided among clients by Dirichlet(alpha) proportions.

    For every class ``k`` a vector ``p_k ~ Dir(alpha, ..., alpha)`` over the
    clients is drawn and the samples of class ``k`` are cut in these
    proportions (Hsu et al., 2019, in the per-class form used by FedLab's
    ``hetero_dir_partition`` and NIID-Bench). Small ``alpha`` (e.g. 0.1) gives
    clients dominated by a few classes; large ``alpha`` (e.g. 100) approaches
    IID. Unlike NIID-Bench we do not stop giving samples to clients that are
    already above the average size, so client sizes vary too. Draws in which a
    client gets fewer than ``min_size`` samples are rejected and redrawn.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class labels.
    num_clients : int
        Number of clients.
    alpha : float
        Dirichlet concentration, ``> 0``.
    seed : int or numpy.random.Generator
        Source of randomness.
    min_size : int
        Smallest acceptable client size, ``>= 1``.
    max_tries : int
        Number of draws before giving up, ``>= 1``.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.

    Raises
    ------
    ValueError
        On invalid arguments, or if no draw within ``max_tries`` gives every
        client at least ``min_size`` samples.
    """
    labels = _as_label_array(labels)
    _check_num_clients(num_clients, len(labels))
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite number, got {alpha}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if min_size * num_clients > len(labels):
        raise ValueError(
            f"cannot give {num_clients} clients {min_size} samples each from {len(labels)} samples"
        )
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    rng = _rng(seed)
    for _ in range(max_tries):
        parts = _dirichlet_once(labels, num_clients, alpha, rng)
        if min(len(part) for part in parts) >= min_size:
            return _finalise(parts)
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw in {max_tries} tries gave every client "
        f">= {min_size} samples; increase alpha or max_tries, or lower min_size"
    )


def preferential(
    labels: ArrayLike,
    num_clients: int,
    *,
    exclusive_classes: Sequence[int] | None = None,
    seed: SeedLike = 0,
) -> list[np.ndarray]:
    """Shared classes split evenly among all clients, plus one exclusive class per client.

    The "preferential" split of the TIS paper (Sec. 6.1): with ten classes and
    five clients, "the samples of five classes were distributed evenly among
    the five clients, while for each of the remaining five classes, all the
    samples were assigned to a different client". Client ``c`` receives every
    sample of class ``exclusive_classes[c]``; each other class is shuffled and
    dealt out so that client counts differ by at most one per class.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class labels.
    num_clients : int
        Number of clients, at most the number of distinct classes.
    exclusive_classes : sequence of int, optional
        ``num_clients`` distinct class labels present in ``labels``; client
        ``c`` owns ``exclusive_classes[c]``. Default: the last ``num_clients``
        classes in sorted order.
    seed : int or numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.
    """
    labels = _as_label_array(labels)
    _check_num_clients(num_clients, len(labels))
    classes = np.unique(labels)
    if num_clients > len(classes):
        raise ValueError(
            f"preferential needs num_clients <= number of classes, got {num_clients} > {len(classes)}"
        )
    exclusive = _check_exclusive_classes(exclusive_classes, classes, num_clients)
    rng = _rng(seed)
    shared = np.setdiff1d(classes, exclusive)
    order = np.concatenate(
        [np.empty(0, dtype=np.int64)]
        + [rng.permutation(np.flatnonzero(labels == cls)) for cls in shared]
    )
    parts = _deal_round_robin(order, num_clients)
    parts = [
        np.concatenate([part, np.flatnonzero(labels == cls)]) for part, cls in zip(parts, exclusive)
    ]
    return _finalise(parts)


def _check_exclusive_classes(
    exclusive_classes: Sequence[int] | None, classes: np.ndarray, num_clients: int
) -> np.ndarray:
    if exclusive_classes is None:
        return classes[-num_clients:]
    exclusive = np.asarray(exclusive_classes, dtype=np.int64)
    if exclusive.shape != (num_clients,):
        raise ValueError(
            f"exclusive_classes must list one class per client ({num_clients}), got {exclusive.tolist()}"
        )
    if len(np.unique(exclusive)) != num_clients:
        raise ValueError(f"exclusive_classes must be distinct, got {exclusive.tolist()}")
    missing = np.setdiff1d(exclusive, classes)
    if missing.size:
        raise ValueError(f"exclusive_classes {missing.tolist()} do not occur in labels")
    return exclusive


def shards(
    labels: ArrayLike, num_clients: int, shards_per_client: int = 2, *, seed: SeedLike = 0
) -> list[np.ndarray]:
    """Pathological non-IID split: label-sorted shards dealt out at random.

    McMahan et al. (2017) sort the data by label, cut it into
    ``num_clients * shards_per_client`` equal shards and give every client
    ``shards_per_client`` random shards, so most clients see only that many
    classes. Samples with equal labels are shuffled before cutting.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class labels.
    num_clients : int
        Number of clients.
    shards_per_client : int
        Shards per client, ``>= 1``.
    seed : int or numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.
    """
    labels = _as_label_array(labels)
    _check_num_clients(num_clients, len(labels))
    if shards_per_client < 1:
        raise ValueError(f"shards_per_client must be >= 1, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ValueError(f"more shards ({num_shards}) than samples ({len(labels)})")
    rng = _rng(seed)
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shard_list = np.array_split(by_label, num_shards)
    shard_owner = rng.permutation(num_shards) % num_clients
    parts = [
        np.concatenate([shard for shard, owner in zip(shard_list, shard_owner) if owner == c])
        for c in range(num_clients)
    ]
    return _finalise(parts)


def _clients_per_domain(
    clients_per_domain: int | Sequence[int] | None, num_clients: int, num_domains: int
) -> np.ndarray:
    """How many clients each domain gets, validated against ``num_clients``."""
    if clients_per_domain is None:
        if num_clients < num_domains:
            raise ValueError(
                f"by_domain needs num_clients >= number of domains, got {num_clients} < {num_domains}"
            )
        base, extra = divmod(num_clients, num_domains)
        return np.array([base + (d < extra) for d in range(num_domains)], dtype=np.int64)
    if np.isscalar(clients_per_domain):
        counts = np.full(num_domains, clients_per_domain, dtype=np.int64)
    else:
        counts = np.asarray(clients_per_domain, dtype=np.int64)
        if counts.shape != (num_domains,):
            raise ValueError(
                f"clients_per_domain must have one entry per domain ({num_domains}), "
                f"got {counts.tolist()}"
            )
    if counts.min() < 1:
        raise ValueError(f"clients_per_domain must be >= 1 for every domain, got {counts.tolist()}")
    if counts.sum() != num_clients:
        raise ValueError(
            f"clients_per_domain {counts.tolist()} sums to {counts.sum()}, not num_clients={num_clients}"
        )
    return counts


def by_domain(
    domains: ArrayLike,
    num_clients: int,
    *,
    clients_per_domain: int | Sequence[int] | None = None,
    seed: SeedLike = 0,
) -> list[np.ndarray]:
    """Feature-skew split: every client holds samples of a single domain.

    The usual multi-domain federated setting (e.g. PACS or Digits-Five in
    FedBN, Li et al., 2021): domains are assigned to clients and, where a
    domain has several clients, its samples are split among them uniformly at
    random. Clients are ordered by domain id; use :func:`client_domains` to
    recover which domain each client holds.

    Parameters
    ----------
    domains : array-like of int, shape (N,)
        Domain id of every sample.
    num_clients : int
        Number of clients, at least the number of distinct domains.
    clients_per_domain : int or sequence of int, optional
        Clients per domain (one int for all, or one entry per distinct domain
        in sorted order); must add up to ``num_clients``. Default: spread
        ``num_clients`` as evenly as possible, lower domain ids first.
    seed : int or numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.

    References
    ----------
    Li, Jiang, Zhang, Kamp, Dou (2021). FedBN: federated learning on non-IID
    features via local batch normalization. ICLR.
    """
    domains = _as_label_array(domains, what="domains")
    _check_num_clients(num_clients, len(domains))
    domain_ids = np.unique(domains)
    counts = _clients_per_domain(clients_per_domain, num_clients, len(domain_ids))
    rng = _rng(seed)
    parts: list[np.ndarray] = []
    for domain, count in zip(domain_ids, counts):
        members = np.flatnonzero(domains == domain)
        if count > len(members):
            raise ValueError(f"domain {domain} has {len(members)} samples but {count} clients")
        parts.extend(members[part] for part in iid(members, int(count), seed=rng))
    return _finalise(parts)


def client_domains(domains: ArrayLike, parts: Sequence[np.ndarray]) -> np.ndarray:
    """The domain id held by each client of a :func:`by_domain` partition.

    Parameters
    ----------
    domains : array-like of int, shape (N,)
        Domain id of every sample.
    parts : sequence of numpy.ndarray
        One non-empty index array per client.

    Returns
    -------
    numpy.ndarray of int64, shape (num_clients,)

    Raises
    ------
    ValueError
        If a client is empty or holds samples from more than one domain.
    """
    domains = _as_label_array(domains, what="domains")
    owners = []
    for client, part in enumerate(parts):
        present = np.unique(domains[np.asarray(part, dtype=np.int64)])
        if len(present) != 1:
            raise ValueError(f"client {client} holds domains {present.tolist()}, expected exactly one")
        owners.append(present[0])
    return np.array(owners, dtype=np.int64)


# ---------------------------------------------------------------- dispatcher

SCHEMES: dict[str, Callable[..., list[np.ndarray]]] = {
    "iid": iid,
    "dirichlet": dirichlet,
    "preferential": preferential,
    "shards": shards,
    "by_domain": by_domain,
}


def partition(
    labels: ArrayLike, num_clients: int, scheme: str = "iid", *, seed: SeedLike = 0, **kwargs
) -> list[np.ndarray]:
    """Split sample indices among clients with the named scheme.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class labels (for ``"by_domain"``: domain ids).
    num_clients : int
        Number of clients.
    scheme : str
        One of ``"iid"``, ``"dirichlet"``, ``"preferential"``, ``"shards"``,
        ``"by_domain"``.
    seed : int or numpy.random.Generator
        Source of randomness.
    **kwargs
        Scheme-specific arguments, e.g. ``alpha`` for ``"dirichlet"``.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` sorted ``int64`` index arrays.

    Examples
    --------
    >>> parts = partition(labels, 10, "dirichlet", alpha=0.5, seed=1)  # doctest: +SKIP
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; known schemes: {', '.join(sorted(SCHEMES))}")
    return SCHEMES[scheme](labels, num_clients, seed=seed, **kwargs)


# ---------------------------------------------------------------- inspection


def class_counts(
    labels: ArrayLike, parts: Sequence[np.ndarray], num_classes: int | None = None
) -> np.ndarray:
    """Number of samples of each class held by each client.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class labels.
    parts : sequence of numpy.ndarray
        One index array per client.
    num_classes : int, optional
        Number of columns; default ``max(labels) + 1``.

    Returns
    -------
    numpy.ndarray of int64, shape (num_clients, num_classes)
    """
    labels = _as_label_array(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if num_classes <= labels.max():
        raise ValueError(f"num_classes={num_classes} but labels go up to {labels.max()}")
    rows = [np.bincount(labels[np.asarray(part, dtype=np.int64)], minlength=num_classes) for part in parts]
    return np.array(rows, dtype=np.int64).reshape(len(rows), num_classes)


def plot_partition(
    labels: ArrayLike,
    parts: Sequence[np.ndarray],
    ax=None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
):
    """Stacked horizontal bar chart of the class counts of every client.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class labels.
    parts : sequence of numpy.ndarray
        One index array per client.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is created if omitted.
    class_names : sequence of str, optional
        Legend entries, one per class (default ``"0"``, ``"1"``, ...).
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
        One bar per client (y axis), one coloured segment per class.
    """
    import matplotlib  # imported here so that partitioning never needs a plotting backend

    counts = class_counts(labels, parts)
    num_clients, num_classes = counts.shape
    if class_names is None:
        class_names = [str(k) for k in range(num_classes)]
    if len(class_names) < num_classes:
        raise ValueError(f"need {num_classes} class_names, got {len(class_names)}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 0.35 * num_clients + 1.2))
    colours = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    clients = np.arange(num_clients)
    left = np.zeros(num_clients)
    for k in range(num_classes):
        ax.barh(clients, counts[:, k], left=left, color=colours(k % colours.N), label=class_names[k])
        left += counts[:, k]
    ax.set_yticks(clients, [f"client {c}" for c in clients])
    ax.invert_yaxis()  # client 0 on top
    ax.set_xlabel("samples")
    ax.legend(title="class", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax
