"""A selector run (issue 17): the simulator lists a new USD-M symbol and delists another
mid-run; the streamer adds and retires them within one exchangeInfo period, with no reconnect
and no stall alarm, and every closed kline of every listed stream is in the lake once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from binance_sim.testing import run_simulator
from klinelake.core.intervals import MINUTE, align_down
from localcloud import wait_for
from tests.futures.helpers import assert_matches_truth, lake_object
from tests.streamer.helpers import streamer, wait_health

SPEED = 60.0  # a simulated minute per real second
START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
PERIOD_S = 1.0  # --exchange-info-interval: one period = 60 simulated seconds
ONBOARD = "2025-12-31T22:00"


def _first_open(data: bytes) -> int:
    return int(data.split(b'"open_time":', 1)[1].split(b",", 1)[0])


def _last_open(data: bytes) -> int:
    return int(data.splitlines()[-1].split(b'"open_time":')[1].split(b",")[0])


def test_selector_follows_listings_and_delistings(tmp_path: Path) -> None:
    contracts = []
    for sym in ("AAAUSDT", "BBBUSDT", "CCCUSDC"):
        contracts += ["--futures", f"um:{sym}:onboard={ONBOARD}"]
    lake = tmp_path / "lake"
    with run_simulator(None, "--start", str(START), "--speed", str(SPEED), *contracts) as sim:
        args: tuple[Any, ...] = (
            tmp_path / "st", "um:quote=USDT", "1m", SPEED, "--ws-url", f"{sim.ws_url}/fstream",
            "--exchange-info-interval", str(PERIOD_S),
        )  # fmt: skip
        with streamer(sim, *args, lake=lake) as st:
            h = wait_health(st, lambda h: all(
                (h["streams"].get(f"um:{s}@1m") or {}).get("last_closed_open_time")
                for s in ("AAAUSDT", "BBBUSDT")), 30, "selected symbols streaming")  # fmt: skip
            assert "um:CCCUSDC@1m" not in h["streams"]  # quoted in USDC: not selected
            listed = httpx.post(f"{sim.url}/_sim/futures/list",
                                json={"market": "um", "symbol": "DDDUSDT"}).json()  # fmt: skip
            gone = httpx.post(f"{sim.url}/_sim/futures/delist",
                              json={"market": "um", "symbol": "BBBUSDT"}).json()  # fmt: skip
            listed_at, delisted_at = listed["at"], gone["at"]
            assert gone["symbol"]["status"] == "CLOSE"
            h = wait_health(st, lambda h: (
                (h["streams"].get("um:DDDUSDT@1m") or {}).get("last_closed_open_time") or 0
            ) >= listed_at + 2 * MINUTE and (h["streams"].get("um:BBBUSDT@1m") or {}).get(
                "ended"), 30, "new listing streamed, delisting retired")  # fmt: skip
            ended = h["streams"]["um:BBBUSDT@1m"]["ended"]
            assert ended["reason"] == "CLOSE"
            # retired within one exchangeInfo period (60 simulated s) plus scheduling slack
            assert delisted_at <= ended["end_ms"] <= delisted_at + 2 * 60_000
            wait_for(lambda: st.health()["server_time"] > delisted_at + 3 * MINUTE, 20)
            assert st.health()["reconnects"] == 0
            assert st.terminate() == 0
            log = st.log_text()
            assert "connection stalled" not in log and "stream quiet" not in log
            assert "stream halted" not in log and "silent" not in log  # not a halt either
            assert "stream ended" in log and "symbol listed: streaming" in log
        # every closed kline of every listed stream, once, byte for byte
        aaa = lake_object(lake, "um:AAAUSDT@1m")
        assert_matches_truth(lake, sim, "um:AAAUSDT@1m", _first_open(aaa), _last_open(aaa))
        bbb = lake_object(lake, "um:BBBUSDT@1m")
        assert _last_open(bbb) == align_down(delisted_at - 1, "1m")  # to its very end
        assert_matches_truth(lake, sim, "um:BBBUSDT@1m", _first_open(bbb), delisted_at)
        ddd = lake_object(lake, "um:DDDUSDT@1m")
        assert _first_open(ddd) == align_down(listed_at, "1m")  # from the listing on
        assert_matches_truth(lake, sim, "um:DDDUSDT@1m", listed_at - MINUTE, _last_open(ddd))
        assert not (lake / "raw" / "binance-um_cccusdc_1m.jsonl").exists()
