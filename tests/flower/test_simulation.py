"""Flower's simulation runtime gives the in-process engine's weights: FedAvg and every adapted method.

One simulated federation (3 nodes, a small task of the benchmark's IID scenario) trains the original model
and serves Retrain, FT, NoT, FedEraser and TIS (with one round of targeted retraining), and DPUL and Random
Reset, which need no client after training; the same task runs in process; the final weights must agree to a
relative tolerance of 1e-4 (on one CPU they are equal).
"""
import json
from pathlib import Path

import pytest
import torch
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from fuhelpers import fl
from fuhelpers.flower import Run, client_app
from fuhelpers.flower.server_app import serve

from .conftest import SMALL, assert_same_states, in_process_states

METHODS = ("retrain", "ft", "not", "federaser", "tis", "dpul", "random_reset")


def simulate(run: Run, monkeypatch) -> dict:
    """Run ``run`` in Flower's simulation runtime; the server process may not train a client itself."""
    def no_local_training(*args, **kwargs):
        raise AssertionError("the server trained a client in its own process")

    monkeypatch.setattr(fl, "local_train", no_local_training)   # the nodes are other processes
    server = ServerApp()
    result = {}

    @server.main()
    def main(grid, context):
        result.update(serve(grid, run))

    run_simulation(server_app=server, client_app=client_app.build(run), num_supernodes=SMALL["num_clients"],
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 1}})
    monkeypatch.undo()
    return result


@pytest.fixture(scope="module")
def flower_run(tmp_path_factory):
    run = Run(methods=METHODS, overrides=json.dumps(SMALL), out_dir=str(tmp_path_factory.mktemp("flower")))
    with pytest.MonkeyPatch.context() as mp:
        result = simulate(run, mp)
    return run, result, torch.load(f"{result['out_dir']}/states.pt")


def test_every_model_equals_the_in_process_one(flower_run):
    run, _, flower = flower_run
    assert_same_states(flower, in_process_states(run))


def test_the_nodes_did_the_client_work(flower_run):
    # messages the server must send, counted by hand (3 clients, client 0 forgotten): 3 describe; FedAvg 2 rounds
    # x 3; Retrain 2 x 2; FT 1 x 2; NoT's recovery 1 x 2; FedEraser replays round 2 with 2 clients (round 1 reuses
    # the stored uploads); TIS asks all 3 for curvature, then 1 round of targeted retraining x 2; DPUL asks nobody
    # (history and server data), nor does Random Reset (its counts come from TIS's scores, computed once per run)
    _, result, _ = flower_run
    assert result["messages"] == 3 + 6 + 4 + 2 + 2 + 2 + 3 + 2 + 0 + 0


def test_the_result_file_has_every_models_measures(flower_run):
    _, result, _ = flower_run
    written = json.loads((Path(result["out_dir"]) / "result.json").read_text())
    assert set(written["measures"]) == {"original", *METHODS}
    assert all(0 <= m["test_acc"] <= 1 for m in written["measures"].values())
