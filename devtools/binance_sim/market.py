"""The truth the simulator serves: which klines exist, and their exact values.

Per (symbol, interval) a `Series` holds the file rows (sorted open times plus `Kline`s with the
exact strings of the dump) and, when the stream is synthetic, a deterministic generator for
every open time from its start on that no file row covers. Halts remove ranges entirely.
Nothing here knows about time passing: callers pass `now_ms` (the simulated clock).
"""

from __future__ import annotations

import bisect
import hashlib
import io
import math
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from klinelake.core.intervals import (
    INTERVALS,
    NOMINAL_MS,
    align_down,
    next_open_time,
    prev_open_time,
)
from klinelake.core.markets import Market as KlineMarket
from klinelake.core.row import FIELDS, Kline, iter_csv

# Pre-rendered REST rows: klines are rendered in chunks of this many open times, once, and kept
# (least recently used first out) up to this many bytes, so that serving a page of closed
# klines is a join, not 1,000 synthetic klines generated and serialised again for every client.
CHUNK_ROWS = 1000
DEFAULT_PAGE_CACHE_BYTES = 256 << 20
DEFAULT_SYNTHETIC_START = 1_502_928_000_000  # 2017-08-17 00:00 UTC, BTCUSDT's first day on Binance

# data.binance.vision names: BTCUSDT-1h-2022-01.csv, BTCUSDT-1mo-2022-01.zip ("1mo" is 1M).
_FILE_NAME = re.compile(r"(?P<symbol>[^-/\\]+)-(?P<interval>[0-9]+[smhdwM]|1mo)-.+\.(?:csv|zip)")


class DataFileError(Exception):
    """A data file the simulator refuses to serve (bad checksum, unreadable content)."""


@dataclass(frozen=True, slots=True)
class Halt:
    """No kline of (symbol, interval) with open_time in [start, end] exists."""

    symbol: str
    interval: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    symbol: str
    interval: str
    start: int = DEFAULT_SYNTHETIC_START

    @classmethod
    def parse(cls, text: str) -> SyntheticSpec:
        """`SYMBOL:INTERVAL[:START]`, START as epoch ms or an ISO date/time (UTC)."""
        parts = text.split(":", 2)
        if len(parts) < 2 or parts[1] not in INTERVALS or not parts[0]:
            raise ValueError(f"--synthetic {text!r}: expected SYMBOL:INTERVAL[:START]")
        start = parse_time(parts[2]) if len(parts) == 3 else DEFAULT_SYNTHETIC_START
        return cls(parts[0].upper(), parts[1], align_down(start, parts[1]))


def parse_time(text: str) -> int:
    """Epoch ms (digits) or an ISO 8601 date/time, UTC unless it names an offset."""
    from datetime import UTC, datetime

    if text.isdigit():
        return int(text)
    d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int(d.timestamp() * 1000)


@dataclass
class Series:
    symbol: str
    interval: str
    times: list[int] = field(default_factory=list)
    rows: list[Kline] = field(default_factory=list)
    synthetic_start: int | None = None
    by_time: dict[int, Kline] = field(default_factory=dict)


# --- loading ---------------------------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    if path.suffix != ".zip":
        return path.read_bytes()
    check = path.with_name(path.name + ".CHECKSUM")
    raw = path.read_bytes()
    if check.exists():
        # sha256sum format: "<64 hex>  <file name>"
        fields = check.read_text().split()
        if len(fields) < 1 or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
            raise DataFileError(f"{check}: not in sha256sum format '<hex>  <name>'")
        actual = hashlib.sha256(raw).hexdigest()
        if fields[0].lower() != actual:
            raise DataFileError(
                f"{path}: sha256 {actual} does not match {fields[0]} in {check.name}; refusing it"
            )
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        names = [n for n in zf.namelist() if n.endswith(".csv")]
        if len(names) != 1:
            raise DataFileError(f"{path}: expected one .csv inside, found {names}")
        return zf.read(names[0])


