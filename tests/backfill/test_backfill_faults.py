"""Simulator faults: latency, 5xx, 429 + Retry-After, 418 bans, the weight budget; and a
SIGKILL at a random point followed by a re-run (identical lake, finished pages not refetched)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from backfill.__main__ import parse_time
from backfill.checkpoint import Checkpoint
from binance_sim.testing import SimProcess, run_simulator
from klinelake.binance.rest import IPBanned
from localcloud import wait_for

from .conftest import (
    ROOT,
    SIM_ARGS,
    backfill,
    cli_args,
    cli_env,
    fixture_lines,
    lake_bytes,
    run_cli,
)

BTCUSDT = "binance_btcusdt_1h.jsonl"
BTCUSDC = "binance_btcusdc_1h.jsonl"
MAY_1 = parse_time("2023-05-01")
MAY_31_END = parse_time("2023-05-31", end=True)


def counters(sim: SimProcess) -> dict[str, int]:
    return sim.state()["counters"]  # type: ignore[no-any-return]


async def test_latency_5xx_and_429_are_survived(tmp_path: Path) -> None:
    # 2 s weight windows so that a 429's Retry-After (the rest of the window) is short
    with run_simulator(None, *SIM_ARGS, "--weight-window", "2") as sim:
        sim.admin({"latency_ms": 50, "rest_5xx": 3, "rest_429": 1})
        started = time.monotonic()
        result = await backfill(
            sim, tmp_path, symbols=("BTCUSDT",), start_ms=MAY_1, end_ms=MAY_31_END,
            page_limit=100, concurrency=4,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        c = counters(sim)
    assert lake_bytes(tmp_path / "lake", BTCUSDT) == fixture_lines("2023-05")
    assert c["responses_5xx"] == 3 and c["responses_429"] == 1
    assert result.retries == 4 and result.requests == c["requests"]
    assert elapsed >= 1.0  # Retry-After (>= 1 s) was waited, by everyone


async def test_weight_header_never_exceeds_the_budget(tmp_path: Path) -> None:
    # a tiny limit in 3 s windows: 100 weight, 80 % share = 80 per window; the run needs ~200
    with run_simulator(None, *SIM_ARGS, "--weight-limit", "100", "--weight-window", "3") as sim:
        headers: list[int] = []
        result = await backfill(
            sim, tmp_path, headers, symbols=("BTCUSDC",), start_ms=parse_time("2023-01-01"),
            end_ms=parse_time("2023-03-31", end=True), page_limit=24, concurrency=16,
        )  # fmt: skip
        c = counters(sim)
        truth = sim.truth(
            "BTCUSDC", "1h", parse_time("2023-01-01"), parse_time("2023-03-31", end=True)
        )
    assert result.budget == 80 and result.pages_fetched == 90
    assert len(headers) == result.requests == 91
    assert max(headers) <= 80, headers
    assert c["responses_429"] == 0 and c["responses_418"] == 0
    assert lake_bytes(tmp_path / "lake", BTCUSDC) == truth


def test_banned_before_start_exits_3_without_further_requests(tmp_path: Path) -> None:
    with run_simulator(None, *SIM_ARGS) as sim:
        sim.admin({"rest_418": 1, "ban_seconds": 5})
        done = run_cli(sim, tmp_path, "--symbols", "BTCUSDT", "--start", "2023-05-01")
        c = counters(sim)
    assert done.returncode == 3, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("backfill: error: IP banned by Binance for 5 s (until "), line
    assert c["requests"] == 1 and c["requests_while_banned"] == 0


async def test_banned_mid_run_stops_every_request(tmp_path: Path) -> None:
    with run_simulator(None, *SIM_ARGS) as sim:
        seen: list[int] = []

        def on_weight(used: int) -> None:
            seen.append(used)
            if len(seen) == 4:  # after exchangeInfo and three pages: the next request is banned
                sim.admin({"rest_418": 1, "ban_seconds": 30})

        from backfill.run import run_backfill
        from backfill.settings import Settings

        from .conftest import Quiet

        settings = Settings(
            symbols=("BTCUSDT",), start_ms=MAY_1, end_ms=MAY_31_END, page_limit=24,
            batch_rows=24, concurrency=1, rest_url=sim.url, lake=str(tmp_path / "lake"),
            state_dir=tmp_path / "state",
        )  # fmt: skip
        with pytest.raises(IPBanned) as info:
            await run_backfill(settings, Quiet(), on_used_weight=on_weight)
        c = counters(sim)
    assert 29 <= info.value.retry_after_s <= 30
    assert c["responses_418"] == 1 and c["requests"] == 5 and c["requests_while_banned"] == 0
    # what was sent before the ban is in the lake and checkpointed
    first_pages = fixture_lines("2023-05").splitlines(keepends=True)[: 3 * 24]
    assert lake_bytes(tmp_path / "lake", BTCUSDT) == b"".join(first_pages)


KILL_SEED = 14


def test_killed_at_a_random_point_then_rerun(tmp_path: Path) -> None:
    args = (
        "--symbols", "BTCUSDT,BTCUSDC", "--start", "2023-05-01", "--end", "2023-05-31",
        "--page-limit", "10", "--batch-rows", "10", "--concurrency", "3",
    )  # fmt: skip
    pages_total = 2 * 75  # 744 hours on a 10-hour grid: 75 pages per stream
    kill_after = random.Random(KILL_SEED).randint(5, 100)  # seeded: a failure reproduces
    with run_simulator(None, *SIM_ARGS, "--latency-ms", "20") as sim:
        proc = subprocess.Popen(
            cli_args(sim, tmp_path, *args), cwd=ROOT, env=cli_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            checkpoints = tmp_path / "state" / "backfill"

            def finished_pages() -> int:
                files = list(checkpoints.glob("*.jsonl")) if checkpoints.exists() else []
                return files[0].read_bytes().count(b"\n") if files else 0

            wait_for(lambda: finished_pages() >= kill_after, timeout=60, interval=0.005,
                     what=f"{kill_after} pages checkpointed")  # fmt: skip
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        (path,) = checkpoints.glob("*.jsonl")
        done_before = len(Checkpoint(path.parent.parent, path.stem).load())
        assert kill_after <= done_before < pages_total
        before = counters(sim)["requests"]
        again = run_cli(sim, tmp_path, *args)
        assert again.returncode == 0, again.stderr
        sent = counters(sim)["requests"] - before
        truth = sim.truth("BTCUSDC", "1h", MAY_1, MAY_31_END)
    # exchangeInfo + exactly the pages not checkpointed: none fetched twice after the checkpoint
    assert sent == 1 + pages_total - done_before
    assert lake_bytes(tmp_path / "lake", BTCUSDT) == fixture_lines("2023-05")
    assert lake_bytes(tmp_path / "lake", BTCUSDC) == truth


def test_ctrl_c_exits_130_with_the_checkpoint_intact(tmp_path: Path) -> None:
    args = (
        "--symbols", "BTCUSDT", "--start", "2023-05-01", "--end", "2023-05-31",
        "--page-limit", "10", "--batch-rows", "10", "--concurrency", "2",
    )  # fmt: skip
    with run_simulator(None, *SIM_ARGS, "--latency-ms", "20") as sim:
        proc = subprocess.Popen(
            cli_args(sim, tmp_path, *args), cwd=ROOT, env=cli_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            checkpoints = tmp_path / "state" / "backfill"
            wait_for(lambda: any(p.stat().st_size > 200 for p in checkpoints.glob("*.jsonl")),
                     timeout=60, interval=0.005, what="pages checkpointed")  # fmt: skip
            os.kill(proc.pid, signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        assert proc.returncode == 130, stderr
        assert "interrupted; the checkpoint is kept" in stderr.strip().splitlines()[-1]
        (path,) = checkpoints.glob("*.jsonl")
        done_before = len(Checkpoint(path.parent.parent, path.stem).load())
        before = counters(sim)["requests"]
        again = run_cli(sim, tmp_path, *args)
        assert again.returncode == 0, again.stderr
        assert counters(sim)["requests"] - before == 1 + 75 - done_before
    assert lake_bytes(tmp_path / "lake", BTCUSDT) == fixture_lines("2023-05")
