"""The app as Flower's users run it, ``flwr run``: on a loopback deployment, and the app's configuration.

A SuperLink and three SuperNodes on 127.0.0.1 train the original model and serve one unlearning request (NoT:
negation on the server, recovery on the nodes); its weights must equal the in-process ones (relative tolerance
1e-4), Flower must report the run ``finished:completed``, and every process started must be gone afterwards.
"""
import json
from pathlib import Path

import torch

from fuhelpers.flower import Run
from fuhelpers.flower.local import LocalFlower, write_app

from .conftest import SMALL, assert_same_states, in_process_states

ROOT = Path(__file__).resolve().parents[2]


def test_a_loopback_deployment_serves_an_unlearning_request(tmp_path):
    # one FedAvg round keeps it short: every message costs a ClientApp process and Flower's 3 s polling
    run = Run(methods=("not",), overrides=json.dumps({**SMALL, "num_rounds": 1}), out_dir=str(tmp_path / "out"))
    with LocalFlower(num_nodes=3, simulation=False) as flower:
        pids = [p.pid for p in flower.procs]
        result = flower.run(run)
    assert len(pids) == 4 and flower.left == []
    assert result["messages"] == 3 + 1 * 3 + 1 * 2      # describe, FedAvg's round, NoT's recovery round
    assert_same_states(torch.load(tmp_path / "out" / "states.pt"), in_process_states(run))


def test_the_repository_app_is_the_packages(tmp_path):
    # flower/pyproject.toml is what write_app writes: the components and the run configuration's defaults
    assert (ROOT / "flower" / "pyproject.toml").read_text() == write_app(tmp_path).read_text()
