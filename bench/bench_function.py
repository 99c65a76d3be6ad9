"""Benchmarks of the ingest function on the local stack (run by hand; prints figures).

    .venv/bin/python bench/bench_function.py [--live 1000] [--streams 100] [--rounds 10]
                                             [--big-rows 1000000] [--appends 7]

1. publish -> row visible: single-row live messages, p50/p99, on one stream (paced at --rate
   msg/s) and on --streams streams at once (--rounds rounds of one message per stream, all
   published together, like a candle close across many symbols). "Visible" is the time of the
   function's log line, written right after the compose returned (same host clock as the
   publisher); at the end every object is checked to hold exactly the published rows.
2. compose-append of a 1-row batch onto a 1-row object vs a --big-rows object, through the lake
   writer on fake-gcs-server: wall time (median) and the bytes the client sent and received.
   fake-gcs-server composes by copying (its cost is O(object)); GCS composes server-side, so
   the client's bytes are what is O(batch) in production.
3. merge of a 1,000-row batch into the --big-rows object: wall time and peak RSS of the
   merging process (a fresh subprocess, so its peak is the merge's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from klinelake.core.contract import encode_batch, make_batches  # noqa: E402
from klinelake.core.row import Kline, parse_csv  # noqa: E402
from klinelake.core.symbols import object_name  # noqa: E402
from klinelake.core.writer import LakeWriter  # noqa: E402
from localcloud import Stack, wait_for  # noqa: E402

CSV = ROOT / "devtools" / "binance_sim" / "data" / "BTCUSDT-1h-2022-01.csv"  # the one recorded copy
MINUTE = 60_000
BIG_START = 1_577_836_800_000  # 2020-01-01T00:00Z


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def pace_until(due: float) -> None:
    """Hold a publishing schedule (a feed's pace, not synchronisation with the stack)."""
    while (left := due - time.monotonic()) > 0:
        time.sleep(min(0.002, left))


def iso_ms(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def hourly_rows(symbol: str, n: int) -> list[Kline]:
    """n real 1h candles relabelled as `symbol` (the fixture month repeated, shifted)."""
    base = parse_csv(CSV.read_bytes(), symbol, "1h")
    month = len(base) * 3_600_000
    out = []
    for i in range(n):
        src = base[i % len(base)].to_dict()
        shift = (i // len(base)) * month
        src["open_time"] += shift
        src["close_time"] += shift
        out.append(Kline(**src))
    return out


def log_times(stack: Stack) -> dict[str, float]:
    return {
        r["message_id"]: iso_ms(r["time"])
        for r in stack.function_log_lines()
        if r.get("severity") == "INFO" and "message_id" in r
    }


def bench_live_one_stream(stack: Stack, n: int, rate: float) -> dict[str, float]:
    rows = hourly_rows("BENCHLIVE", n)
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i, row in enumerate(rows):
        # pace like a live feed (a fixed schedule, not a sleep to synchronise with anything)
        due = start + i / rate
        pace_until(due)
        msg = encode_batch(next(make_batches([row])), "ws")
        t0 = time.time()
        sent[stack.publish(msg.data, msg.attributes, msg.ordering_key)] = t0
    seen = wait_for(lambda: (t := log_times(stack)) and set(sent) <= set(t) and t, 300)
    lat = [(seen[m] - t0) * 1000 for m, t0 in sent.items()]
    name = object_name("BENCHLIVE", "1h")
    assert stack.read_object(name) == b"".join(r.to_line() for r in rows), "lake mismatch"
    return {"n": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat)}


def bench_many_streams(stack: Stack, streams: int, rounds: int, gap_s: float) -> dict[str, float]:
    per = {f"BENCHS{i:03d}": hourly_rows(f"BENCHS{i:03d}", rounds) for i in range(streams)}
    sent: dict[str, float] = {}
    start = time.monotonic()
    for r in range(rounds):
        due = start + r * gap_s
        pace_until(due)
        futures = []
        for rows in per.values():
            msg = encode_batch(next(make_batches([rows[r]])), "ws")
            t0 = time.time()
            fut = stack.publisher.publish(
                stack.topic_path(), msg.data, ordering_key=msg.ordering_key, **msg.attributes
            )
            futures.append((fut, t0))
        for fut, t0 in futures:
            sent[fut.result(timeout=60)] = t0
    seen = wait_for(lambda: (t := log_times(stack)) and set(sent) <= set(t) and t, 600)
    lat = [(seen[m] - t0) * 1000 for m, t0 in sent.items()]
    span = max(seen[m] for m in sent) - min(sent.values())
    for sym, rows in per.items():
        data = stack.read_object(object_name(sym, "1h"))
        assert data == b"".join(r.to_line() for r in rows), f"{sym}: lake mismatch"
    return {
        "n": len(sent),
        "offered_msg_per_s": streams / gap_s,
        "throughput_msg_per_s": len(sent) / span,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat),
    }


def big_lines(n: int, symbol: str = "BENCHBIG", close: str = "1.00000000") -> Iterator[bytes]:
    chunk: list[bytes] = []
    for i in range(n):
        t = BIG_START + i * MINUTE
        chunk.append(
            f'{{"open_time":{t},"close_time":{t + MINUTE - 1},"symbol":"{symbol}",'
            f'"interval":"1m","open":"1.00000000","high":"1.00000000","low":"1.00000000",'
            f'"close":"{close}","volume":"1.00000000","quote_volume":"1.00000000","trades":1,'
            f'"taker_buy_base_volume":"0.50000000","taker_buy_quote_volume":"0.50000000"}}\n'.encode()
        )
        if len(chunk) >= 65536:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)


