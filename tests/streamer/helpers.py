"""Running `python -m streamer` as a subprocess against the simulator, and reading the results."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.intervals import last_closed_open_time, next_open_time
from klinelake.core.row import parse_lake_line
from klinelake.core.symbols import object_name, stream_id
from localcloud import wait_for
from streamer.spool import Spool

ROOT = Path(__file__).resolve().parents[2]


class Streamer:
    def __init__(
        self, sim: Any, state_dir: Path, symbols: str, intervals: str, speed: float,
        *extra: str, lake: Path | None = None, env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.state_dir = state_dir
        # a previous run's health file would answer for this one until it writes its own
        with contextlib.suppress(OSError):
            (state_dir / "health.json").unlink()
        # with --health-port, health comes from the endpoint (the state dir may be full)
        self.health_port = int(extra[extra.index("--health-port") + 1]) if (
            "--health-port" in extra
        ) else None  # fmt: skip
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        args = [
            sys.executable, "-m", "streamer", "--symbols", symbols, "--intervals", intervals,
            "--rest-url", sim.url, "--ws-url", sim.ws_url, "--state-dir", str(state_dir),
            "--clock-speed", str(speed), *extra,
        ]  # fmt: skip
        if lake is not None:
            args += ["--lake", str(lake)]
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = str(ROOT)
        full_env.pop("KLINES_TOPIC", None) if lake is not None else None
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=full_env, stderr=self._log)
        self.pid = self.proc.pid

    def health(self) -> dict[str, Any]:
        if self.health_port is not None:
            try:
                got: dict[str, Any] = httpx.get(
                    f"http://127.0.0.1:{self.health_port}/", timeout=5
                ).json()
            except (httpx.HTTPError, ValueError):
                return {}
            return got
        try:
            out: dict[str, Any] = orjson.loads((self.state_dir / "health.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def streamer(*args: Any, **kwargs: Any) -> Iterator[Streamer]:
    s = Streamer(*args, **kwargs)
    try:
        yield s
    finally:
        s.kill()


def lake_bytes(lake: Any, symbol: str, interval: str) -> bytes:
    """From a local lake directory (through `LocalStore`, which escapes names: `1M` is not
    `1m` on disk), or from a `localcloud.Stack` (fake-gcs)."""
    name = object_name(symbol, interval)
    if isinstance(lake, Path):
        return read_object(LocalStore(lake), name)
    return bytes(lake.read_object(name) or b"")


def lake_last_open(lake: Any, symbol: str, interval: str) -> int | None:
    data = lake_bytes(lake, symbol, interval)
    # the local lake appends in place: a reader may see a partial last line
    data = data[: data.rfind(b"\n") + 1]
    if not data:
        return None
    return parse_lake_line(data.rstrip(b"\n").rsplit(b"\n", 1)[-1]).open_time


def published_upto(state_dir: Path) -> dict[str, int]:
    """The spool's record of the last kline the sink acknowledged, per stream."""
    db = sqlite3.connect(f"file:{state_dir / 'spool.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT stream, open_time FROM published").fetchall())
    finally:
        db.close()


def truncate_wal(spool_path: Path) -> None:
    """Checkpoint the spool's WAL down to zero bytes, so that its next write needs new disk
    space (a WAL that already has room reuses it: a full disk would go unnoticed for a while)."""
    db = sqlite3.connect(spool_path, timeout=10)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def lake_has_published(lake: Any, state_dir: Path, seeded: dict[str, int] | None = None) -> bool:
    """The lake has every kline the spool says the sink acknowledged (with `seeded`, from
    `seed_published`: a stream still at its seed has published nothing yet)."""
    for sid, upto in published_upto(state_dir).items():
        if seeded is not None and upto < seeded.get(sid, upto):
            continue
        symbol, interval = sid.split("@")
        last = lake_last_open(lake, symbol, interval)
        if last is None or last < upto:
            return False
    return True


def counter(h: dict[str, Any], key: str) -> int:
    return int(h.get(key) or 0)


def wait_health(s: Streamer, pred: Any, timeout: float, what: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        assert s.alive(), f"streamer exited: {s.log_text()[-2000:]}"
        h = s.health()
        return h if h and pred(h) else None

    result: dict[str, Any] = wait_for(check, timeout, 0.05, what)
    return result


def seed_published(
    state_dir: Path, sim: Any, streams: list[tuple[str, str]], ahead_ms: int = 0
) -> dict[str, int]:
    """Start the streamer's record as if every stream were published up to the kline closed
    last by the simulator's now (+ `ahead_ms`: then the head comes live over WS, with no REST
    repair at start): it must publish from exactly the next one on, which pins the head of the
    span a test expects. Returns that first open_time by stream id."""
    now = sim.state()["now"] + ahead_ms
    spool = Spool(state_dir / "spool.sqlite3")
    spool.open()
    first = {}
    try:
        for symbol, interval in streams:
            seed = last_closed_open_time(now, interval)
            spool.ack(stream_id(symbol, interval), seed)
            first[stream_id(symbol, interval)] = next_open_time(seed, interval)
    finally:
        spool.close()
    return first


def newest_closed(sim: Any, symbol: str, interval: str) -> int | None:
    """The open_time of the newest kline of the stream the simulator has closed by now."""
    now = sim.state()["now"]
    newest = last_closed_open_time(now, interval)
    truth = sim.truth(symbol, interval, newest - 3 * 86_400_000, newest)
    if not truth:
        return None
    return parse_lake_line(truth.rstrip(b"\n").rsplit(b"\n", 1)[-1]).open_time


def caught_up(lake: Any, sim: Any, streams: list[tuple[str, str]]) -> dict[str, int] | None:
    """Every stream's lake object ends with (or after) the newest kline the simulator has
    closed: those open_times by stream id (the tail a test then expects), else None."""
    want = {}
    for symbol, interval in streams:
        newest = newest_closed(sim, symbol, interval)
        if newest is None:
            continue
        last = lake_last_open(lake, symbol, interval)
        if last is None or last < newest:
            return None
        want[stream_id(symbol, interval)] = newest
    return want


def assert_lake_matches_truth(
    lake: Any, sim: Any, symbol: str, interval: str, *, first: int, last: int
) -> int:
    """The lake object is byte-identical to the simulator's truth over the whole expected span:
    from `first` (a missing head fails) to at least `last` (a missing tail fails), and up to
    its own last row. Returns the number of rows."""
    data = lake_bytes(lake, symbol, interval)
    assert data, f"no lake object for {symbol}@{interval}"
    end = lake_last_open(lake, symbol, interval)
    assert end is not None and end >= last, f"{symbol}@{interval}: tail missing after {end}"
    truth = sim.truth(symbol, interval, first, end)
    if data != truth:
        got = {parse_lake_line(x).open_time for x in data.splitlines()}
        want = {parse_lake_line(x).open_time for x in truth.splitlines()}
        raise AssertionError(
            f"{symbol}@{interval}: {len(data.splitlines())} rows vs {len(truth.splitlines())} "
            f"in truth over [{first}, {end}]; missing {sorted(want - got)[:5]}, "
            f"extra {sorted(got - want)[:5]}"
        )
    return len(truth.splitlines())
