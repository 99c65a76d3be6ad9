"""The end-to-end fault suite (issue 9): the whole pipeline on the local stack, over a simulated
day and more, with every fault we know of, and the lake equal to the simulator's truth at the end.

    simulator ──WS/REST──> streamer ──Pub/Sub emulator (ordered push)──> function ──> fake-gcs
                     └───> backfill (concurrent, overlapping) ──┘     operator replays ──┘

Faults, in simulated time (SPEED 1440: an hour passes in 2.5 s): a dropped connection, malformed
frames, a stall (still answering pings), serverShutdown, an exchange halt the simulator never
fills, the function failing transiently, a SIGKILL + restart of the streamer (gap repair over
REST), a Pub/Sub outage (the emulator frozen: publishes time out and are retried), duplicate
deliveries (operator re-publishes rows already in the lake), a backfill of an overlapping range
concurrently with the live stream into the same objects, the 24 h cut (scaled: the simulator
cuts connections at 8 simulated hours of age), and operator replays of poison messages with the
real gcloud CLI. Issue 12 added: a read-only state directory (refused at start, one line, exit 2),
a halted symbol on the shared connection (no reconnect: the count is asserted), and the state
directory's disk filling up during the halt (a 16 MiB tmpfs, root only; klines published from
memory meanwhile). Issue 12 item 6: the function stages every merge above 8 KiB over several
deliveries (`STAGED_MERGES`), so the backfill's and the replays' merges go through it; the count
of deferred deliveries is printed. Report: rows expected, rows found, lost 0, duplicated 0,
dead-lettered = poison.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from binance_sim.testing import run_simulator
from klinelake.core.contract import decode_message, encode_batch, make_batches
from klinelake.core.intervals import HOUR, MINUTE
from klinelake.core.row import parse_lake_line
from localcloud import Stack, wait_for
from localcloud.procs import free_port
from tests.function.helpers import STAGED_MERGES
from tests.streamer.helpers import (
    Streamer,
    assert_lake_matches_truth,
    counter,
    lake_bytes,
    lake_has_published,
    newest_closed,
    seed_published,
    truncate_wal,
    wait_health,
)
from tests.streamer.tinyfs import fill, read_only_dir

pytestmark = [pytest.mark.stack, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SPEED = 1440.0
START = "2024-03-01T00:00:00"
STREAMS = [("FAULTETH", "1m"), ("FAULTETH", "1h"), ("FAULTBTC", "1m"), ("FAULTBTC", "1h")]
SYMBOLS, INTERVALS = "FAULTETH,FAULTBTC", "1m,1h"


def at_hour(sim: Any, t0: int, hours: float, timeout: float = 120) -> None:
    wait_for(lambda: sim.state()["now"] >= t0 + hours * HOUR, timeout, 0.05, f"sim hour {hours}")


def repaired_rows(health: dict[str, Any]) -> int:
    return sum(int(v.get("repaired_rows") or 0) for v in health.get("streams", {}).values())


def gcloud_publish(stack: Stack, *args: str) -> None:
    env = {**os.environ, **stack.env()}
    cmd = ["gcloud", "pubsub", "topics", "publish", env["KLINES_TOPIC"], *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_fault_suite_lake_equals_truth(
    e2e_stack: Stack, tmp_path: Path, streamer_state: tuple[Path, str | None]
) -> None:
    stack = e2e_stack
    stack.pull_dead_letters(1000)  # start from an empty dead-letter subscription
    env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT)}
    state, no_disk_full = streamer_state
    sim_args = ["--start", START, "--speed", str(SPEED), "--ping-interval", "1",
                "--pong-timeout", "5", "--max-conn-age", str(8 * 3600)]  # fmt: skip
    for s, i in STREAMS:
        sim_args += ["--synthetic", f"{s}:{i}:2024-02-01"]
    # health over HTTP: the state directory (and its health.json) fills up in step 5c
    st_args = ("--max-conn-age", str(9 * 3600), "--stall-grace", "600", "--publish-timeout", "3",
               "--health-port", str(free_port()))  # fmt: skip
    dead_lettered_expected = 0
    with run_simulator(None, *sim_args) as sim:
        t0 = sim.state()["now"]

        def start_streamer() -> Streamer:
            return Streamer(sim, state, SYMBOLS, INTERVALS, SPEED, *st_args, env=env)

        # an exchange halt the simulator never fills (hours 8-9 of FAULTETH), declared up front
        for interval in ("1m", "1h"):
            sim.admin({"halt": {"symbol": "FAULTETH", "interval": interval,
                                "start": t0 + 8 * HOUR, "end": t0 + 9 * HOUR}})  # fmt: skip

        # the streamer's record starts at t0 (as if it had run before): it covers everything
        # from there on however long it takes to start, the backfill what lies before
        seed_published(state, sim, STREAMS)
        st = start_streamer()
        try:
            h = wait_health(st, lambda h: all(
                v["last_closed_open_time"] for v in h["streams"].values()
            ), 60, "streams live")  # fmt: skip

            # 1. a dropped connection
            at_hour(sim, t0, 1)
            rc = counter(h, "reconnects")
            sim.admin({"ws_drop": True})
            # (reconnected: the new connection is subscribed, so the next fault reaches it)
            h = wait_health(st, lambda h: counter(h, "reconnects") > rc
                            and h["connections"] == 1, 30, "reconnect (drop)")  # fmt: skip

            # 2. malformed frames
            sim.admin({"ws_malformed": 5})
            wait_health(st, lambda h: counter(h, "malformed_frames") >= 5, 30, "malformed seen")

            # 3. a stall: open, silent, still answering pings; detected by expected closes
            at_hour(sim, t0, 3)
            opened = sim.state()["counters"]["ws_opened"]
            sim.admin({"ws_stall": True, "answer_pings": True})
            wait_for(lambda: sim.state()["counters"]["ws_opened"] > opened, 30, 0.05,
                     "reconnect after the stall")  # fmt: skip
            sim.admin({"ws_stall": False})
            assert "connection stalled" in st.log_text()  # detected by us, not cut by the server

            # 4. serverShutdown: the replacement is subscribed before the old connection goes,
            #    so the switch leaves no gap for REST to repair
            at_hour(sim, t0, 5)
            h = wait_health(st, lambda h: all(
                v["lag_ms"] is not None and v["lag_ms"] < 15 * 60_000
                for sid, v in h["streams"].items() if sid.endswith("@1m")
            ), 30, "1m streams live again after the stall")  # fmt: skip
            repaired = repaired_rows(h)
            opened = sim.state()["counters"]["ws_opened"]
            sim.admin({"ws_shutdown": True, "shutdown_grace": 3})  # 3 s real to switch over
            wait_for(lambda: sim.state()["counters"]["ws_opened"] > opened, 30, 0.05,
                     "replacement connection")  # fmt: skip
            at_hour(sim, t0, 6.5)
            mark = time.time() * 1000
            h = wait_health(st, lambda h: h["time"] > mark, 30, "a health snapshot after hour 6.5")
            assert repaired_rows(h) == repaired, "the serverShutdown switch-over left a gap"

            # 5. the function fails transiently for a while (Pub/Sub redelivers)
            at_hour(sim, t0, 6)
            stack.restart_function({**STAGED_MERGES, "INGEST_FAIL_FIRST_N": "12",
                                    "INGEST_FAIL_STATE": str(tmp_path / "fails")})  # fmt: skip

            # 6. SIGKILL the streamer; two simulated hours later, restart it (gap repair)
            at_hour(sim, t0, 10)
            st.kill()
            at_hour(sim, t0, 12)
            st = start_streamer()
            wait_health(st, lambda h: bool(h.get("streams")), 60, "restarted streamer")

            # 7. a Pub/Sub outage: the emulator frozen (not restarted: a restart drops what it
            #    has acknowledged but not pushed yet, which real Pub/Sub never does and no
            #    publisher could recover); every publish times out and is retried
            at_hour(sim, t0, 14)
            emulator = stack.state.pids["pubsub"]
            os.killpg(emulator, signal.SIGSTOP)
            filler = None
            try:
                wait_health(st, lambda h: counter(h, "spool_depth") > 10, 60, "spool grows")
                # 7b. and the disk under the state directory fills up meanwhile (a tmpfs: root
                #     only) until step 11: what the spool cannot write it holds in memory and
                #     publishes from there once Pub/Sub is back
                if no_disk_full is None:
                    truncate_wal(state / "spool.sqlite3")  # its next write needs new space
                    filler = fill(state)
                    degraded = f"degraded: disk full at {state / 'spool.sqlite3'}"
                    wait_health(st, lambda h: h["spool"] == degraded and counter(
                        h, "spool_held_in_memory") > 10, 30, "klines held in memory")  # fmt: skip
            finally:
                os.killpg(emulator, signal.SIGCONT)
            stack.restart_function(STAGED_MERGES)
            disk_full = "skipped: " + no_disk_full if no_disk_full else "filled"

            # 8. a backfill of an overlapping range, concurrently with the live stream (it ends
            #    at hour 2, so it cannot mask a loss in the later faults)
            at_hour(sim, t0, 16)
            backfill = subprocess.Popen(
                [sys.executable, "-m", "backfill", "--symbols", SYMBOLS, "--intervals",
                 INTERVALS, "--start", str(t0 - 6 * HOUR), "--end", str(t0 + 2 * HOUR),
                 "--rest-url", sim.url, "--state-dir", str(tmp_path / "backfill-state")],
                env=env, cwd=ROOT,
            )  # fmt: skip

            # 9. duplicate deliveries: an operator re-publishes rows already in the lake
            # (the faults above can leave the 1h object's first rows still in flight: wait for them)
            data = wait_for(
                lambda: lake_bytes(stack, "FAULTBTC", "1h"), 120, 0.2, "FAULTBTC@1h in the lake"
            )
            rows = [parse_lake_line(x) for x in data.splitlines()[:5]]
            for batch in make_batches(rows):
                msg = encode_batch(batch, "replay")
                for _ in range(2):
                    stack.publish(msg.data, msg.attributes, msg.ordering_key)

            # 10. operator replays of poison messages, with the real gcloud CLI
            gcloud_publish(stack, "--message=this is not json")
            gcloud_publish(stack, '--message={"symbol":"../x","interval":"1h","klines":[{}]}')
            msg = encode_batch(next(make_batches(rows)), "replay")
            gcloud_publish(stack, f"--message={msg.data.decode()}", "--attribute=symbol=ETHUSDT")
            dead_lettered_expected = 3
            assert decode_message(msg.data, msg.attributes)  # the data itself was fine

            assert backfill.wait(timeout=180) == 0

            # 10b. a halted symbol on the shared connection, longer than the stall grace (72
            #     simulated minutes at this speed): asked about over REST, marked halted, no
            #     reconnect; the three other streams on that connection lose nothing (below).
            #     A fresh connection first, so that the simulator's 8 h age cut stays clear.
            rc = counter(st.health(), "reconnects")
            sim.admin({"ws_drop": True})
            h = wait_health(st, lambda h: counter(h, "reconnects") > rc
                            and h["connections"] == 1, 30, "a fresh connection")  # fmt: skip
            rc_halt = counter(h, "reconnects")
            opened_halt = sim.state()["counters"]["ws_opened"]
            now = sim.state()["now"]
            start = now - now % MINUTE + 15 * MINUTE
            btc_halt = {"symbol": "FAULTBTC", "interval": "1m", "start": start,
                        "end": start + 2 * HOUR + 30 * MINUTE}  # fmt: skip
            sim.admin({"halt": btc_halt})
            halted = "FAULTBTC@1m"
            wait_health(st, lambda h: h["streams"][halted]["ws_state"] == "halted", 60,
                        "the halted stream marked halted")  # fmt: skip

            # live again on WS (what it sends from here is checked in the lake at the end;
            # publishing may still lag behind the Pub/Sub outage of step 7)
            wait_for(lambda: sim.state()["now"] > btc_halt["end"] + 5 * MINUTE, 60, 0.05,
                     "the halt ends")  # fmt: skip
            h = wait_health(st, lambda h: h["streams"][halted]["ws_state"] == "live", 30,
                            "the halted stream resumed")  # fmt: skip
            halt_reconnects = counter(h, "reconnects") - rc_halt
            assert halt_reconnects == 0, "the halt dropped the shared connection"
            assert sim.state()["counters"]["ws_opened"] == opened_halt
            # the health file can say "live" a moment before the log line is on disk: wait for it
            wait_for(lambda: '"stream resumed"' in st.log_text(), 30, 0.1, "the resume logged")
            log = st.log_text()
            assert log.count('"message":"stream halted') == 1

            # 11. run on past the scaled 24 h cut (connections cut at 8 simulated hours of age),
            #     then stop the streamer (SIGTERM drains) and let the function finish the queue
            at_hour(sim, t0, 26, timeout=180)
            if filler is not None:  # (7b) space again: what is held is written, then sent
                filler.unlink()
                wait_health(st, lambda h: h["spool"] == "ok", 30, "spool writable again")
                log = st.log_text()
                assert log.count('"message":"spool write failed') == 1
                assert '"error":"database or disk is full"' in log
            # the tail: everything closed by now must reach the lake through the drain. (Up to
            # 120 s: after the emulator restart one ordering key can stay blocked for a while,
            # its timed-out publish still in flight inside the client library.)
            tail = {f"{s}@{i}": newest_closed(sim, s, i) or 0 for s, i in STREAMS}
            h = wait_health(st, lambda h: all(
                (h["streams"][sid]["last_closed_open_time"] or 0) >= t for sid, t in tail.items()
            ), 120, "published up to hour 26")  # fmt: skip
            assert st.terminate() == 0
            wait_for(lambda: lake_has_published(stack, state), 240, 0.5, "queue drained")
        finally:
            st.kill()
            if stack.state.function_env != STAGED_MERGES:
                stack.restart_function(STAGED_MERGES)

        # 12. a read-only state directory: refused at start in one line naming it, exit 2
        with read_only_dir(tmp_path / "ro-state") as ro:
            refused = Streamer(sim, ro, SYMBOLS, INTERVALS, SPEED, *st_args, env=env)
            assert refused.proc.wait(30) == 2
            refused.kill()
        said = [x for x in refused.log_text().splitlines() if x.startswith("streamer: ")]
        assert len(said) == 1 and str(ro) in said[0] and "read-only" in said[0], said

        expected = found = 0
        for symbol, interval in STREAMS:
            # the whole span: from the backfill's start to hour 26
            n = assert_lake_matches_truth(stack, sim, symbol, interval, first=t0 - 6 * HOUR,
                                          last=tail[f"{symbol}@{interval}"])  # fmt: skip
            data = lake_bytes(stack, symbol, interval)
            expected += n
            found += data.count(b"\n")
        halted = sim.truth("FAULTETH", "1m", t0 + 8 * HOUR, t0 + 9 * HOUR)
        assert halted == b"", "the halt range has no klines in the truth"
        assert b'"open_time":%d' % (t0 + 8 * HOUR) not in lake_bytes(stack, "FAULTETH", "1m")

    letters: list[Any] = []

    def all_dead_letters() -> bool:
        letters.extend(stack.pull_dead_letters(100))
        return len(letters) >= dead_lettered_expected

    wait_for(all_dead_letters, 60, 0.5, "dead letters")
    reasons = sorted(m.attributes.get("dead_letter_reason", "")[:40] for m in letters)
    logged = stack.function_log_lines()
    staged = sum(r.get("error") == "MergeInProgress" for r in logged)
    merges = sum(r.get("action") == "merge" for r in logged)
    print(f"\nfault suite: rows expected {expected}, rows found {found}, lost {expected - found}, "
          f"duplicated {found - expected}, dead-lettered {len(letters)} (poison sent "
          f"{dead_lettered_expected}); reconnects {counter(h, 'reconnects')}, malformed "
          f"{counter(h, 'malformed_frames')}; reconnects during the halt {halt_reconnects}; "
          f"disk full {disk_full}; merges {merges}, deliveries deferred by staged merges "
          f"{staged}; reasons {reasons}")  # fmt: skip
    assert expected == found
    assert len(letters) == dead_lettered_expected
