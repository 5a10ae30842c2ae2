"""The run configuration that the ServerApp and every ClientApp read (Flower's ``run_config``).

Keys (``[tool.flwr.app.config]`` in ``flower/pyproject.toml``, or ``flwr run --run-config``):

``experiment``, ``scale``, ``scenario``, ``seed``
    Which task of :mod:`fuhelpers.experiments` to build; both sides build the same one.
``methods``
    Comma-separated methods (or variants) the server runs after FedAvg, e.g. ``"retrain,ft,not"``.
``setting-overrides``
    JSON object of :class:`~fuhelpers.experiments.Setting` fields to change (e.g. ``{"num_clients": 3}``).
``out-dir``
    Where the server writes ``result.json`` and ``states.pt`` (relative paths: to the working directory).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache

from .. import experiments as ex

DEFAULTS = {"experiment": "benchmark", "scale": "smoke", "scenario": "iid", "seed": 0,
            "methods": "retrain,ft,not,federaser,tis", "setting-overrides": "{}", "out-dir": "flower-results"}


@dataclass(frozen=True)
class Run:
    """One Flower run of an experiment's task: what to build and which methods to serve."""

    experiment: str = DEFAULTS["experiment"]
    scale: str = DEFAULTS["scale"]
    scenario: str = DEFAULTS["scenario"]
    seed: int = DEFAULTS["seed"]
    methods: tuple[str, ...] = tuple(DEFAULTS["methods"].split(","))
    overrides: str = DEFAULTS["setting-overrides"]   # JSON, so that the run stays hashable
    out_dir: str = DEFAULTS["out-dir"]

    @classmethod
    def from_run_config(cls, run_config) -> "Run":
        """From Flower's ``context.run_config`` (missing keys take :data:`DEFAULTS`)."""
        c = {**DEFAULTS, **dict(run_config)}
        methods = tuple(m.strip() for m in str(c["methods"]).split(",") if m.strip())
        return cls(str(c["experiment"]), str(c["scale"]), str(c["scenario"]), int(c["seed"]), methods,
                   str(c["setting-overrides"]), str(c["out-dir"]))

    def run_config(self) -> dict:
        """The Flower ``run_config`` of this run (the inverse of :meth:`from_run_config`)."""
        return {"experiment": self.experiment, "scale": self.scale, "scenario": self.scenario, "seed": self.seed,
                "methods": ",".join(self.methods), "setting-overrides": self.overrides, "out-dir": self.out_dir}

    def setting(self) -> ex.Setting:
        """The experiment's setting for the scenario at the scale, with the overrides applied."""
        base = ex.get(self.experiment).setting(self.scenario, self.scale)
        return dataclasses.replace(base, **json.loads(self.overrides))

    def task(self):
        """``(federation, request)`` of the run, built once per process (every client builds the same)."""
        return _task(self)


@lru_cache(maxsize=4)
def _task(run: Run):
    fed, request, _, _ = ex.build_task(run.scenario, run.setting(), run.seed)
    return fed, request
