"""Run the simulator as a subprocess from tests, benchmarks and end-to-end scenarios.

Stable API (other packages' tests rely on it):

    from binance_sim.testing import run_simulator

    with run_simulator(data_dir, "--start", "2022-01-15T10:00:00", "--speed", "60") as sim:
        sim.url          # "http://127.0.0.1:PORT"  (REST base, also BINANCE_REST_URL)
        sim.ws_url       # "ws://127.0.0.1:PORT"    (WS base, also BINANCE_WS_URL)
        sim.pid
        sim.admin({"rest_5xx": 3})          # POST /_sim/faults, returns the JSON answer
        sim.state()                         # GET /_sim/state (clock, faults, counters)
        sim.truth("BTCUSDT", "1h", start_ms, end_ms) -> bytes   # lake JSONL of closed klines
        sim.clock(speed=3600)               # POST /_sim/clock
        sim.stop()                          # also done on leaving the `with` block

`data_dir` may be None for the bundled data (binance_sim/data). `extra_args` are CLI flags
(`python -m binance_sim --help`). The process binds port 0 on 127.0.0.1; `run_simulator`
waits for its `READY <url>` line with a deadline (no sleeps) and raises `SimStartError` with
the process's stderr if it exits or times out first. `stop()` sends SIGTERM, then SIGKILL after
a deadline, by PID. `SimProcess` is the same without the context manager.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

_DEVTOOLS = Path(__file__).resolve().parents[1]
# The child imports klinelake (repo root) and binance_sim (devtools/), installed or not.
_IMPORT_PATH = os.pathsep.join([str(_DEVTOOLS.parent), str(_DEVTOOLS)])


class SimStartError(RuntimeError):
    """The simulator exited or did not print READY in time; the message holds its stderr."""


class SimProcess:
    """A running `python -m binance_sim` subprocess (see the module docstring)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *extra_args: str,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.env = env
        self.ready_timeout = ready_timeout
        self.url = ""
        self.ws_url = ""
        self.pid = 0
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._http: httpx.Client | None = None

    def start(self) -> SimProcess:
        args = [sys.executable, "-m", "binance_sim", "--host", "127.0.0.1", "--port", "0"]
        if self.data_dir is not None:
            args += ["--data", os.fspath(self.data_dir)]
        args += list(self.extra_args)
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_IMPORT_PATH, env.get("PYTHONPATH")]))
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115  (closed in stop())
        self._proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env
        )
        self.pid = self._proc.pid
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self._proc.stdout
        assert stdout is not None

        def pump() -> None:  # keeps reading so the pipe never fills
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"binance_sim-{self.pid}").start()
        try:
            line = lines.get(timeout=self.ready_timeout)
        except queue.Empty:
            line = None
        if line is None or not line.startswith("READY "):
            self.stop(keep_stderr=True)
            err = self.stderr()
            self._close_stderr()
            raise SimStartError(f"simulator did not get ready: {line!r}; stderr:\n{err}")
        self.url = line.split()[1]
        self.ws_url = "ws://" + self.url.removeprefix("http://")
        self._http = httpx.Client(base_url=self.url, timeout=10.0)
        return self

    def stderr(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()

    def _client(self) -> httpx.Client:
        if self._http is None:
            raise RuntimeError("simulator not started")
        return self._http

    def admin(self, faults: dict[str, Any]) -> dict[str, Any]:
        r = self._client().post("/_sim/faults", json=faults)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def state(self) -> dict[str, Any]:
        r = self._client().get("/_sim/state")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def truth(self, symbol: str, interval: str, start: int, end: int) -> bytes:
        params: dict[str, str | int] = {"symbol": symbol, "interval": interval}
        params.update(start=start, end=end)
        r = self._client().get("/_sim/truth", params=params)
        r.raise_for_status()
        return r.content

    def clock(self, speed: float) -> dict[str, Any]:
        r = self._client().post("/_sim/clock", json={"speed": speed})
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()

    def stop(self, timeout: float = 5.0, *, keep_stderr: bool = False) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s; returns the exit code."""
        if self._http is not None:
            self._http.close()
            self._http = None
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self._proc.wait(timeout)
            code = self._proc.returncode
            if self._proc.stdout is not None:
                self._proc.stdout.close()
        if not keep_stderr:
            self._close_stderr()
        return code

    def __enter__(self) -> SimProcess:
        return self.start() if not self.pid else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


SimHandle = SimProcess


@contextmanager
def run_simulator(
    data_dir: str | os.PathLike[str] | None = None,
    *extra_args: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[SimHandle]:
    """Start the simulator, yield its handle, stop it on exit (see the module docstring)."""
    sim = SimProcess(data_dir, *extra_args, env=env).start()
    try:
        yield sim
    finally:
        sim.stop()