def big_row(i: int, symbol: str, close: str = "1.00000000") -> Kline:
    t = BIG_START + i * MINUTE
    return Kline(t, t + MINUTE - 1, symbol, "1m", "1.00000000", "1.00000000", "1.00000000",
                 close, "1.00000000", "1.00000000", 1, "0.50000000", "0.50000000")  # fmt: skip


class ByteCounter:
    """Counts the bytes the storage client sends and receives (wraps its HTTP session)."""

    def __init__(self, store: Any) -> None:
        self.sent = self.received = 0
        session = store.client._http
        inner = session.request

        def request(method: str, url: str, data: Any = None, **kw: Any) -> Any:
            if isinstance(data, bytes | bytearray):
                self.sent += len(data)
            elif hasattr(data, "getbuffer"):
                self.sent += len(data.getbuffer())
            resp = inner(method, url, data=data, **kw)
            self.received += int(resp.headers.get("content-length") or 0)
            return resp

        session.request = request

    def reset(self) -> None:
        self.sent = self.received = 0


def bench_compose(stack: Stack, big_rows: int, appends: int) -> dict[str, Any]:
    store = stack.store()
    counter = ByteCounter(store)
    writer = LakeWriter(store)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    store.write(object_name("BENCHBIG", "1m"), big_lines(big_rows), if_generation_match=0)
    out["big_object_upload_s"] = time.perf_counter() - t
    out["big_object_mb"] = store.stat(object_name("BENCHBIG", "1m")).size / 1e6
    writer.write_rows("BENCHONE", "1m", [big_row(0, "BENCHONE")])
    for label, symbol, first in (("one_row", "BENCHONE", 1), ("big", "BENCHBIG", big_rows)):
        walls, sent, received = [], [], []
        for k in range(appends):
            counter.reset()
            t = time.perf_counter()
            res = writer.write_rows(symbol, "1m", [big_row(first + k, symbol)])
            walls.append(time.perf_counter() - t)
            sent.append(counter.sent)
            received.append(counter.received)
            assert res.action == "append" and "open_lines" not in res.storage_calls
        out[label] = {
            "median_ms": statistics.median(walls) * 1000,
            "client_bytes_sent": statistics.median(sent),
            "client_bytes_received": statistics.median(received),
        }
    out["wall_ratio_big_vs_one"] = out["big"]["median_ms"] / out["one_row"]["median_ms"]
    out["client_bytes_ratio"] = (
        out["big"]["client_bytes_sent"] + out["big"]["client_bytes_received"]
    ) / (out["one_row"]["client_bytes_sent"] + out["one_row"]["client_bytes_received"])
    return out


MERGE_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.bench_function import big_row
from localcloud import Stack
from klinelake.core.writer import LakeWriter

def hwm_mb():  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

