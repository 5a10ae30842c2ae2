import numpy as np
import pytest
import torch

from conftest import make_blobs
from fuhelpers.federation import Federation, Request


@pytest.fixture
def fed():
    data = make_blobs(n=30)
    parts = [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30)]
    return Federation.from_partition(data, parts, make_blobs(n=12, seed=1))


def test_client_request_views(fed):
    r = Request.client(1)
    clients, ids = fed.retain_clients(r)
    assert ids == [0, 2] and [len(c) for c in clients] == [10, 10]
    assert len(fed.forget_data(r)) == 10 and len(fed.retain_data(r)) == 20
    torch.testing.assert_close(fed.forget_data(r).x, fed.clients[1].x)


def test_class_request_views(fed):
    r = Request.for_class(2)
    forget = fed.forget_data(r)
    assert (forget.y == 2).all() and len(forget) == 10
    assert (fed.retain_data(r).y != 2).all()
    test_keep, test_forget = fed.test_split(r)
    assert (test_forget.y == 2).all() and (test_keep.y != 2).all() and len(test_keep) + len(test_forget) == 12


def test_sample_request_views(fed):
    r = Request.for_samples({0: [1, 3], 2: [0]})
    assert len(fed.forget_data(r)) == 3 and len(fed.retain_data(r)) == 27
    torch.testing.assert_close(fed.forget_data(r).x[0], fed.clients[0].x[1])


def test_request_validation(fed):
    with pytest.raises(ValueError, match="unknown request kind"):
        Request("everything")
    with pytest.raises(ValueError, match="at least one"):
        Request("client")
    with pytest.raises(ValueError, match="clients 0..2"):
        fed.retain_clients(Request.client(5))


@pytest.fixture
def exclusive():
    """Client 2 alone holds class 2 (the categorical setting); the server holds 4 samples of each class."""
    data = make_blobs(n=30)                                  # y = i % 3: 10 samples per class
    others = np.flatnonzero(data.y.numpy() != 2)
    parts = [others[:10], others[10:], np.flatnonzero(data.y.numpy() == 2)]
    return Federation.from_partition(data, parts, make_blobs(n=12, seed=1), server=make_blobs(n=12, seed=2))


def test_forgotten_classes(exclusive):
    assert exclusive.forgotten_classes(Request.client(2)) == [2]     # its class is gone with it
    assert exclusive.forgotten_classes(Request.client(0)) == []      # client 1 still holds classes 0 and 1
    assert exclusive.forgotten_classes(Request.for_class(1)) == [1]
    assert exclusive.forgotten_classes(Request.for_samples({2: [0, 1]})) == []


def test_the_server_set_never_holds_a_forgotten_class(exclusive):
    kept = exclusive.server_data(Request.client(2))
    assert len(kept) == 8 and sorted(kept.y.unique().tolist()) == [0, 1]     # 12 minus the 4 of class 2
    assert len(exclusive.server_data(Request.for_class(0))) == 8 and (exclusive.server_data(Request.for_class(0)).y != 0).all()
    assert exclusive.server_data(Request.client(0)) is exclusive.server       # nothing forgotten: unchanged
    assert Federation(clients=exclusive.clients, test=exclusive.test).server_data(Request.client(2)) is None