def load_dir(data_dir: Path | str) -> dict[tuple[str, str], Series]:
    """Every `{SYMBOL}-{INTERVAL}-*.csv|zip` under `data_dir`, recursively; raises DataFileError."""
    found: dict[tuple[str, str], dict[int, Kline]] = {}
    for path in sorted(Path(data_dir).rglob("*")):
        m = _FILE_NAME.fullmatch(path.name)
        if not m or not path.is_file():
            continue
        interval = "1M" if m["interval"] == "1mo" else m["interval"]
        if interval not in INTERVALS:
            continue
        symbol = m["symbol"].upper()
        try:
            rows = list(iter_csv(_read_file(path), symbol, interval, source=str(path)))
        except DataFileError:
            raise
        except Exception as exc:  # a corrupt zip or row: name the file
            raise DataFileError(f"{path}: {exc}") from exc
        bucket = found.setdefault((symbol, interval), {})
        for k in rows:
            bucket[k.open_time] = k
    out: dict[tuple[str, str], Series] = {}
    for (symbol, interval), rows_by_time in found.items():
        times = sorted(rows_by_time)
        out[(symbol, interval)] = Series(
            symbol, interval, times, [rows_by_time[t] for t in times], by_time=rows_by_time
        )
    return out


# --- synthetic rows --------------------------------------------------------------------------


_U32 = struct.Struct(">8I")


def _unit_floats(*key: object) -> tuple[float, ...]:
    """Eight uniform floats in [0, 1) from a hash of `key` (pure, stable across runs)."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=32).digest()
    return tuple(v / 2**32 for v in _U32.unpack(digest))


@lru_cache(maxsize=4096)
def _symbol_shape(seed: int, symbol: str) -> tuple[float, float, float, float]:
    """(base price, three phases) of a symbol's synthetic price path."""
    base = 10 + 50_000 * _unit_floats(seed, symbol, "base")[0]
    ph = _unit_floats(seed, symbol, "phase")
    return base, ph[0], ph[1], ph[2]


@lru_cache(maxsize=8192)  # a kline's close price is the next one's open
def _price(seed: int, symbol: str, t: int) -> float:
    """A bounded random walk-like path: a few sines plus hashed noise, a pure function of t."""
    base, ph0, ph1, ph2 = _symbol_shape(seed, symbol)
    u = _unit_floats(seed, symbol, t)[0]
    x = (
        0.25 * math.sin(2 * math.pi * (t / 2_592_000_000 + ph0))  # 30 days
        + 0.08 * math.sin(2 * math.pi * (t / 259_200_000 + ph1))  # 3 days
        + 0.02 * math.sin(2 * math.pi * (t / 21_600_000 + ph2))  # 6 hours
        + 0.004 * (u - 0.5)
    )
    return base * (1 + x)  # within [0.64, 1.36] * base: always positive


def _d8(x: float) -> str:
    return f"{x:.8f}"


def _unchecked(*values: object) -> Kline:
    """A Kline without `__post_init__` validation: synthetic rows are valid by construction
    (tests/sim/test_market.py validates them with `validate_kline`), and validation was a
    third of the cost of generating one on the REST hot path."""
    k = object.__new__(Kline)
    for name, value in zip(FIELDS, values, strict=True):
        object.__setattr__(k, name, value)
    object.__setattr__(k, "market", KlineMarket.SPOT)  # a slot without __init__ has no default
    object.__setattr__(k, "_line", None)  # nor the cache of its line (Kline.to_line)
    return k