stack = Stack.load(sys.argv[2]); n = int(sys.argv[3])
rows = [big_row(i * (n // 1000), "BENCHBIG", close="2.00000000") for i in range(1000)]
store = stack.store()
before = hwm_mb()
t = time.perf_counter()
res = LakeWriter(store).write_rows("BENCHBIG", "1m", rows)
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "action": res.action, "rows_replaced": res.rows_replaced,
                  "peak_rss_mb": hwm_mb(), "peak_rss_before_merge_mb": before,
                  "object_mb": store.stat(res.object_name).size / 1e6,
                  "storage_calls": res.storage_calls}))
"""


def bench_merge(stack: Stack, big_rows: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", MERGE_CHILD, str(ROOT), str(stack.dir), str(big_rows)],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=1800,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--live", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=20.0, help="one-stream publish rate, msg/s")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--round-gap", type=float, default=2.0)
    ap.add_argument("--big-rows", type=int, default=1_000_000)
    ap.add_argument("--appends", type=int, default=7)
    ap.add_argument("--skip", default="", help="comma list of: live,streams,compose,merge")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="only the handler's CPU/calls per message, baseline vs this tree",
    )
    ap.add_argument("--baseline", default="df8fe1d", help="'' to run this tree alone")
    ap.add_argument("--cpu-live", type=int, default=300)
    ap.add_argument("--cpu-big-rows", type=int, default=400_000)
    args = ap.parse_args()
    if args.cpu:
        bench_function_cpu(args.baseline, args.cpu_live, args.cpu_big_rows)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")
        return
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp, Stack(tmp) as stack:
        stack.restart_function({"LOG_LEVEL": "INFO"})
        if "live" not in skip:
            results["live_one_stream"] = bench_live_one_stream(stack, args.live, args.rate)
            print("live, one stream:", json.dumps(results["live_one_stream"]), flush=True)
        if "streams" not in skip:
            results["live_many_streams"] = bench_many_streams(
                stack, args.streams, args.rounds, args.round_gap
            )
            print(f"live, {args.streams} streams:", json.dumps(results["live_many_streams"]),
                  flush=True)  # fmt: skip
        if "compose" not in skip:
            results["compose_append"] = bench_compose(stack, args.big_rows, args.appends)
            print("compose append:", json.dumps(results["compose_append"]), flush=True)
            if "merge" not in skip:
                results["merge_1000_into_big"] = bench_merge(stack, args.big_rows)
                print("merge:", json.dumps(results["merge_1000_into_big"]), flush=True)
    print(json.dumps(results, indent=2))


def bench_function_cpu(baseline: str | None, live: int, big_rows: int) -> dict[str, Any]:
    """The handler's CPU per message and GCS calls, baseline tree vs this tree, one
    fake-gcs-server (`function_cpu_child.py` runs in each tree)."""
    from bench.bench_behind import export_tree
    from localcloud.procs import free_port, http_answers, pid_alive, poll, spawn, stop_group
    from localcloud.stack import fake_gcs_binary

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fn-") as tmp:
        work = Path(tmp)
        port = free_port()
        gcs = spawn(
            [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
             "-backend", "filesystem", "-filesystem-root", str(work / "gcs"), "-log-level", "warn"],
            work / "gcs.log", dict(os.environ),
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            poll(lambda: http_answers(f"{url}/storage/v1/b", (200,)), 30, "fake-gcs-server",
                 alive=lambda: pid_alive(gcs.pid))  # fmt: skip
            trees = {"this tree": ROOT}
            if baseline:
                trees = {"baseline": export_tree(baseline, work / "baseline"), **trees}
            for i, (label, tree) in enumerate(trees.items()):
                bucket = f"bench-{i}"
                httpx.post(f"{url}/storage/v1/b", params={"project": "bench"},
                           json={"name": bucket}).raise_for_status()  # fmt: skip
                done = subprocess.run(
                    [sys.executable, str(ROOT / "bench" / "function_cpu_child.py"), url, bucket,
                     str(live), str(big_rows)],
                    capture_output=True, text=True, cwd=tree, timeout=3600, check=False,
                    env={**os.environ, "PYTHONPATH": str(tree)},
                )  # fmt: skip
                if done.returncode != 0:
                    raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
                out[label] = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{label}: {json.dumps(out[label])}", flush=True)
        finally:
            stop_group(gcs.pid, popen=gcs)  # type: ignore[arg-type]
    return out


if __name__ == "__main__":
    main()
