"""Fatal answers are fatal (issue 13): a streamer that Binance refuses (HTTP 451 restricted
location, 403 WAF; from REST or at the WS handshake) or whose exchangeInfo never answers exits
EXIT_BLOCKED within a bounded time with ONE line naming the status, the URL and what to do, and
its health says `blocked`. The same streamer against a healthy simulator runs on; `--check`
answers 4 / 4 / 0 for 451 / 403 / 200."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from binance_sim.testing import SimProcess, run_simulator
from klinelake.config import EXIT_BLOCKED
from localcloud import wait_for

BOUND_S = 30  # every refused streamer is gone within this (real) time


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with run_simulator(None, "--synthetic", "BTCUSDT:1m:2024-01-01", "--speed", "1") as s:
        yield s


@pytest.fixture(autouse=True)
def healthy(sim: SimProcess) -> Iterator[None]:
    yield
    sim.admin({"rest_block": 0, "ws_block": 0, "rest_5xx": 0})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(sim: SimProcess, tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "streamer", "--symbols", "BTCUSDT", "--intervals", "1m",
        "--lake", str(tmp_path / "lake"), "--state-dir", str(tmp_path / "state"),
        "--rest-url", sim.url, "--ws-url", sim.ws_url, *extra,
    ]  # fmt: skip


def _run(sim: SimProcess, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _args(sim, tmp_path, *extra), capture_output=True, text=True, timeout=BOUND_S
    )


def _one_critical(stderr: str) -> dict[str, Any]:
    lines = [json.loads(x) for x in stderr.splitlines() if x.startswith("{")]
    critical = [x for x in lines if x["severity"] == "CRITICAL"]
    assert len(critical) == 1, stderr
    assert "Traceback" not in stderr
    return critical[0]


def _health(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "state" / "health.json").read_text()))


@pytest.mark.parametrize(
    ("fault", "status", "where"),
    [
        ({"rest_block": 451}, 451, "/api/v3/"),
        ({"rest_block": 403}, 403, "/api/v3/"),
        ({"ws_block": 451}, 451, "WS handshake"),
        ({"ws_block": 403}, 403, "WS handshake"),
    ],
)
def test_refused_streamer_exits_4_with_one_line(
    sim: SimProcess, tmp_path: Path, fault: dict[str, int], status: int, where: str
) -> None:
    sim.admin(fault)
    out = _run(sim, tmp_path)
    assert out.returncode == EXIT_BLOCKED, out.stderr
    line = _one_critical(out.stderr)
    msg = line["message"]
    assert msg.startswith(f"blocked: Binance answered HTTP {status} (")
    assert where in msg and sim.url.split("//")[1] in msg  # which URL
    for hint in ("BINANCE_REST_URL=https://data-api.binance.vision",
                 "BINANCE_WS_URL=wss://data-stream.binance.vision:443", "region"):  # fmt: skip
        assert hint in msg
    if status == 451 and where == "/api/v3/":
        assert "restricted location" in msg
    health = _health(tmp_path)
    assert health["state"] == "blocked" and health["reason"] == msg
    assert not (tmp_path / "lake").exists()


def test_exchange_info_that_never_answers_is_blocked_within_the_deadline(
    sim: SimProcess, tmp_path: Path
) -> None:
    """5xx forever: the health endpoint says `blocked` while it lasts; exit 4 after the deadline."""
    sim.admin({"rest_5xx": 1_000_000})
    port = _free_port()
    proc = subprocess.Popen(
        _args(sim, tmp_path, "--exchange-info-deadline", "15", "--health-port", str(port)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def endpoint_state() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    return str(json.loads(r.read())["state"])
            except OSError:
                return None

        assert wait_for(lambda: endpoint_state() == "blocked", 20, 0.1, "health: blocked")
        _, stderr = proc.communicate(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == EXIT_BLOCKED
    msg = _one_critical(stderr)["message"]
    assert msg.startswith(f"blocked: exchangeInfo at {sim.url} did not answer within 15 s")
    assert "BINANCE_REST_URL" in msg
    assert _health(tmp_path)["state"] == "blocked"


def test_healthy_simulator_is_unaffected(sim: SimProcess, tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        _args(sim, tmp_path, "--health-port", str(port)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def running() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                health = _health(tmp_path)
            except (OSError, ValueError):
                return False
            return health["state"] == "running" and health["connections"] == 1

        wait_for(running, 20, 0.1, "the streamer to run with one connection")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr
    assert '"CRITICAL"' not in stderr
    assert _health(tmp_path)["state"] == "stopping"


@pytest.mark.parametrize(
    ("fault", "code", "text"),
    [
        ({"rest_block": 451}, EXIT_BLOCKED, "HTTP 451"),
        ({"rest_block": 403}, EXIT_BLOCKED, "HTTP 403"),
        ({"ws_block": 451}, EXIT_BLOCKED, "WS handshake"),
        ({}, 0, "ok: exchangeInfo"),
    ],
)
def test_check_mode(
    sim: SimProcess, tmp_path: Path, fault: dict[str, int], code: int, text: str
) -> None:
    if fault:
        sim.admin(fault)
    t0 = time.monotonic()
    out = _run(sim, tmp_path, "--check", "--check-timeout", "10")
    assert out.returncode == code, out.stdout + out.stderr
    printed = (out.stdout if code == 0 else out.stderr).strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("streamer --check: ")
    assert text in printed[0]
    assert time.monotonic() - t0 < BOUND_S
    assert not (tmp_path / "state").exists()  # a check changes nothing
