"""Flower tests (``make flower``): they need the optional extra ``flwr[simulation]``."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("flwr", reason="the Flower extra is not installed: make flower")

from fuhelpers.flower.local import FLOWER_ENV  # noqa: E402  (after the skip: it needs nothing of Flower)

# Flower's own switches (telemetry, update check, run-time installs), read when flwr is imported
for key, value in FLOWER_ENV.items():
    os.environ.setdefault(key, value)

# the task every Flower test runs: 3 clients, 300 images, 2 rounds; TIS with one round of targeted retraining
SMALL = dict(num_clients=3, n_train=300, n_test=200, n_server=60, num_rounds=2, local_epochs=1,
             recovery_rounds=1, options={"tis": {"retrain_rounds": 1}})


def in_process_states(run) -> dict:
    """The original model's and every method's final state when ``run``'s task runs in this process."""
    from fuhelpers import experiments as ex
    from fuhelpers.experiments.methods import run_variant

    p = ex.prepare(run.scenario, run.setting(), run.seed)
    return {"original": p.model.state_dict(), **{m: run_variant(p, m).model.state_dict() for m in run.methods}}


def assert_same_states(flower: dict, local: dict, rtol: float = 1e-4) -> None:
    """Every model's every tensor within ``rtol`` of the in-process one (relative to the tensor's largest entry)."""
    import torch

    assert sorted(flower) == sorted(local)
    for name, state in local.items():
        for key, value in state.items():
            torch.testing.assert_close(flower[name][key], value, rtol=rtol, atol=rtol * float(value.abs().max()),
                                       msg=lambda m, name=name, key=key: f"{name}, {key}: {m}")