@lru_cache(maxsize=200_000)
def synthetic_kline(seed: int, symbol: str, interval: str, open_time: int) -> Kline:
    """The synthetic kline at `open_time`: valid (h >= max(o,c), l <= min(o,c), V <= v...)."""
    nxt = next_open_time(open_time, interval)
    u = _unit_floats(seed, symbol, interval, open_time)
    o = _price(seed, symbol, open_time)
    c = _price(seed, symbol, nxt)
    if u[0] < 0.02:  # a quiet interval: no trades, flat at the open
        zero = "0.00000000"
        return _unchecked(open_time, nxt - 1, symbol, interval, _d8(o), _d8(o), _d8(o), _d8(o),
                          zero, zero, 0, zero, zero)  # fmt: skip
    h = max(o, c) * (1 + 0.002 * u[1])
    lo = min(o, c) * (1 - 0.002 * u[2])
    o_s, c_s, h_s, l_s = _d8(o), _d8(c), _d8(h), _d8(lo)
    scale = math.sqrt((nxt - open_time) / 60_000)
    v = round((0.01 + 20 * u[3]) * scale, 8)
    vwap = (float(h_s) + float(l_s)) / 2
    taker = round(v * u[4], 8)
    trades = max(1, int((1 + 300 * u[5]) * scale))
    return _unchecked(open_time, nxt - 1, symbol, interval, o_s, h_s, l_s, c_s, _d8(v),
                      _d8(v * vwap), trades, _d8(taker), _d8(taker * vwap))  # fmt: skip


# --- partial (forming) klines ----------------------------------------------------------------


def _mantissa(s: str, decimals: int) -> int:
    whole, _, frac = s.partition(".")
    return int(whole + frac.ljust(decimals, "0")[:decimals] if decimals else whole)


def _fmt(m: int, decimals: int) -> str:
    if not decimals:
        return str(m)
    text = str(m).rjust(decimals + 1, "0")
    return f"{text[:-decimals]}.{text[-decimals:]}"


def _decimals(s: str) -> int:
    return len(s.partition(".")[2])


