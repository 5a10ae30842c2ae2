import json
import math

import torch

from fuhelpers.cost import Cost, tensor_bytes, train_flops_per_sample
from fuhelpers.results import load_results, save_results


def test_cost_adds_and_ratios():
    a = Cost(seconds=2.0, rounds=3, bytes_up=1_000_000, bytes_down=3_000_000, flops=10.0)
    b = Cost(seconds=1.0, rounds=1, bytes_up=0, bytes_down=1_000_000, flops=5.0)
    s = a + b
    assert (s.seconds, s.rounds, s.bytes_down, s.flops) == (3.0, 4, 4_000_000, 15.0)
    assert s.comm_mb == 5.0
    r = b.ratio_to(a)
    assert r["seconds"] == 0.5 and r["comm_mb"] == 0.25 and math.isnan(r["storage_bytes"])


def test_tensor_bytes_and_flops_of_a_linear_layer():
    assert tensor_bytes([torch.zeros(3, 4), torch.zeros(5, dtype=torch.float64)]) == 48 + 40
    net = torch.nn.Linear(10, 4, bias=False)
    x, y = torch.randn(8, 10), torch.randint(0, 4, (8,))
    per_sample = train_flops_per_sample(net, x, y)
    # forward x W^T: 2*10*4 per sample; backward: grad wrt W only (input needs no grad): 2*10*4
    assert per_sample == 2 * 2 * 10 * 4
    assert net.weight.grad is None  # counted on a copy


def test_results_keep_one_entry_per_scale(tmp_path):
    save_results("01_x", {"acc": torch.tensor(0.5), "nan": float("nan")}, scale="full", seed=1, wall_seconds=3.0, root=tmp_path)
    save_results("01_x", {"acc": 0.25}, scale="smoke", seed=0, wall_seconds=1.0, root=tmp_path, dataset="mnist")
    data = json.loads((tmp_path / "01_x.json").read_text())
    assert set(data) == {"full", "smoke"}
    full = load_results("01_x", "full", root=tmp_path)
    assert full["results"] == {"acc": 0.5, "nan": None} and full["provenance"]["seed"] == 1
    assert load_results("01_x", "smoke", root=tmp_path)["provenance"]["dataset"] == "mnist"
    assert load_results("missing", root=tmp_path) is None


def test_the_cost_meter_counts_a_round_and_compute_by_hand():
    from fuhelpers.cost import Cost

    c = Cost().add_round(clients=3, down=10)              # 3 clients get 10 bytes, each sends 10 back
    assert (c.rounds, c.bytes_down, c.bytes_up) == (1, 30, 30)
    c.add_round(clients=4, down=10, up=2, uploads=3)      # 4 get the model, 3 send 2 bytes back
    assert (c.rounds, c.bytes_down, c.bytes_up) == (2, 70, 36)
    assert c.add_compute(5, 1.5e6).flops == 7.5e6 and c.add_compute(2, 1e6).flops == 9.5e6
    assert c.comm_mb == 106 / 1e6
