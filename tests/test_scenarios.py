import numpy as np
import pytest
import torch

from fuhelpers.data import ArrayDataset
from fuhelpers.scenarios import SETTINGS, build


def labelled(n, seed):
    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(x=torch.rand(n, 1, 8, 8, generator=g), y=torch.arange(n) % 10, classes=[str(k) for k in range(10)])


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_setting_builds_a_client_request(setting):
    s = build(setting, labelled(500, 0), labelled(200, 1), num_clients=5, target_client=2, seed=0)
    assert s.request.clients == (2,) and s.federation.num_clients == 5
    assert sum(s.federation.sizes) == 500 and len(s.target) > 0


def test_preferential_target_is_the_exclusive_class_of_the_target_client():
    s = build("categorical", labelled(500, 0), labelled(200, 1), target_client=1)
    cls = int(s.target.y[0])
    assert (s.target.y == cls).all() and len(s.target) == 20
    held = [set(c.y.tolist()) for c in s.federation.clients]
    assert cls in held[1] and all(cls not in h for i, h in enumerate(held) if i != 1)


def test_backdoor_poisons_only_the_target_and_sets_triggered_tests():
    clean = build("iid", labelled(500, 0), labelled(200, 1), target_client=0)
    s = build("backdoor", labelled(500, 0), labelled(200, 1), target_client=0, poison_fraction=0.5)
    assert (s.federation.clients[0].y == 9).sum() > (clean.federation.clients[0].y == 9).sum()
    assert all(torch.equal(a.x, b.x) for a, b in zip(s.federation.clients[1:], clean.federation.clients[1:]))
    assert (s.federation.triggered_test.y == 9).all() and s.forgetting_metric == "asr"


def test_unknown_setting_and_client():
    with pytest.raises(ValueError, match="unknown setting"):
        build("everything", labelled(50, 0), labelled(20, 1))
    with pytest.raises(ValueError, match="target_client"):
        build("iid", labelled(50, 0), labelled(20, 1), target_client=7)


def test_split_overrides_the_partition_of_a_setting():
    iid = build("backdoor", labelled(500, 0), labelled(200, 1), num_clients=5, seed=0)
    skew = build("backdoor", labelled(500, 0), labelled(200, 1), num_clients=5, seed=0, split="dirichlet", alpha=0.1)
    assert len(set(iid.federation.sizes)) == 1  # IID: equal shares
    assert len(set(skew.federation.sizes)) > 1 and sum(skew.federation.sizes) == 500
    assert skew.forgetting_metric == "asr" and skew.federation.triggered_test is not None
    with pytest.raises(ValueError, match="unknown split"):
        build("iid", labelled(50, 0), labelled(20, 1), split="shards")
