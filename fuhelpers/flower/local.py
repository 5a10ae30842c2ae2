"""Flower's processes on this machine, for one block of code: a SuperLink and, for a deployment, its SuperNodes.

::

    with LocalFlower(num_nodes=3, simulation=False) as flower:     # 1 SuperLink + 3 SuperNodes on 127.0.0.1
        result = flower.run(Run(methods=("not",), out_dir="/tmp/out"))

``simulation=True`` starts a SuperLink in simulation mode instead (what ``flwr run`` starts by itself for a
``:local:`` connection), which simulates ``num_nodes`` nodes. Everything lives in a private ``FLWR_HOME`` (the
CLI's connection, the installed app, logs) on free loopback ports, with telemetry, the update check and run-time
dependency installation switched off; leaving the block stops every process it started, by process id. The
app's configuration is written by :func:`write_app` (the repository's ``flower/pyproject.toml`` is its output).
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
import tempfile
import time
import urllib.request
from pathlib import Path

from .config import DEFAULTS, Run

APP = {"name": "fuhelpers-unlearning", "publisher": "fu-book",
       "serverapp": "fuhelpers.flower.server_app:app", "clientapp": "fuhelpers.flower.client_app:app"}
FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def _toml(value) -> str:
    return json.dumps(value)          # strings, ints and floats: JSON's spelling is TOML's


def write_app(folder: str | Path, config: dict | None = None) -> Path:
    """Write the Flower app's ``pyproject.toml`` (components and run configuration) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# The Flower app of the book (chapter 7), written by fuhelpers.flower.local.write_app.",
             "# Its code is the package fuhelpers, installed where Flower runs (pip install -e \".[flower]\").",
             "[project]", f'name = "{APP["name"]}"', 'version = "0.1.0"',
             'description = "Federated unlearning requests served over Flower"', 'license = "MIT"',
             'dependencies = ["flwr>=1.41.0"]', "", "[tool.flwr.app]", f'publisher = "{APP["publisher"]}"', "",
             "[tool.flwr.app.components]", f'serverapp = "{APP["serverapp"]}"', f'clientapp = "{APP["clientapp"]}"',
             "", "# the run (fuhelpers/flower/config.py); override with flwr run --run-config",
             "[tool.flwr.app.config]", *(f"{k} = {_toml(v)}" for k, v in {**DEFAULTS, **(config or {})}.items())]
    path = folder / "pyproject.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class LocalFlower:
    """A SuperLink (and ``num_nodes`` SuperNodes unless ``simulation``) for the duration of a ``with`` block.

    Parameters
    ----------
    num_nodes : int
        Nodes of the federation, one per partition of the run (``partition-id`` 0 .. num_nodes - 1).
    simulation : bool
        Simulate the nodes (Ray, inside the SuperLink's run) instead of starting SuperNodes.
    home : path, optional
        ``FLWR_HOME`` (default: a temporary folder, removed afterwards).
    timeout : float
        Seconds to wait for a process to start or stop.
    """

    def __init__(self, num_nodes: int, *, simulation: bool, home: str | Path | None = None, timeout: float = 90.0):
        self.num_nodes, self.simulation, self.timeout = num_nodes, simulation, timeout
        self._tmp = None if home else tempfile.TemporaryDirectory(prefix="flwr-home-")
        self.home = Path(home or self._tmp.name)
        self.procs: list[subprocess.Popen] = []
        self.left: list[int] = []
        plain = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE", "CLICOLOR")}
        self.env = {**plain, **FLOWER_ENV, "NO_COLOR": "1", "TERM": "dumb", "FLWR_HOME": str(self.home),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                    "RAY_TMPDIR": f"/tmp/fu-ray-{os.getpid()}"}    # short: Ray's socket paths have a limit

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "w")
        proc = subprocess.Popen([str(Path(sys.executable).parent / args[0]), *args[1:]], env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def __enter__(self) -> "LocalFlower":
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            self.port = _free_port()
            self._start("superlink", ["flower-superlink", "--insecure", "--isolation", "subprocess",
                                      "--host", "127.0.0.1", "--port", str(self.port),
                                      "--disable-runtime-dependency-installation",
                                      *(["--simulation"] if self.simulation else [])])
            self._wait_healthy()
            if not self.simulation:
                for i in range(self.num_nodes):
                    self._start(f"supernode{i}", ["flower-supernode", "--insecure", "--superlink",
                                                  f"127.0.0.1:{self.port}", "--port", str(_free_port()),
                                                  "--node-config", f"partition-id={i} num-partitions={self.num_nodes}"])
            (self.home / "config.toml").write_text(f'[superlink]\ndefault = "local-test"\n\n[superlink.local-test]\n'
                                                   f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"the SuperLink did not answer on port {self.port} within {self.timeout:.0f} s")

    def flwr(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run Flower's CLI against this SuperLink (its connection is ``local-test``)."""
        return subprocess.run([str(Path(sys.executable).parent / "flwr"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def run(self, run: Run, timeout: float = 900) -> dict:
        """``flwr run`` the app for ``run``, wait for it, and return ``result.json`` plus the run's wall time.

        Raises ``RuntimeError`` unless Flower reports the run ``finished:completed`` (``flwr run --stream``
        itself exits 0 when the ServerApp fails).
        """
        app = self.home / "app"
        write_app(app)
        config = self.home / "run.toml"
        config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in run.run_config().items()))
        extra = ["--federation-config", f"num-supernodes={self.num_nodes} client-resources-num-cpus=1"] \
            if self.simulation else []
        start = time.perf_counter()
        res = self.flwr("run", str(app), "local-test", "--stream", "--run-config", str(config), *extra,
                        timeout=timeout)
        wall = time.perf_counter() - start
        found = re.search(r"Successfully started run (\d+)", res.stdout)
        if res.returncode != 0 or not found:
            raise RuntimeError(f"flwr run failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        listed = self.flwr("ls", "local-test", "--run-id", found.group(1), "--format", "json")
        try:
            status = json.loads(listed.stdout)["runs"][0]
        except (json.JSONDecodeError, KeyError, IndexError) as e:
            raise RuntimeError(f"flwr ls gave no run status ({e}):\n{listed.stdout[-2000:]}\n{listed.stderr[-2000:]}")

        if status["status"] != "finished:completed":
            raise RuntimeError(f"run {found.group(1)}: {status['status']} {status.get('status-details', '')}\n"
                               f"{res.stdout[-3000:]}")
        result = json.loads((Path(run.out_dir) / "result.json").read_text())
        return {**result, "wall_seconds": wall}

    def stop(self) -> list[int]:
        """Stop every process started here and their descendants, by pid; return those still alive (none)."""
        family = [d for p in self.procs if p.poll() is None for d in _descendants(p.pid)]
        for p in reversed(self.procs):              # SuperNodes first, the SuperLink last
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=self.timeout)
        deadline = time.monotonic() + self.timeout   # SuperExecs watch their parent and exit by themselves
        while (alive := [d for d in family if _alive(d)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        self.left = [d for d in family if _alive(d)]
        self.procs = []
        shutil.rmtree(self.env["RAY_TMPDIR"], ignore_errors=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.left
