"""Child of `bench_function.py --cpu` (run with PYTHONPATH set to the tree under test, so the
baseline and this tree run the same script): the ingest handler over GCSStore on a running
fake-gcs-server, measuring process CPU per message, storage calls, and read/merge throughput.

    python bench/function_cpu_child.py GCS_URL BUCKET LIVE_MESSAGES BIG_ROWS
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import Any

from ingest_function.handler import IngestHandler
from klinelake.core.contract import KlineBatch, encode_batch
from klinelake.core.row import Kline
from klinelake.core.symbols import object_name

MINUTE = 60_000
T0 = 1_577_836_800_000  # 2020-01-01
HISTORY_ROWS = 30_000  # backfilled behind the week in 5,000-row messages


def row(symbol: str, i: int, close: str = "1.00000000") -> Kline:
    t = T0 + i * MINUTE
    return Kline(
        open_time=t, close_time=t + MINUTE - 1, symbol=symbol, interval="1m",
        open="1.00000000", high="1.00000000", low="1.00000000", close=close,
        volume="12.34500000", quote_volume="12.34500000", trades=i % 1000,
        taker_buy_base_volume="6.00000000", taker_buy_quote_volume="6.00000000",
    )  # fmt: skip


def event(batch: KlineBatch, n: int) -> dict[str, Any]:
    msg = encode_batch(batch, "rest")
    return {"message": {"data": base64.b64encode(msg.data).decode(), "messageId": str(n),
                        "attributes": dict(msg.attributes)}}  # fmt: skip


def send(handler: IngestHandler, symbol: str, keys: range, n: int) -> tuple[float, Any]:
    batch = KlineBatch(symbol, "1m", tuple(row(symbol, k) for k in keys))
    ev = event(batch, n)
    t = time.process_time()
    result = handler.handle(ev)
    return time.process_time() - t, result


def main() -> None:
    gcs_url, bucket, live, big_rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # the function's own path: LAKE_URI=gs://BUCKET, the client honouring STORAGE_EMULATOR_HOST,
    # the handler built by the deployed entry point (its process settings, e.g. the GC's, and
    # its logging, at WARNING so that stdout keeps only this script's figures)
    os.environ["STORAGE_EMULATOR_HOST"] = gcs_url
    os.environ.update(LAKE_URI=f"gs://{bucket}", GOOGLE_CLOUD_PROJECT="bench", LOG_LEVEL="WARNING")
    from ingest_function.main import handler as entry_handler

    handler = entry_handler()
    store: Any = handler.writer.store
    out: dict[str, Any] = {}

    # 1. live: one-row messages appended to one stream, one after another (a warm instance)
    send(handler, "LIVE", range(0, 1), 0)
    cpu, calls = [], []
    for k in range(1, live + 1):
        c, r = send(handler, "LIVE", range(k, k + 1), k)
        cpu.append(c)
        calls.append(sum(r.storage_calls.values()))
    cpu.sort()
    out["live"] = {"cpu_ms_median": round(cpu[len(cpu) // 2] * 1000, 2),
                   "cpu_ms_mean": round(sum(cpu) / len(cpu) * 1000, 2),
                   "gcs_calls_mean": round(sum(calls) / len(calls), 2),
                   "last_calls": r.storage_calls}  # fmt: skip

    # 2. backfill: 5,000-row messages behind a recent week, newest first (what backfill emits
    #    to Pub/Sub now); and the same history oldest first (what it emitted before)
    #    and the same history newest first into an empty object (the goal's yardstick)
    for label, order in (("newest_first", -1), ("oldest_first", 1), ("into_empty", -1)):
        sym = f"BF{label.split('_')[0].upper()}{label.split('_')[1].upper()}"
        week = range(200_000, 200_000 + 10_000)  # ~7 days of 1m
        if label != "into_empty":
            send(handler, sym, range(week.start, week.start + 5000), 0)
            send(handler, sym, range(week.start + 5000, week.start + 10_000), 0)
        starts = list(range(0, HISTORY_ROWS, 5000))[::order]
        total_cpu, actions, wall = 0.0, set(), time.perf_counter()
        for n, s in enumerate(starts):
            c, r = send(handler, sym, range(s, s + 5000), n)
            total_cpu += c
            actions.add(r.action)
        out[f"backfill_{label}"] = {
            "messages": len(starts),
            "cpu_us_per_row": round(total_cpu / (len(starts) * 5000) * 1e6, 1),
            "wall_s": round(time.perf_counter() - wall, 1), "actions": sorted(actions),
            "last_calls": r.storage_calls,
        }  # fmt: skip

    # 3. reading a big object (the merge's input): MB per CPU second
    name = object_name("BIG", "1m")
    body = b"".join(row("BIG", i).to_line() for i in range(big_rows))
    info = store.write(name, body, if_generation_match=0)
    t = time.process_time()
    with store.open_lines(name, info.generation) as lines:
        n = sum(1 for _ in lines)
    read_cpu = time.process_time() - t
    assert n == big_rows
    out["read"] = {"object_mb": round(len(body) / 1e6, 1),
                   "mb_per_cpu_s": round(len(body) / 1e6 / max(read_cpu, 1e-9), 1)}  # fmt: skip

    # 4. a merge of 1,000 rows replacing rows in the middle of the big object
    rows = range(big_rows // 2, big_rows // 2 + 1000)
    batch = KlineBatch("BIG", "1m", tuple(row("BIG", k, close="2.00000000") for k in rows))
    t, w = time.process_time(), time.perf_counter()
    r = handler.handle(event(batch, 1))
    wall = time.perf_counter() - w
    out["merge_middle"] = {"object_mb": round(len(body) / 1e6, 1), "wall_s": round(wall, 2),
                           "cpu_s": round(time.process_time() - t, 2), "action": r.action,
                           "rows_replaced": r.rows_replaced, "calls": r.storage_calls,
                           "object_mb_per_wall_s": round(len(body) / 1e6 / wall, 1)}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
