"""A minimal Chrome DevTools Protocol client for headless Chromium, with no dependency outside the standard library.

Chromium is started with ``--remote-debugging-pipe``: it reads commands from file descriptor 3 and writes
responses and events to file descriptor 4, each message one JSON object followed by a NUL byte. No port is
opened, so nothing can collide with other processes on the machine.
"""

import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check", "--hide-scrollbars",
    "--mute-audio", "--disable-features=Translate,MediaRouter,OptimizationHints", "--window-size=1280,900",
]


class CDPError(RuntimeError):
    pass


def find_chromium():
    """Path of a Chromium-like browser: $CHROMIUM if set, else the first of CANDIDATES on PATH, else None."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _above_4(fd):
    """The same pipe end on a descriptor >= 10 (so that the shell's 3< and 4> cannot clobber it)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium process, driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, executable, extra_flags=()):
        self.executable = executable
        self.profile = tempfile.mkdtemp(prefix="book-chromium-")
        self.log_path = os.path.join(self.profile, "chromium.log")
        cmd_r, self._cmd_w = os.pipe()   # we write commands, Chromium reads them on fd 3
        self._res_r, res_w = os.pipe()   # Chromium writes on fd 4, we read
        cmd_r, res_w = _above_4(cmd_r), _above_4(res_w)
        # bash puts the two pipe ends on fds 3 and 4 of the exec'd browser (no preexec_fn: threads are running).
        shim = f'exec "$@" 3<&{cmd_r} 4>&{res_w} {cmd_r}<&- {res_w}>&-'
        argv = ["bash", "-c", shim, "bash", executable, *FLAGS, *extra_flags,
                f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, pass_fds=(cmd_r, res_w), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        os.close(cmd_r)
        os.close(res_w)
        self._next_id = 0
        self._inbox = queue.Queue()
        self._responses = {}
        self.events = []          # every event received, in order: dicts with method, params, sessionId
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self.version = self.call("Browser.getVersion", timeout=60)["product"]
        except Exception:
            self.close()
            raise

    # --- transport -------------------------------------------------------------------------------------
    def _read_loop(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._res_r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self._inbox.put(None)
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                if raw:
                    self._inbox.put(json.loads(raw))

    def _pump(self, deadline):
        """Move one message from the pipe into responses/events; False on timeout."""
        try:
            msg = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if msg is None:
            self._inbox.put(None)
            raise CDPError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()}).\n{self.log_tail()}")
        if "id" in msg:
            self._responses[msg["id"]] = msg
        else:
            self.events.append(msg)
        return True

    def log_tail(self, n=2000):
        try:
            with open(self.log_path, "rb") as f:
                return "Chromium log (tail):\n" + f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def call(self, method, params=None, session=None, timeout=30):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while self._next_id not in self._responses:
            if not self._pump(deadline):
                raise CDPError(f"{method}: no answer from Chromium within {timeout} s")
        res = self._responses.pop(self._next_id)
        if "error" in res:
            raise CDPError(f"{method}: {res['error']}")
        return res.get("result", {})

    def wait_event(self, method, session=None, start=0, timeout=30):
        """First event `method` (of `session`) at index >= start of self.events; raises on timeout."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.events):
                ev = self.events[i]
                i += 1
                if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                    return ev
            if not self._pump(deadline):
                raise CDPError(f"no {method} event within {timeout} s")

    def drain(self, seconds=0.0):
        """Collect the events that arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        while self._pump(deadline):
            pass

    # --- pages -----------------------------------------------------------------------------------------
    def new_page(self, width=1280, height=900):
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        return session

    def evaluate(self, session, expression, timeout=60):
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                        session=session, timeout=timeout)
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CDPError(f"JavaScript failed: {text}")
        return res["result"].get("value")

    # --- shutdown --------------------------------------------------------------------------------------
    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)   # the process group of the browser we started
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
