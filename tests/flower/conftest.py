"""Flower tests (``make flower``): they need the optional extra ``flwr[simulation]``.

Fixtures start Flower's processes for one test, on free loopback ports, with ``FLWR_HOME`` in a temporary
folder (the CLI's connections live in its ``config.toml``), and stop every process they started by process id:
SIGTERM, SIGKILL after a time-out, then any descendant left (SuperExec, ServerApp and ClientApp processes).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the Flower extra is not installed: make flower")

# Flower's own switches, read when flwr is imported: no telemetry, no update check
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")   # silences a Ray FutureWarning

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "flower"                       # the Flower app: its pyproject.toml
BIN = Path(sys.executable).parent           # flwr, flower-superlink, flower-supernode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def flwr_env(tmp_path):
    """The environment of every Flower process: isolated FLWR_HOME, nothing installed at run time."""
    ray_tmp = Path(f"/tmp/fu-ray-{os.getpid()}")      # short: Ray's Unix sockets limit the path length
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_TMPDIR": str(ray_tmp), "COLUMNS": "200",
           "OMP_NUM_THREADS": "1"}
    Path(env["FLWR_HOME"]).mkdir()
    yield env
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(x) for x in out.split()]
    return kids + [d for k in kids for d in _descendants(k)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"      # a zombie has exited
    except FileNotFoundError:
        return False


def stop(procs: list[subprocess.Popen], timeout: float = 15.0) -> list[int]:
    """Stop ``procs`` (in order) and their descendants by pid; return the pids still alive (should be none)."""
    family = [d for p in procs if p.poll() is None for d in _descendants(p.pid)]
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)
    deadline = time.monotonic() + timeout     # SuperExecs watch their parent and exit by themselves
    while (alive := [d for d in family if _alive(d)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return [d for d in family if _alive(d)]


def _wait_healthy(port: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"no SuperLink on port {port} after {timeout:.0f} s")


def start_superlink(env, logs: Path, *, simulation: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [str(BIN / "flower-superlink"), "--insecure", "--isolation", "subprocess", "--host", "127.0.0.1",
           "--port", str(port), "--disable-runtime-dependency-installation", "--log-file",
           str(logs / "superlink.log"), *(["--simulation"] if simulation else [])]
    proc = subprocess.Popen(cmd, env=env, stdout=open(logs / "superlink.out", "w"), stderr=subprocess.STDOUT)
    _wait_healthy(port)
    return proc, port


def connect(env, name: str, port: int) -> str:
    """Name the SuperLink on ``port`` in the CLI's configuration (``$FLWR_HOME/config.toml``)."""
    (Path(env["FLWR_HOME"]) / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    return name


def flwr(env, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "flwr"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def flwr_run(env, connection: str, run_config: str, *extra) -> dict:
    """``flwr run`` the app and wait for it; return the run's status (``flwr run --stream`` exits 0 on failure)."""
    res = flwr(env, "run", str(APP), connection, "--stream", "--run-config", run_config, *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    run_id = re.search(r"Successfully started run (\d+)", res.stdout).group(1)
    status = json.loads(flwr(env, "ls", connection, "--run-id", run_id, "--format", "json").stdout)["runs"][0]
    assert status["status"] == "finished:completed", (status, res.stdout[-3000:])
    return status


@pytest.fixture
def simulation_superlink(flwr_env, tmp_path):
    """A SuperLink in simulation mode (what ``flwr run`` starts by itself for ``:local:``), stopped by pid."""
    proc, port = start_superlink(flwr_env, tmp_path, simulation=True)
    yield connect(flwr_env, "simulation", port)
    assert stop([proc]) == []


@pytest.fixture
def deployment(flwr_env, tmp_path):
    """A loopback deployment: one SuperLink and three SuperNodes (partition-id 0, 1, 2), stopped by pid."""
    procs = []
    try:
        link, port = start_superlink(flwr_env, tmp_path, simulation=False)
        procs.append(link)
        for i in range(3):
            procs.insert(0, subprocess.Popen(
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                 "--port", str(free_port()), "--node-config", f"partition-id={i} num-partitions=3"],
                env=flwr_env, stdout=open(tmp_path / f"supernode{i}.log", "w"), stderr=subprocess.STDOUT))
        yield connect(flwr_env, "loopback", port)
    finally:
        left = stop(procs)          # SuperNodes first, the SuperLink last
    assert left == [], f"processes left running: {left}"


# ---------------------------------------------------------------- the in-process reference
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
