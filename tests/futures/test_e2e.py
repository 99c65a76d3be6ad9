"""Futures end to end on the simulator (issue 17): a USD-M perpetual, a USD-M delivery contract
that settles mid-run and a COIN-M perpetual, each backfilled and streamed through SIGKILL +
restart, byte-identical to the simulator's truth; COIN-M rows carry the COIN-M keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from binance_sim.testing import run_simulator
from klinelake.core.intervals import MINUTE
from localcloud import wait_for
from tests.futures.helpers import ROOT, assert_matches_truth, backfill, lake_object
from tests.streamer.helpers import streamer, wait_health

SPEED = 60.0  # a simulated minute per real second
START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DELIVERY = START + 20 * MINUTE  # 20 real seconds in: while streaming, on a loaded machine too
HISTORY = START - 3 * 60 * MINUTE
UM = "um:BTCUSDT@1m"
DATED = "um:BTCUSDT_260101@1m"
CM = "cm:BTCUSD_PERP@1m"


def sim_args() -> list[str]:
    return ["--start", str(START), "--speed", str(SPEED), "--futures-ping-interval", "2",
            "--futures", "um:BTCUSDT:onboard=2025-06-01",
            "--futures", f"um:BTCUSDT_260101:onboard=2025-10-01,delivery={DELIVERY}",
            "--futures", "cm:BTCUSD_PERP:onboard=2025-01-01"]  # fmt: skip


def _published(h: dict[str, Any], sid: str, at_least: int) -> bool:
    v = h.get("streams", {}).get(sid) or {}
    return (v.get("last_closed_open_time") or 0) >= at_least


def run_futures(sim: Any, tmp: Path, lake: Any, env: dict[str, str] | None = None) -> None:
    """Backfill, stream, SIGKILL, restart, past the delivery; then compare with the truth."""
    common = ("--intervals", "1m", "--exchange-info-interval", "1", "--subscribe-timeout", "3")
    um_args: tuple[Any, ...] = (
        tmp / "st-um", "BTCUSDT,BTCUSDT_260101", "1m", SPEED,
        "--market", "um", "--ws-url", f"{sim.ws_url}/fstream", *common,
    )  # fmt: skip
    cm_args: tuple[Any, ...] = (
        tmp / "st-cm", "BTCUSD_PERP", "1m", SPEED,
        "--market", "cm", "--ws-url", f"{sim.ws_url}/dstream", *common,
    )  # fmt: skip
    kw: dict[str, Any] = {"lake": lake if isinstance(lake, Path) else None, "env": env}
    with streamer(sim, *um_args, **kw) as um, streamer(sim, *cm_args, **kw) as cm:
        t = sim.state()["now"]
        for st, sids in ((um, (UM, DATED)), (cm, (CM,))):
            # (a slow start may already be past the delivery: then its last kline is enough)
            wait_health(st, lambda h, s=sids: all(
                _published(h, x, min(t - 2 * MINUTE, DELIVERY - MINUTE)) for x in s),
                        30, "live klines published")  # fmt: skip
        # history up to the live streams: the backfill's job (docs/runbook.md)
        sink = ["--lake", str(lake)] if isinstance(lake, Path) else []
        for market, symbols in (("um", "BTCUSDT,BTCUSDT_260101"), ("cm", "BTCUSD_PERP")):
            done = backfill(sim, market, symbols, HISTORY, sim.state()["now"], *sink,
                            "--state-dir", str(tmp / f"bf-{market}"), env=env)  # fmt: skip
            assert done.returncode == 0, done.stderr[-2000:]
        um.kill()  # SIGKILL: no drain
        cm.kill()
        killed_at = sim.state()["now"]
    with streamer(sim, *um_args, **kw) as um, streamer(sim, *cm_args, **kw) as cm:
        past = max(DELIVERY, killed_at) + 3 * MINUTE
        h = wait_health(
            um, lambda h: _published(h, UM, past) and (h["streams"].get(DATED) or {}).get("ended")
            and _published(h, DATED, DELIVERY - MINUTE), 60, "perpetual on, dated contract ended",
        )  # fmt: skip
        assert h["streams"][DATED]["ended"]["last_open_time"] == DELIVERY - MINUTE
        assert h["reconnects"] == 0  # settlement is not a stall
        wait_health(cm, lambda h: _published(h, CM, past), 30, "COIN-M on")
        assert um.terminate() == 0 and cm.terminate() == 0
        log = um.log_text()
        assert "connection stalled" not in log and "stream quiet" not in log
        assert "stream halted" not in log and "silent" not in log  # not a halt either
        assert '"stream ended"' in log or "stream ended" in log

    def lake_complete() -> bool:
        try:
            check_lake(sim, lake, past)
        except AssertionError:
            if isinstance(lake, Path):
                raise
            return False  # the cloud path: the function may still be writing
        return True

    wait_for(lake_complete, timeout=120, what="lake byte-identical to the truth")


def _last_open(data: bytes) -> int:
    return int(data.splitlines()[-1].split(b'"open_time":')[1].split(b",")[0]) if data else 0


def check_lake(sim: Any, lake: Any, past: int) -> None:
    last_um = _last_open(lake_object(lake, UM))
    assert last_um >= past
    assert_matches_truth(lake, sim, UM, HISTORY, last_um)
    assert assert_matches_truth(lake, sim, DATED, HISTORY, DELIVERY + 60 * MINUTE) == (
        (DELIVERY - HISTORY) // MINUTE
    )  # every kline up to the settlement, none after
    cm_data = lake_object(lake, CM)
    assert _last_open(cm_data) >= past
    assert_matches_truth(lake, sim, CM, HISTORY, _last_open(cm_data))
    assert b'"base_volume"' in cm_data and b'"taker_buy_base_volume"' in cm_data
    assert b"quote" not in cm_data


def test_futures_through_sigkill_local_lake(tmp_path: Path) -> None:
    with run_simulator(None, *sim_args()) as sim:
        run_futures(sim, tmp_path, tmp_path / "lake")


@pytest.mark.stack
def test_futures_through_sigkill_local_cloud(tmp_path: Path, stack: Any) -> None:
    env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT)}
    with run_simulator(None, *sim_args()) as sim:
        run_futures(sim, tmp_path, stack, env)
