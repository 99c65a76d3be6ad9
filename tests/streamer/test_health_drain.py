"""Health (file, HTTP endpoint, sd_notify) and the SIGTERM drain bound with a dead sink."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import orjson

from binance_sim.testing import run_simulator
from localcloud import wait_for
from localcloud.procs import free_port
from streamer.health import sd_notify, serve_http, write_atomic
from tests.streamer.helpers import (
    assert_lake_matches_truth,
    caught_up,
    counter,
    lake_has_published,
    lake_last_open,
    seed_published,
    streamer,
    wait_health,
)


def test_sd_notify_sends_to_the_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(100) == b"READY=1"
    assert not sd_notify("WATCHDOG=1", {})  # not under systemd: nothing to do


def test_write_atomic_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    write_atomic(path, b"{}")
    write_atomic(path, b'{"a":1}')
    assert path.read_bytes() == b'{"a":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["health.json"]


async def test_http_endpoint_serves_the_snapshot() -> None:
    server = await serve_http(0, lambda: {"streams": {"A@1m": {"lag_ms": 5}}})
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/health")
        assert r.status_code == 200
        assert r.json() == {"streams": {"A@1m": {"lag_ms": 5}}}
    finally:
        server.close()
        await server.wait_closed()


def test_sigterm_with_pubsub_down_exits_within_the_drain_bound_and_keeps_the_spool(
    tmp_path: Path,
) -> None:
    speed = 600.0
    args = ["--start", "2024-05-01T00:00:00", "--speed", str(speed),
            "--synthetic", "DRAINUSDC:1m:2024-04-01"]  # fmt: skip
    state, lake = tmp_path / "state", tmp_path / "lake"
    notify = tmp_path / "notify"
    dead = free_port()  # nothing listens there: every publish fails
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{dead}",
           "KLINES_TOPIC": "projects/p/topics/klines", "NOTIFY_SOCKET": str(notify)}  # fmt: skip
    port = free_port()
    with (
        run_simulator(None, *args) as sim,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        sock.bind(str(notify))
        sock.settimeout(10)
        first = seed_published(state, sim, [("DRAINUSDC", "1m")])["DRAINUSDC@1m"]
        flags = ("--drain-timeout", "2", "--publish-timeout", "1", "--health-port", str(port))
        with streamer(sim, state, "DRAINUSDC", "1m", speed, *flags, env=env) as st:
            assert sock.recv(100) == b"READY=1"
            assert sock.recv(100) == b"WATCHDOG=1"
            wait_health(st, lambda h: counter(h, "spool_depth") >= 5, 30, "spool fills")
            url = f"http://127.0.0.1:{port}/"
            wait_for(lambda: httpx.get(url, timeout=5).json()["streams"]["DRAINUSDC@1m"][
                "send_failures"] > 0, 30, 0.05, "the endpoint shows failures")  # fmt: skip
            t0 = time.monotonic()
            assert st.terminate() == 0
            took = time.monotonic() - t0
        assert took < 2 + 3  # drain bound plus process start-up/shut-down slack
        left = orjson.loads((state / "health.json").read_bytes())["spool_depth"]
        assert left >= 5
        # the spool is sink-agnostic: the next start (here on the local lake) sends it first
        with streamer(sim, state, "DRAINUSDC", "1m", speed, lake=lake) as st:
            wait_for(lambda: lake_has_published(lake, state) and lake_last_open(
                lake, "DRAINUSDC", "1m"), 30, 0.05, "spool re-sent")  # fmt: skip
            wait_health(st, lambda h: counter(h, "spool_depth") == 0, 30, "spool empty")
            last = wait_for(lambda: caught_up(lake, sim, [("DRAINUSDC", "1m")]), 30, 0.05,
                            "live again")["DRAINUSDC@1m"]  # fmt: skip
            assert st.terminate() == 0
        rows = assert_lake_matches_truth(lake, sim, "DRAINUSDC", "1m", first=first, last=last)
        assert rows >= left
