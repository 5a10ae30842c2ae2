"""The app as Flower's users run it: ``flwr run flower <connection>``, in simulation and on a loopback deployment.

Each run trains the original model on Flower's nodes and serves one unlearning request; its weights must equal
the in-process ones (relative tolerance 1e-4), its status must be ``finished:completed``, and every process the
test started must be gone afterwards (the fixtures check).
"""
import json

import torch

from fuhelpers.flower import Run

from .conftest import SMALL, assert_same_states, flwr_run, in_process_states


def _run(tmp_path, methods) -> Run:
    return Run(methods=methods, overrides=json.dumps(SMALL), out_dir=str(tmp_path / "out"))


def _config(run: Run, tmp_path) -> str:
    """``--run-config`` of ``run``: a TOML file (JSON's string escapes are TOML's)."""
    path = tmp_path / "run.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run.run_config().items()))
    return str(path)


def test_flwr_run_in_simulation_serves_fine_tuning(flwr_env, simulation_superlink, tmp_path):
    run = _run(tmp_path, ("ft",))
    flwr_run(flwr_env, simulation_superlink, _config(run, tmp_path), "--federation-config",
             "num-supernodes=3 client-resources-num-cpus=1")
    assert_same_states(torch.load(tmp_path / "out" / "states.pt"), in_process_states(run))


def test_a_loopback_deployment_serves_an_unlearning_request(flwr_env, deployment, tmp_path):
    # 1 SuperLink and 3 SuperNodes on 127.0.0.1: FedAvg, then NoT (negation on the server, recovery on the nodes)
    run = _run(tmp_path, ("not",))
    flwr_run(flwr_env, deployment, _config(run, tmp_path))
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["messages"] == 3 + 2 * 3 + 1 * 2      # describe, FedAvg's 2 rounds, NoT's recovery round
    assert_same_states(torch.load(tmp_path / "out" / "states.pt"), in_process_states(run))
