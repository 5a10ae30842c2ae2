import numpy as np
import pytest
import torch

from conftest import make_blobs
from fuhelpers.data import ArrayDataset
from fuhelpers.federation import Federation, Request
from fuhelpers.metrics import class_matched, evaluate


def test_class_matched_equalises_every_class():
    members = np.array([0] * 50 + [1] * 5)
    nonmembers = np.array([0] * 10 + [1] * 40 + [2] * 7)
    im, inn = class_matched(members, nonmembers, seed=0)
    assert np.bincount(members[im], minlength=3).tolist() == [10, 5, 0]
    assert np.bincount(nonmembers[inn], minlength=3).tolist() == [10, 5, 0]
    assert len(set(im)) == len(im) and len(set(inn)) == len(inn)
    assert np.array_equal(class_matched(members, nonmembers, seed=0)[0], im)


class Lookup(torch.nn.Module):
    """A 'model' that outputs a fixed logit row per sample id stored in x[:, 0, 0, 0]."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def id_data(ids, labels, classes=("a", "b")):
    x = torch.zeros(len(ids), 1, 1, 1)
    x[:, 0, 0, 0] = torch.as_tensor(ids, dtype=torch.float32)
    return ArrayDataset(x=x, y=torch.as_tensor(labels), classes=list(classes))


def test_evaluate_accuracies_and_backdoor_on_a_hand_made_model():
    # samples 0..3 on client 0, 4..7 on client 1, test 8..11, triggered 12..13
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1])
    logits = torch.zeros(14, 2)
    logits[torch.arange(14), labels] = 5.0        # everything right...
    logits[[4, 5], :] = logits[[4, 5]].flip(1)    # ...but 2 of client 1's 4 samples
    logits[8, :] = logits[8].flip(0)              # ...and 1 of 4 test samples
    logits[12, :] = torch.tensor([0.0, 5.0])      # triggered sample 12 goes to the target 1
    net = Lookup(logits)
    train = id_data(range(8), labels[:8])
    fed = Federation.from_partition(train, [np.arange(4), np.arange(4, 8)], id_data(range(8, 12), labels[8:12]),
                                    triggered_test=id_data([12, 13], [1, 1]), triggered_test_true=id_data([12, 13], [0, 0]))
    out = evaluate(net, fed, Request.client(1), mia=False)
    assert out["forget_acc"] == 0.5 and out["retain_acc"] == 1.0 and out["test_acc"] == 0.75
    assert out["asr"] == 1.0 and out["backdoor_acc"] == 0.0


def test_evaluate_class_request_reports_split_test_accuracy_and_mia_keys():
    data, test = make_blobs(n=300), make_blobs(n=300, seed=1)
    fed = Federation.from_partition(data, [np.arange(150), np.arange(150, 300)], test)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    out = evaluate(net, fed, Request.for_class(2), seed=0)
    assert {"test_retain_acc", "test_forget_acc", "mia_acc", "mia_auc", "mia_efficacy", "mia_efficacy_ref"} <= set(out)
    assert 0.0 <= out["mia_acc"] <= 1.0


def test_class_matched_cap_keeps_per_class_counts_equal():
    members = np.array([0] * 3000 + [1] * 3000)
    nonmembers = np.array([1] * 3000 + [0] * 3000)
    im, inn = class_matched(members, nonmembers, seed=0, cap=2000)
    assert len(im) == len(inn) == 2000
    assert np.bincount(members[im], minlength=2).tolist() == np.bincount(nonmembers[inn], minlength=2).tolist()
    uncapped = class_matched(members, nonmembers, seed=0)
    assert len(uncapped[0]) == 6000


def test_calibrated_attack_accepts_small_groups_but_not_empty_ones():
    from fuhelpers.metrics import mia_from_scores

    res = mia_from_scores([0.1, 0.2], [1.0, 2.0], fit_members=[0.1, 0.3, 0.2], fit_nonmembers=[1.5, 2.5, 1.0])
    assert res.accuracy == 1.0
    with pytest.raises(ValueError, match="at least 5"):
        mia_from_scores([0.1, 0.2], [1.0, 2.0])  # cross-validation needs n_splits per group
    with pytest.raises(ValueError, match="calibration set"):
        mia_from_scores([0.1], [1.0], fit_members=[], fit_nonmembers=[1.0])
