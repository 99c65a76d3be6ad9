"""Benchmarks of the core (issue 3). Run by hand: `.venv/bin/python bench/bench_core.py`
(`--rest-page`: only the first figure; `--stages`: only the row path's stages).

- a 1,000-row REST page parsed by the bulk path and by the row-by-row reference (issue 15);
- the backfill's row path stage by stage, CPU per row of each in isolation (issue 15: where
  the floor of "parse, validate, serialise, write" lies in this design);
- canonical serialisation and parsing throughput (rows/s), on the real fixture rows;
- merging 30 days of 1m rows (43,200) into a 2-year 1m object (~1.05M rows) on the local
  backend: wall time and peak RSS of a fresh process doing only that merge;
- append (compose) cost flat in object size: appending 1 row to the 2-year object vs to a
  1-row object, medians over repeated runs, side by side in one run.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binance_sim.market import synthetic_kline  # noqa: E402
from klinelake.backends.local_store import LocalStore  # noqa: E402
from klinelake.core import row as lake_row  # noqa: E402
from klinelake.core.contract import decode_message, encode_batch, make_batches  # noqa: E402
from klinelake.core.row import Kline, parse_csv, parse_lake_line  # noqa: E402
from klinelake.core.symbols import object_name  # noqa: E402
from klinelake.core.writer import LakeWriter  # noqa: E402

MIN = 60_000
T0 = 1_640_995_200_000  # 2022-01-01
TWO_YEARS = 2 * 365 * 1440  # 1,051,200 rows


def synth(k: int) -> Kline:
    p = f"{40000 + (k % 5000)}.{k % 100:02d}000000"
    return Kline(
        T0 + k * MIN, T0 + k * MIN + MIN - 1, "BTCUSDT", "1m", p, p, p, p,
        "1.50000000", "60000.00000000", k % 997, "0.70000000", "28000.00000000",
    )  # fmt: skip


def throughput() -> None:
    text = (ROOT / "devtools/binance_sim/data/BTCUSDT-1h-2022-01.csv").read_bytes()
    rows = parse_csv(text, "BTCUSDT", "1h")
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < 1.0:
        parse_csv(text, "BTCUSDT", "1h")
        n += len(rows)
    csv_rate = n / (time.perf_counter() - t)
    lines = [r.to_line() for r in rows]
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < 1.0:
        for r in rows:
            r.to_line()
        n += len(rows)
    ser_rate = n / (time.perf_counter() - t)
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < 1.0:
        for ln in lines:
            parse_lake_line(ln)
        n += len(rows)
    lake_rate = n / (time.perf_counter() - t)
    batch = next(make_batches(rows))
    msg = encode_batch(batch, "rest")
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < 1.0:
        decode_message(msg.data, msg.attributes)
        n += len(rows)
    msg_rate = n / (time.perf_counter() - t)
    print(f"parse CSV (validated):        {csv_rate:>12,.0f} rows/s")
    print(f"serialise canonical row:      {ser_rate:>12,.0f} rows/s")
    print(f"parse lake row (validated):   {lake_rate:>12,.0f} rows/s")
    print(f"decode+validate message:      {msg_rate:>12,.0f} rows/s")


def rest_page_throughput() -> None:
    """A 1,000-row REST page: the bulk path against the row-by-row reference, in one run. Where
    the compiled parser is built, the bulk path makes lake lines and no Klines (StreamRows)."""
    rows = [synth(k) for k in range(1000)]
    body = orjson.dumps(
        [[r.open_time, r.open, r.high, r.low, r.close, r.volume, r.close_time, r.quote_volume,
          r.trades, r.taker_buy_base_volume, r.taker_buy_quote_volume, "0"] for r in rows]
    )  # fmt: skip

    def bulk() -> Sequence[Kline]:  # compiled: StreamRows (open times and lines, no Kline)
        return lake_row.parse_rest_page(body, "BTCUSDT", "1m")

    def row_by_row() -> list[Kline]:
        return lake_row.parse_rest_rows(orjson.loads(body), "BTCUSDT", "1m")

    rates = {}
    for label, parse in (("bulk (parse_rest_page)", bulk), ("row by row (reference)", row_by_row)):
        best = 0.0
        for _ in range(5):  # best of 5 short rounds: the machine is shared
            n, t = 0, time.process_time()
            while time.process_time() - t < 0.3:
                parse()
                n += 1000
            best = max(best, n / (time.process_time() - t))
        rates[label] = best
        print(f"parse REST page, {label}: {best:>12,.0f} rows/s ({1e6 / best:.2f} us/row CPU)")
    ratio = rates["bulk (parse_rest_page)"] / rates["row by row (reference)"]
    print(f"parse REST page: bulk is {ratio:.1f}x the row-by-row path")


def build_object(root: str, n: int) -> None:
    store = LocalStore(root)
    name = object_name("BTCUSDT", "1m")
    chunks = (b"".join(synth(k).to_line() for k in range(i, min(n, i + 50_000)))
              for i in range(0, n, 50_000))  # fmt: skip
    store.write(name, chunks, if_generation_match=0)


MERGE_CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from bench.bench_core import synth
from klinelake.backends.local_store import LocalStore
from klinelake.core.writer import LakeWriter
start = {start}
rows = [synth(k) for k in range(start, start + 43_200)]
rows = [r.__class__(**{{**r.to_dict(), "close": "1.00000000"}}) if i % 2 else r
        for i, r in enumerate(rows)]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
res = LakeWriter(LocalStore({lake!r})).write_rows("BTCUSDT", "1m", rows)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(res.action, res.rows_replaced, f"{{wall:.2f}}", peak // 1024, base // 1024)
"""