def partial_kline(final: Kline, now_ms: int) -> Kline:
    """The forming kline at `now_ms`: the final row scaled by the elapsed fraction (valid)."""
    span = final.close_time - final.open_time + 1
    num, den = min(max(now_ms - final.open_time + 1, 0), span), span
    n = final.trades * num // den
    prices = (final.open, final.close)
    d = max(_decimals(p) for p in prices)
    o, c_final = (_mantissa(p, d) for p in prices)
    if n == 0:
        zero = _fmt(0, _decimals(final.volume))
        o_s = _fmt(o, d)
        return Kline(final.open_time, final.close_time, final.symbol, final.interval,
                     o_s, o_s, o_s, o_s, zero, zero, 0, zero, zero)  # fmt: skip
    c = o + (c_final - o) * num // den
    vols = [
        _fmt(_mantissa(v, _decimals(v)) * num // den, _decimals(v))
        for v in (final.volume, final.quote_volume, final.taker_buy_base_volume,
                  final.taker_buy_quote_volume)
    ]  # fmt: skip
    return Kline(final.open_time, final.close_time, final.symbol, final.interval,
                 _fmt(o, d), _fmt(max(o, c), d), _fmt(min(o, c), d), _fmt(c, d),
                 vols[0], vols[1], n, vols[2], vols[3])  # fmt: skip


# --- the market --------------------------------------------------------------------------------


class Market:
    """File rows + synthetic streams + halts; answers "which klines exist" for any range."""

    def __init__(
        self,
        series: dict[tuple[str, str], Series] | None = None,
        synthetic: list[SyntheticSpec] | None = None,
        seed: int = 0,
        page_cache_bytes: int = DEFAULT_PAGE_CACHE_BYTES,
    ) -> None:
        self.series: dict[tuple[str, str], Series] = dict(series or {})
        self.seed = seed
        self.halts: list[Halt] = []
        self.page_cache_bytes = page_cache_bytes
        # (symbol, interval, chunk index) -> (open times, rendered REST rows), all closed
        self._chunks: OrderedDict[tuple[str, str, int], tuple[list[int], list[bytes]]] = (
            OrderedDict()
        )
        self._chunk_bytes = 0
        self._symbols = frozenset(sym for sym, _ in self.series)
        for spec in synthetic or []:
            self.add_synthetic(spec)

    def add_synthetic(self, spec: SyntheticSpec) -> None:
        """A synthetic stream, also at run time (a futures listing)."""
        s = self.series.setdefault((spec.symbol, spec.interval), Series(spec.symbol, spec.interval))
        s.synthetic_start = spec.start
        self._symbols = self._symbols | {spec.symbol}

    @property
    def symbols(self) -> list[str]:
        return sorted(self._symbols)

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self._symbols

    def add_halt(self, halt: Halt) -> None:
        self.halts.append(halt)
        self._chunks.clear()  # rendered rows may lie under the halt
        self._chunk_bytes = 0

    def _halt(self, symbol: str, interval: str, t: int) -> Halt | None:
        """The halt covering open time `t`, if any."""
        for h in self.halts:
            if h.symbol == symbol and h.interval == interval and h.start <= t <= h.end:
                return h
        return None

    def kline_at(self, symbol: str, interval: str, open_time: int) -> Kline | None:
        """The final kline with this open time, if it exists (ignores the clock)."""
        s = self.series.get((symbol, interval))
        if s is None or self._halt(symbol, interval, open_time) is not None:
            return None
        row = s.by_time.get(open_time)
        if row is not None:
            return row
        synthetic = s.synthetic_start is not None and open_time >= s.synthetic_start
        if synthetic and align_down(open_time, interval) == open_time:
            return synthetic_kline(self.seed, symbol, interval, open_time)
        return None

    def iter_forward(self, symbol: str, interval: str, lo: int, hi: int) -> Iterator[Kline]:
        """Existing klines with lo <= open_time <= hi, ascending."""
        s = self.series.get((symbol, interval))
        if s is None or hi < lo:
            return
        if s.synthetic_start is None:
            i = bisect.bisect_left(s.times, lo)
            while i < len(s.times) and s.times[i] <= hi:
                t = s.times[i]
                halt = self._halt(symbol, interval, t)
                if halt is not None:
                    i = bisect.bisect_right(s.times, halt.end)
                    continue
                yield s.rows[i]
                i += 1
            return
        # Synthetic grid (file rows win where present); file rows before the grid start too.
        i = bisect.bisect_left(s.times, lo)
        while i < len(s.times) and s.times[i] < min(s.synthetic_start, hi + 1):
            if self._halt(symbol, interval, s.times[i]) is None:
                yield s.rows[i]
            i += 1
        t = align_down(max(lo, s.synthetic_start), interval)
        if t < lo:
            t = next_open_time(t, interval)
        while t <= hi:
            halt = self._halt(symbol, interval, t)
            if halt is not None:
                t = next_open_time(align_down(halt.end, interval), interval)
                continue
            row = s.by_time.get(t)
            yield row if row is not None else synthetic_kline(self.seed, symbol, interval, t)
            t = next_open_time(t, interval)

    def iter_backward(self, symbol: str, interval: str, lo: int, hi: int) -> Iterator[Kline]:
        """Existing klines with lo <= open_time <= hi, descending."""
        s = self.series.get((symbol, interval))
        if s is None or hi < lo:
            return
        if s.synthetic_start is not None and hi >= s.synthetic_start:
            t = align_down(hi, interval)
            floor = max(lo, s.synthetic_start)
            while t >= floor:
                halt = self._halt(symbol, interval, t)
                if halt is not None:
                    t = align_down(halt.start - 1, interval)  # the kline just before the halt
                    continue
                row = s.by_time.get(t)
                yield row if row is not None else synthetic_kline(self.seed, symbol, interval, t)
                t = prev_open_time(t, interval)
            hi = s.synthetic_start - 1
        i = bisect.bisect_right(s.times, hi) - 1
        while i >= 0 and s.times[i] >= lo:
            if self._halt(symbol, interval, s.times[i]) is None:
                yield s.rows[i]
            i -= 1

    def select(
        self,
        symbol: str,
        interval: str,
        now_ms: int,
        *,
        start: int | None,
        end: int | None,
        limit: int,
    ) -> list[Kline]:
        """REST selection (fact sheet §6), the forming kline (if any) last and partial."""
        hi = now_ms if end is None else min(end, now_ms)
        if start is None:
            rows = list(_take(self.iter_backward(symbol, interval, 0, hi), limit))
            rows.reverse()
        else:
            rows = list(_take(self.iter_forward(symbol, interval, start, hi), limit))
        if rows and rows[-1].close_time >= now_ms:
            rows[-1] = partial_kline(rows[-1], now_ms)
        return rows

    def closed_page_json(
        self, symbol: str, interval: str, now_ms: int, *, start: int, end: int | None, limit: int
    ) -> bytes | None:
        """`select(...)` as the REST body (ms times), from pre-rendered rows; None when the page
        would reach a kline that is still forming, or the interval has no fixed length (1M)."""
        step = NOMINAL_MS[interval] if interval != "1M" else 0
        if not step or (symbol, interval) not in self.series:
            return None
        hi = now_ms if end is None else min(end, now_ms)
        span = CHUNK_ROWS * step
        rows: list[bytes] = []
        index = start // span
        while len(rows) < limit and index * span <= hi:
            chunk = self._chunk(symbol, interval, index, now_ms)
            if chunk is None:
                return None
            times, rendered = chunk
            i = bisect.bisect_left(times, start)
            j = min(bisect.bisect_right(times, hi), i + limit - len(rows))
            rows.extend(rendered[i:j])
            index += 1
        return b"[" + b",".join(rows) + b"]"

    def _chunk(
        self, symbol: str, interval: str, index: int, now_ms: int
    ) -> tuple[list[int], list[bytes]] | None:
        key = (symbol, interval, index)
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
            return chunk
        step = NOMINAL_MS[interval]
        lo, hi = index * CHUNK_ROWS * step, (index + 1) * CHUNK_ROWS * step - 1
        if hi + step > now_ms:  # its last kline (open <= hi) may still be forming: not cached
            return None
        rows = list(self.iter_forward(symbol, interval, lo, hi))
        chunk = [k.open_time for k in rows], [orjson.dumps(rest_row(k, False)) for k in rows]
        self._chunks[key] = chunk
        self._chunk_bytes += sum(map(len, chunk[1]))
        while self._chunk_bytes > self.page_cache_bytes and len(self._chunks) > 1:
            _, (_, old) = self._chunks.popitem(last=False)
            self._chunk_bytes -= sum(map(len, old))
        return chunk

    def closed(self, symbol: str, interval: str, now_ms: int, lo: int, hi: int) -> Iterator[Kline]:
        """Closed klines (close_time < now) with lo <= open_time <= hi: the truth."""
        for k in self.iter_forward(symbol, interval, lo, min(hi, now_ms)):
            if k.close_time >= now_ms:
                return
            yield k

    def forming(self, symbol: str, interval: str, now_ms: int) -> Kline | None:
        """The kline containing `now_ms`, partial, if it exists."""
        final = self.kline_at(symbol, interval, align_down(now_ms, interval))
        if final is None or final.close_time < now_ms:
            return None
        return partial_kline(final, now_ms)


def rest_row(k: Kline, us: bool) -> list[Any]:
    """A kline as an element of a `/api/v3/klines` answer (µs times when `us`)."""
    t, ct = (k.open_time * 1000, k.close_time * 1000 + 999) if us else (k.open_time, k.close_time)
    return [t, k.open, k.high, k.low, k.close, k.volume, ct, k.quote_volume, k.trades,
            k.taker_buy_base_volume, k.taker_buy_quote_volume, "0"]  # fmt: skip


def _take(it: Iterator[Kline], n: int) -> Iterator[Kline]:
    for i, k in enumerate(it):
        if i >= n:
            return
        yield k
