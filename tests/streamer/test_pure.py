"""Unit tests of the streamer's pure modules: shards, stall, backoff, clock, repair planning."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from klinelake.core.intervals import HOUR, MINUTE
from streamer.backoff import Backoff, TokenBucket
from streamer.clock import ServerClock
from streamer.config import Settings, parse_streams
from streamer.repair import plan_gaps
from streamer.shards import send_offsets, shard, subscribe_frames
from streamer.stall import expected_close

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


@given(st.integers(0, 5000), st.integers(1, 1024))
def test_shard_bounds_and_order(n: int, per: int) -> None:
    items = list(range(n))
    groups = shard(items, per)
    assert [x for g in groups for x in g] == items
    assert all(1 <= len(g) <= per for g in groups)
    assert len(groups) == -(-n // per)
    if groups:
        assert max(map(len, groups)) - min(map(len, groups)) <= 1


def test_shard_rejects_over_1024() -> None:
    with pytest.raises(ValueError):
        shard(["a"], 1025)


def test_subscribe_frames_and_pacing() -> None:
    streams = [f"s{i}@kline_1m" for i in range(450)]
    frames = subscribe_frames(streams, 7, 200)
    assert [fid for fid, _ in frames] == [7, 8, 9]
    bodies = [orjson.loads(f) for _, f in frames]
    assert [len(b["params"]) for b in bodies] == [200, 200, 50]
    assert bodies[0]["method"] == "SUBSCRIBE" and bodies[2]["id"] == 9
    assert [p for b in bodies for p in b["params"]] == streams
    offs = send_offsets(9, 4.0)
    # at most 4 frames in any 1 s window: leaves room for pongs under Binance's 5/s
    assert all(offs[i + 4] - offs[i] >= 1.0 for i in range(len(offs) - 4))


def test_expected_close() -> None:
    assert expected_close(T0 + 30_000, "1m") == T0 + MINUTE - 1
    assert expected_close(T0, "1h") == T0 + HOUR - 1


def test_backoff_capped_full_jitter() -> None:
    b = Backoff(0.5, 8.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    b.reset()
    assert b.next_delay() == 0.5
    assert Backoff(0.5, 8.0, rand=lambda: 0.0).next_delay() == 0.0


def test_token_bucket_300_per_5_minutes() -> None:
    now = [0.0]
    bucket = TokenBucket(300, 300.0, clock=lambda: now[0])
    assert sum(bucket.try_take() for _ in range(400)) == 300
    assert bucket.wait_time() == pytest.approx(1.0)
    now[0] = 10.0
    assert sum(bucket.try_take() for _ in range(50)) == 10


def test_server_clock_speed_sync_and_observe() -> None:
    real = [100.0]
    c = ServerClock(3600.0, real=lambda: real[0], now_ms=T0)
    real[0] += 1.0
    assert c.now_ms() == T0 + HOUR
    c.observe(T0)  # an older event never moves the clock back
    assert c.now_ms() == T0 + HOUR
    c.observe(T0 + 2 * HOUR)
    assert c.now_ms() == T0 + 2 * HOUR
    c.sync(T0)
    assert c.now_ms() == T0
    assert c.real_seconds(HOUR) == pytest.approx(1.0)


def test_plan_gaps() -> None:
    m = MINUTE
    # nothing published, nothing spooled: no history to repair
    assert plan_gaps(last_published=None, spooled=[], first_spooled=None, target=T0,
                     interval="1m") == []  # fmt: skip
    # published up to T0; spooled T0+3m, T0+4m; target T0+6m
    gaps = plan_gaps(last_published=T0, spooled=[T0 + 3 * m, T0 + 4 * m],
                     first_spooled=T0 + 3 * m, target=T0 + 6 * m, interval="1m")  # fmt: skip
    assert gaps == [(T0 + m, T0 + 2 * m), (T0 + 5 * m, T0 + 6 * m)]
    # nothing published: history starts at the first spooled kline
    gaps = plan_gaps(last_published=None, spooled=[T0, T0 + 2 * m], first_spooled=T0,
                     target=T0 + 2 * m, interval="1m")  # fmt: skip
    assert gaps == [(T0 + m, T0 + m)]
    assert plan_gaps(last_published=T0, spooled=[], first_spooled=None, target=T0,
                     interval="1m") == []  # fmt: skip


def test_settings_streams_and_grace() -> None:
    streams = parse_streams("btcusdc, ETHUSDC", "1m,1h")
    assert [s.sid for s in streams] == ["BTCUSDC@1m", "BTCUSDC@1h", "ETHUSDC@1m", "ETHUSDC@1h"]
    assert streams[0].ws_name == "btcusdc@kline_1m"
    assert Settings(streams).stall_grace_ms == 30_000
    assert Settings(streams, clock_speed=3600).stall_grace_ms == 3 * 3600 * 1000
    with pytest.raises(ValueError):
        parse_streams("", "1h")


def test_pure_modules_import_no_network_client() -> None:
    import subprocess
    import sys

    pure = ["streamer.shards", "streamer.stall", "streamer.backoff", "streamer.clock",
            "streamer.repair", "streamer.config", "streamer.slot_policy"]  # fmt: skip
    # (the bare `google.cloud` namespace is imported by a .pth file at start-up)
    forbidden = ("websockets", "httpx", "aiohttp", "google.cloud.", "google.api_core", "grpc",
                 "sqlite3")  # fmt: skip
    code = (
        "import sys\n"
        f"for m in {pure!r}: __import__(m)\n"
        f"print(','.join(sorted(m for m in sys.modules if m.startswith({forbidden!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