def merge_bench(lake: str) -> None:
    size = sum(p.stat().st_size for p in Path(lake).rglob("*.jsonl"))
    # a backfill of 30 days in the middle of the object: every other row changes
    code = MERGE_CHILD.format(root=str(ROOT), start=TWO_YEARS // 2, lake=lake)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()  # fmt: skip
    print(
        f"merge 43,200 rows into {TWO_YEARS:,}-row object ({size / 1e6:.0f} MB): action="
        f"{out[0]} replaced={out[1]} wall={out[2]} s peak RSS={out[3]} MB "
        f"(of which {out[4]} MB before the merge: interpreter + the batch)"
    )


def append_bench(big: str, small: str, repeats: int = 15) -> None:
    res = {}
    for label, root, start in (("1-row", small, 1), ("2-year", big, TWO_YEARS)):
        w = LakeWriter(LocalStore(root))
        times = []
        for i in range(repeats):
            row = synth(start + i)
            t = time.perf_counter()
            r = w.write_rows("BTCUSDT", "1m", [row])
            times.append(time.perf_counter() - t)
            assert r.action == "append", r
        res[label] = statistics.median(times)
    ratio = res["2-year"] / res["1-row"]
    print(
        f"append 1 row: median {res['1-row'] * 1e3:.2f} ms on a 1-row object, "
        f"{res['2-year'] * 1e3:.2f} ms on the 2-year object: ratio {ratio:.2f}x (target <= 1.5x)"
    )


def per_row_us(fn: Callable[[], object], rows: int) -> float:
    """CPU µs per row of `fn` (which handles `rows` rows): best of 5 rounds of 0.3 s."""
    best = float("inf")
    for _ in range(5):
        n, t = 0, time.process_time()
        while time.process_time() - t < 0.3:
            fn()
            n += rows
        best = min(best, (time.process_time() - t) / n * 1e6)
    return best


def columnar_lake_lines(body: bytes, symbol: str, interval: str) -> list[bytes]:
    """A regular page straight to its lake lines with no Python object per row: what a columnar
    design could do in pure Python (the same bulk checks as `regular_rest_page`, then each
    line's parts placed by slice assignment over the flattened page and joined once). Only
    here to measure that design's ceiling; the lines equal `Kline.to_line()`'s."""
    rows = orjson.loads(body)
    n = len(rows)
    assert lake_row._rest_page_shape_ok(body, n)
    flat = list(itertools.chain.from_iterable(rows))
    opens, closes, trades = flat[0::12], flat[6::12], flat[8::12]
    assert lake_row._regular_grid(opens, closes, trades, lake_row._GRID[interval], interval)
    keys = [
        '{"open_time":', ',"close_time":',
        f',"symbol":{orjson.dumps(symbol).decode()},"interval":"{interval}","open":"',
        '","high":"', '","low":"', '","close":"', '","volume":"', '","quote_volume":"',
        '","trades":', ',"taker_buy_base_volume":"', '","taker_buy_quote_volume":"',
    ]  # fmt: skip
    template: list[object] = []
    for key in keys:
        template += [key, None]
    template.append('"}\n')
    parts = template * n
    width = len(template)
    parts[1::width] = map(str, opens)
    parts[3::width] = map(str, closes)
    for slot, column in ((5, 1), (7, 2), (9, 3), (11, 4), (13, 5), (15, 7), (19, 9), (21, 10)):
        parts[slot::width] = flat[column::12]
    parts[17::width] = map(str, trades)
    return "".join(parts).encode().splitlines(keepends=True)  # type: ignore[arg-type]


def row_path_stages() -> None:
    """The backfill's work per row after the HTTP client hands over a 1,000-row page, one
    stage at a time (each measured alone, so their sum is a floor for the whole path)."""
    # the simulator's synthetic rows: prices that move (an open is the previous close, as often
    # on Binance), volumes that vary; the same rows bench_backfill.py fetches
    rows = [synthetic_kline(0, "BTCUSDT", "1m", T0 + k * MIN) for k in range(1000)]
    body = orjson.dumps(
        [[r.open_time, r.open, r.high, r.low, r.close, r.volume, r.close_time, r.quote_volume,
          r.trades, r.taker_buy_base_volume, r.taker_buy_quote_volume, "0"] for r in rows]
    )  # fmt: skip
    decoded = orjson.loads(body)
    pure_klines = lake_row.regular_rest_page(body, decoded, "BTCUSDT", "1m")
    assert pure_klines is not None
    klines: list[Kline] = pure_klines  # the stages below are the pure Python path's
    pages = [[synth(k) for k in range(p * 5000, (p + 1) * 5000)] for p in range(20)]
    with tempfile.TemporaryDirectory() as lake:
        # 20 batches of 5,000 new rows (backfill's batch) onto one object, oldest first (local)
        writer = LakeWriter(LocalStore(lake))
        t = time.process_time()
        for page in pages:
            writer.write_batch(next(iter(make_batches(page))))
        write_us = (time.process_time() - t) / 100_000 * 1e6
    loads_us = per_row_us(lambda: orjson.loads(body), 1000)
    shape_us = per_row_us(lambda: lake_row._rest_page_shape_ok(body, 1000), 1000)
    page_us = per_row_us(lambda: lake_row.regular_rest_page(body, decoded, "BTCUSDT", "1m"), 1000)
    stages = [
        ("orjson.loads of the page", loads_us),
        ("the bulk shape and digit checks", shape_us),
        ("columns, grid check and Klines", page_us - shape_us),
        ("KlineBatch (make_batches)", per_row_us(lambda: list(make_batches(klines)), 1000)),
        ("Kline.to_line", per_row_us(lambda: [r.to_line() for r in klines], 1000)),
        ("LakeWriter on the local disk (KlineBatch, to_line included)", write_us),
    ]
    for label, us in stages:
        print(f"row path stage: {label:60s} {us:5.2f} us/row CPU")
    # the writer's figure includes KlineBatch and to_line: count them once, there
    total = loads_us + page_us + write_us
    print(f"row path, sum of the stages (a floor for this design): {total:.2f} us/row CPU")
    # The columnar alternative and the compiled parser, side by side: page bytes to lake lines.
    assert columnar_lake_lines(body, "BTCUSDT", "1m") == [k.to_line() for k in klines]

    def through_klines() -> Sequence[bytes]:
        return lake_row.lake_lines(lake_row.parse_rest_page(body, "BTCUSDT", "1m"))

    compiled = lake_row._compiled
    lake_row._compiled = None  # the pure Python path, as where the module is not built
    try:
        assert through_klines() == [k.to_line() for k in klines]
        pure = per_row_us(through_klines, 1000)
    finally:
        lake_row._compiled = compiled
    columnar = per_row_us(lambda: columnar_lake_lines(body, "BTCUSDT", "1m"), 1000)
    print(
        f"page to lake lines through Klines, pure Python (parse_rest_page + to_line): {pure:5.2f} "
        f"us/row CPU; columnar, no object per row: {columnar:5.2f} us/row CPU "
        f"({pure / columnar:.2f}x)"
    )
    if compiled is None:
        print("page to lake lines, compiled: the module is not built here (setup.py)")
        return
    assert list(through_klines()) == [k.to_line() for k in klines]
    fast = per_row_us(through_klines, 1000)
    print(
        f"page to lake lines, compiled (klinelake/core/_rest_page.c, StreamRows: no Kline): "
        f"{fast:5.2f} us/row CPU ({pure / fast:.2f}x less than pure Python)"
    )


def main() -> None:
    print(f"python {sys.version.split()[0]}")
    if "--stages" in sys.argv:
        row_path_stages()
        return
    rest_page_throughput()
    if "--rest-page" in sys.argv:
        return
    throughput()
    with tempfile.TemporaryDirectory() as big, tempfile.TemporaryDirectory() as small:
        t = time.perf_counter()
        build_object(big, TWO_YEARS)
        build_object(small, 1)
        print(f"built the 2-year object in {time.perf_counter() - t:.1f} s")
        append_bench(big, small)
        merge_bench(big)
        _ = dataclasses


if __name__ == "__main__":
    main()
