"""Tests for fuhelpers.partition: validity, determinism and the skew each scheme promises."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fuhelpers.partition import (  # noqa: E402
    by_domain,
    class_counts,
    client_domains,
    dirichlet,
    iid,
    partition,
    plot_partition,
    preferential,
    shards,
)

NUM_CLIENTS = 5


def shuffled_labels(per_class, seed=0):
    """Labels with ``per_class[k]`` samples of class ``k``, in random order."""
    labels = np.repeat(np.arange(len(per_class)), per_class)
    return np.random.default_rng(seed).permutation(labels)


LABELS = shuffled_labels([60] * 10)
DOMAINS = np.arange(len(LABELS)) % 3

# (scheme, array it splits, scheme-specific kwargs)
CASES = [
    ("iid", LABELS, {}),
    ("dirichlet", LABELS, {"alpha": 0.5}),
    ("preferential", LABELS, {}),
    ("shards", LABELS, {"shards_per_client": 2}),
    ("by_domain", DOMAINS, {}),
]
CASE_IDS = [case[0] for case in CASES]


def assert_valid_partition(parts, num_samples, num_clients):
    assert len(parts) == num_clients
    for part in parts:
        assert isinstance(part, np.ndarray) and part.dtype == np.int64
        assert len(part) > 0
        assert np.all(np.diff(part) > 0), "each part must be sorted without duplicates"
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_samples))


def same_parts(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def label_distributions(labels, parts):
    counts = class_counts(labels, parts).astype(float)
    return counts / counts.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- every scheme


@pytest.mark.parametrize("scheme, array, kwargs", CASES, ids=CASE_IDS)
def test_parts_are_disjoint_complete_and_non_empty(scheme, array, kwargs):
    parts = partition(array, NUM_CLIENTS, scheme, seed=0, **kwargs)
    assert_valid_partition(parts, len(array), NUM_CLIENTS)


@pytest.mark.parametrize("scheme, array, kwargs", CASES, ids=CASE_IDS)
def test_same_seed_gives_same_parts(scheme, array, kwargs):
    first = partition(array, NUM_CLIENTS, scheme, seed=7, **kwargs)
    again = partition(array, NUM_CLIENTS, scheme, seed=7, **kwargs)
    from_generator = partition(array, NUM_CLIENTS, scheme, seed=np.random.default_rng(7), **kwargs)
    assert same_parts(first, again)
    assert same_parts(first, from_generator)


@pytest.mark.parametrize("scheme, array, kwargs", CASES, ids=CASE_IDS)
def test_other_seed_gives_other_parts(scheme, array, kwargs):
    first = partition(array, NUM_CLIENTS, scheme, seed=0, **kwargs)
    other = partition(array, NUM_CLIENTS, scheme, seed=1, **kwargs)
    assert not same_parts(first, other)


def test_dispatcher_matches_direct_call():
    direct = dirichlet(LABELS, NUM_CLIENTS, 0.3, seed=3, min_size=5)
    dispatched = partition(LABELS, NUM_CLIENTS, "dirichlet", seed=3, alpha=0.3, min_size=5)
    assert same_parts(direct, dispatched)


def test_torch_labels_are_accepted():
    from_numpy = iid(LABELS, NUM_CLIENTS, seed=2)
    from_torch = iid(torch.from_numpy(LABELS), NUM_CLIENTS, seed=2)
    assert same_parts(from_numpy, from_torch)


# ---------------------------------------------------------------- iid


def test_iid_sizes_balanced_and_class_proportions_close_to_global():
    labels = shuffled_labels([500] * 10)
    parts = iid(labels, 4, seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    global_distribution = np.bincount(labels) / len(labels)
    deviation = np.abs(label_distributions(labels, parts) - global_distribution)
    assert deviation.max() < 0.05


# ---------------------------------------------------------------- preferential


def test_preferential_default_exclusive_classes_are_the_last_ones():
    labels = shuffled_labels([50 + k for k in range(10)])  # uneven, so even splits leave remainders
    counts = class_counts(labels, preferential(labels, 5, seed=0))
    class_sizes = np.bincount(labels)
    for client, cls in enumerate(range(5, 10)):
        assert counts[client, cls] == class_sizes[cls], "client owns all of its exclusive class"
        assert np.count_nonzero(counts[:, cls]) == 1, "nobody else holds it"
    shared = counts[:, :5]
    assert np.all(shared > 0), "shared classes reach every client"
    assert np.all(shared.max(axis=0) - shared.min(axis=0) <= 1)
    totals = shared.sum(axis=1)
    assert totals.max() - totals.min() <= 1, "remainders are spread over clients"


def test_preferential_custom_exclusive_classes():
    exclusive = [8, 0, 6, 2]
    counts = class_counts(LABELS, preferential(LABELS, 4, exclusive_classes=exclusive, seed=0))
    for client, cls in enumerate(exclusive):
        assert counts[client, cls] == 60
        assert np.count_nonzero(counts[:, cls]) == 1
    shared = [1, 3, 4, 5, 7, 9]
    np.testing.assert_array_equal(counts[:, shared], 15)


# ---------------------------------------------------------------- dirichlet


def mean_total_variation(labels, parts):
    """Average over clients of TV(client label distribution, global one)."""
    global_distribution = np.bincount(labels) / len(labels)
    return 0.5 * np.abs(label_distributions(labels, parts) - global_distribution).sum(axis=1).mean()


def test_dirichlet_smaller_alpha_gives_more_label_skew():
    labels = shuffled_labels([200] * 10)
    skewed = mean_total_variation(labels, dirichlet(labels, 10, 0.1, seed=0))
    near_iid = mean_total_variation(labels, dirichlet(labels, 10, 100.0, seed=0))
    assert skewed > 0.4
    assert near_iid < 0.1
    assert skewed > 4 * near_iid


def test_dirichlet_respects_min_size():
    parts = dirichlet(LABELS, 10, 0.3, seed=0, min_size=20)
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_gives_up_after_max_tries():
    labels = shuffled_labels([10] * 10)
    with pytest.raises(ValueError, match="no Dirichlet.*in 3 tries"):
        dirichlet(labels, 10, 0.01, seed=0, min_size=10, max_tries=3)


# ---------------------------------------------------------------- shards


@pytest.mark.parametrize("num_clients, shards_per_client", [(5, 2), (10, 2), (2, 5), (10, 1)])
def test_shards_hold_at_most_shards_per_client_classes_when_aligned(num_clients, shards_per_client):
    # 600 samples in 10 classes: shard sizes 60, 30, 60, 60 all divide a class
    parts = shards(LABELS, num_clients, shards_per_client, seed=0)
    classes_per_client = np.count_nonzero(class_counts(LABELS, parts), axis=1)
    assert classes_per_client.max() <= shards_per_client
    assert all(len(p) == len(LABELS) // num_clients for p in parts)


# ---------------------------------------------------------------- by_domain


def test_by_domain_default_spreads_clients_evenly_over_domains():
    domains = np.repeat([2, 5, 7], [40, 30, 20])  # non-contiguous ids
    parts = by_domain(domains, 5, seed=0)
    assert_valid_partition(parts, len(domains), 5)
    np.testing.assert_array_equal(client_domains(domains, parts), [2, 2, 5, 5, 7])
    assert [len(p) for p in parts] == [20, 20, 15, 15, 20]


@pytest.mark.parametrize(
    "num_clients, clients_per_domain, expected",
    [(5, [1, 3, 1], [0, 1, 1, 1, 2]), (6, 2, [0, 0, 1, 1, 2, 2]), (3, None, [0, 1, 2])],
)
def test_by_domain_clients_per_domain(num_clients, clients_per_domain, expected):
    parts = by_domain(DOMAINS, num_clients, clients_per_domain=clients_per_domain, seed=0)
    assert_valid_partition(parts, len(DOMAINS), num_clients)
    np.testing.assert_array_equal(client_domains(DOMAINS, parts), expected)


def test_client_domains_rejects_a_client_with_two_domains():
    parts = [np.array([0, 1]), np.array([2])]
    with pytest.raises(ValueError, match="client 0 holds domains \\[0, 1\\]"):
        client_domains(np.array([0, 1, 1]), parts)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: iid(LABELS, 0), "num_clients must be >= 1"),
        (lambda: iid(np.arange(3), 4), r"more clients \(4\) than samples \(3\)"),
        (lambda: iid(LABELS.reshape(60, 10), 2), "must be 1-D"),
        (lambda: iid(LABELS.astype(float), 2), "must hold integers"),
        (lambda: iid(LABELS - 1, 2), "must be non-negative"),
        (lambda: iid(LABELS, 2, seed="abc"), "seed must be an int"),
        (lambda: dirichlet(LABELS, 5, 0.0), "alpha must be a positive"),
        (lambda: dirichlet(LABELS, 5, -1.0), "alpha must be a positive"),
        (lambda: dirichlet(LABELS, 5, 1.0, min_size=200), "cannot give 5 clients 200 samples"),
        (lambda: partition(LABELS, 5, "foo"),
         "unknown partition scheme 'foo'; known schemes: by_domain, dirichlet, iid, preferential, shards"),
        (lambda: preferential(LABELS, 11), r"num_clients <= number of classes, got 11 > 10"),
        (lambda: preferential(LABELS, 2, exclusive_classes=[3, 3]), "must be distinct"),
        (lambda: preferential(LABELS, 2, exclusive_classes=[3, 12]), r"\[12\] do not occur"),
        (lambda: preferential(LABELS, 2, exclusive_classes=[3]), "one class per client"),
        (lambda: shards(LABELS, 5, 0), "shards_per_client must be >= 1"),
        (lambda: shards(np.arange(10) % 2, 5, 3), r"more shards \(15\) than samples \(10\)"),
        (lambda: by_domain(DOMAINS, 2), "num_clients >= number of domains, got 2 < 3"),
        (lambda: by_domain(DOMAINS, 5, clients_per_domain=[1, 1, 1]), "sums to 3, not num_clients=5"),
        (lambda: by_domain(DOMAINS, 3, clients_per_domain=[1, 2]), "one entry per domain"),
        (lambda: by_domain(np.array([0, 0, 1]), 3, clients_per_domain=[1, 2]),
         "domain 1 has 1 samples but 2 clients"),
        (lambda: class_counts(LABELS, [np.arange(3)], num_classes=5), "labels go up to 9"),
    ],
)
def test_invalid_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- inspection


def test_class_counts_on_a_hand_made_example():
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    np.testing.assert_array_equal(class_counts(labels, parts), [[1, 1, 0], [0, 1, 3]])
    np.testing.assert_array_equal(class_counts(labels, parts, num_classes=4), [[1, 1, 0, 0], [0, 1, 3, 0]])


def test_plot_partition_draws_one_stacked_bar_per_client():
    parts = preferential(LABELS, NUM_CLIENTS, seed=0)
    ax = plot_partition(LABELS, parts, class_names=[f"c{k}" for k in range(10)], title="preferential")
    try:
        assert isinstance(ax, matplotlib.axes.Axes)
        assert len(ax.containers) == 10, "one bar container per class"
        assert all(len(bars) == NUM_CLIENTS for bars in ax.containers), "one bar per client"
        right_edges = [bar.get_x() + bar.get_width() for bar in ax.containers[-1]]
        np.testing.assert_allclose(right_edges, [len(p) for p in parts])
        assert len(ax.get_yticks()) == NUM_CLIENTS
        assert ax.get_title() == "preferential"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"c{k}" for k in range(10)]
    finally:
        plt.close(ax.figure)


def test_plot_partition_uses_the_given_axes():
    fig, ax = plt.subplots()
    try:
        assert plot_partition(LABELS, iid(LABELS, 3), ax=ax) is ax
        assert len(ax.containers) == 10
    finally:
        plt.close(fig)
