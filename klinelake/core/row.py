"""The lake row (DESIGN.md, contract 1) and its parsers from every shape Binance produces.

A `Kline` is validated when built, so an invalid row cannot exist as an object. Parsers take
values or bytes and return `Kline`s; they never do I/O.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat, starmap
from operator import attrgetter, itemgetter
from typing import Any, cast, overload

import orjson

from klinelake.core.errors import InvalidData, InvalidRow
from klinelake.core.intervals import (
    GRID_UNDOCUMENTED,
    NOMINAL_MS,
    grid_anchor,
    is_aligned,
    next_open_time,
)
from klinelake.core.json_input import load_json
from klinelake.core.markets import CM_ROW_KEYS, SPECS, SPOT_ROW_KEYS, Market, row_keys
from klinelake.core.symbols import validate_symbol

# The bounds of every numeric field (docs/contracts.md; the packaged JSON Schema says the same):
# every accepted row loads into BigQuery NUMERIC and DuckDB DECIMAL(38, 9) without loss, and
# every integer is exact in a float64 (JavaScript) reader.
# Binance sends fixed-decimal strings ("46216.93000000", 8 decimals); we keep them byte for
# byte: 1 to 29 ASCII digits, optionally a dot and 1 to 9 more.
DECIMAL_MAX_WHOLE_DIGITS = 29
DECIMAL_MAX_FRACTION_DIGITS = 9
MAX_TRADES = 2**53 - 1
# ms timestamps stay below 10**14 until the year 5138; µs timestamps (16 digits) are above.
_MICROS_THRESHOLD = 10**14
# Reject absurd times early: before 2009 nothing traded on Binance, after 2100 is a typo.
_MIN_MS = 1_230_768_000_000  # 2009-01-01
_MAX_MS = 4_102_444_800_000  # 2100-01-01

FIELDS: tuple[str, ...] = SPOT_ROW_KEYS  # spot and USD-M; COIN-M: markets.CM_ROW_KEYS
_LINE_PREFIX = b'{"open_time":'
_CM_NAMES = dict(zip(SPOT_ROW_KEYS, CM_ROW_KEYS, strict=True))  # slot name -> COIN-M row key


@dataclass(frozen=True, slots=True)
class Kline:
    """One closed (or, from REST, possibly forming) candle, exactly as the lake stores it.

    The four volume slots hold Binance's kline columns 5, 7, 9 and 10 (WS `v`, `q`, `V`, `Q`)
    and are named by their spot/USD-M meaning. On COIN-M (`market="cm"`) those columns mean
    contracts, base volume, taker-buy contracts, taker-buy base volume (binance-futures-api.md
    §6), so a COIN-M row is serialised and parsed under `markets.CM_ROW_KEYS` (`volume`,
    `base_volume`, `taker_buy_volume`, `taker_buy_base_volume`): the lake and the messages never
    label a value with a name that means something else (`to_dict()` gives the row by meaning);
    `market` itself is not a row key (the object name and the message carry it).
    """

    open_time: int
    close_time: int
    symbol: str
    interval: str
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_buy_base_volume: str
    taker_buy_quote_volume: str
    market: Market = Market.SPOT
    # `to_line()`'s bytes, set only by the function's bulk parser (`regular_message_rows`,
    # cutting them from the bytes it checked; the compiled REST parser builds no Klines);
    # never compared, never passed to __init__ (`dataclasses.replace` drops it with the values
    # it was rendered from).
    _line: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            validate_kline(self)
        except InvalidRow as exc:
            if self.market != Market.CM:
                raise
            # name the field as a COIN-M row does (`base_volume`, not `quote_volume`)
            field = _CM_NAMES.get(exc.field, exc.field)
            raise InvalidRow(field, exc.value, exc.reason, where=exc.where) from None

    def to_line(self) -> bytes:
        """Canonical serialisation: compact JSON, keys in contract order, then `\\n`."""
        line = self._line
        if line is not None:
            return line
        return orjson.dumps(self.to_dict()) + b"\n"

    def values(self) -> tuple[object, ...]:
        """The 13 row values in contract order (the keys are `markets.row_keys(market)`)."""
        return (
            self.open_time, self.close_time, self.symbol, self.interval, self.open, self.high,
            self.low, self.close, self.volume, self.quote_volume, self.trades,
            self.taker_buy_base_volume, self.taker_buy_quote_volume,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        if self.market == Market.CM:
            return dict(zip(CM_ROW_KEYS, self.values(), strict=True))
        return {
            "open_time": self.open_time,
            "close_time": self.close_time,
            "symbol": self.symbol,
            "interval": self.interval,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "quote_volume": self.quote_volume,
            "trades": self.trades,
            "taker_buy_base_volume": self.taker_buy_base_volume,
            "taker_buy_quote_volume": self.taker_buy_quote_volume,
        }


# Fixed intervals as (step, anchor) so the hot path does no calendar work; 1M goes the slow way.
_GRID: dict[str, tuple[int, int]] = {
    iv: (NOMINAL_MS[iv], grid_anchor(iv)) for iv in NOMINAL_MS if iv != "1M"
}
_checked_symbol = functools.lru_cache(maxsize=4096)(validate_symbol)


def _is_decimal(v: object) -> bool:
    """The schema's decimal pattern, about 4x faster than a regex (this runs 8 times per row).

    isdigit() alone accepts '²' and '١٢٣'; after isascii() it means exactly 0-9.
    """
    if type(v) is not str or not v.isascii():
        return False
    whole, dot, frac = v.partition(".")
    return (
        0 < len(whole) <= DECIMAL_MAX_WHOLE_DIGITS
        and whole.isdigit()
        and (not dot or (0 < len(frac) <= DECIMAL_MAX_FRACTION_DIGITS and frac.isdigit()))
    )


def validate_kline(k: Kline, where: str = "") -> None:
    ot, ct, trades, interval = k.open_time, k.close_time, k.trades, k.interval
    if type(ot) is not int:
        raise InvalidRow("open_time", ot, "must be an integer", where=where)
    if type(ct) is not int:
        raise InvalidRow("close_time", ct, "must be an integer", where=where)
    if type(trades) is not int:
        raise InvalidRow("trades", trades, "must be an integer", where=where)
    if not (_MIN_MS <= ot < _MAX_MS):
        raise InvalidRow("open_time", ot, "not a plausible epoch time in ms", where=where)
    if ct >= _MAX_MS:  # (close_time >= open_time is checked below)
        raise InvalidRow("close_time", ct, "not a plausible epoch time in ms", where=where)
    if not (0 <= trades <= MAX_TRADES):
        raise InvalidRow("trades", trades, f"must be 0 to 2^53-1 ({MAX_TRADES})", where=where)
    if interval not in NOMINAL_MS:
        raise InvalidRow("interval", interval, "not a Binance interval", where=where)
    if k.market != Market.SPOT:
        if k.market not in SPECS:
            raise InvalidRow("market", k.market, "not one of spot, um, cm", where=where)
        if interval == "1s":
            raise InvalidRow("interval", interval, "futures have no 1s klines", where=where)
    try:
        _checked_symbol(k.symbol)
    except InvalidData as exc:
        raise InvalidRow("symbol", k.symbol, str(exc), where=where) from None
    except TypeError:  # unhashable: not a string at all
        raise InvalidRow("symbol", k.symbol, "must be a string", where=where) from None
    for name, v in (
        ("open", k.open), ("high", k.high), ("low", k.low), ("close", k.close),
        ("volume", k.volume), ("quote_volume", k.quote_volume),
        ("taker_buy_base_volume", k.taker_buy_base_volume),
        ("taker_buy_quote_volume", k.taker_buy_quote_volume),
    ):  # fmt: skip
        if not _is_decimal(v):
            raise InvalidRow(name, v, "must be a decimal string such as '1.50000000'", where=where)
    if ct < ot:
        raise InvalidRow("close_time", ct, f"before open_time {ot}", where=where)
    grid = _GRID.get(interval)
    if grid is None:  # 1M: calendar months
        aligned, next_open = is_aligned(ot, interval), next_open_time(ot, interval)
    else:
        aligned = interval in GRID_UNDOCUMENTED or (ot - grid[1]) % grid[0] == 0
        next_open = ot + grid[0]
    if not aligned:
        raise InvalidRow("open_time", ot, f"not aligned to the {interval} interval", where=where)
    # Halted candles close early (allowed); none closes after the next one opens.
    if ct >= next_open:
        raise InvalidRow("close_time", ct, f"after the end of the {interval} kline", where=where)


def to_millis(value: object, field: str, where: str = "") -> int:
    """An integer epoch time in ms; 16-digit µs values (dumps since 2025, µs mode) are converted."""
    if type(value) is not int:
        raise InvalidRow(field, value, "must be an integer epoch time", where=where)
    if value >= _MICROS_THRESHOLD:
        return value // 1000
    return value


def _int_field(value: object, field: str, where: str) -> int:
    if type(value) is not int:
        raise InvalidRow(field, value, "must be an integer", where=where)
    return value


def _build(
    values: Sequence[object], symbol: str, interval: str, where: str, market: Market
) -> Kline:
    """From the 12 Binance columns (REST/CSV order) with typed values."""
    try:
        return Kline(
            open_time=to_millis(values[0], "open_time", where),
            close_time=to_millis(values[6], "close_time", where),
            symbol=symbol,
            interval=interval,
            open=values[1],  # type: ignore[arg-type]  # validated in __post_init__
            high=values[2],  # type: ignore[arg-type]
            low=values[3],  # type: ignore[arg-type]
            close=values[4],  # type: ignore[arg-type]
            volume=values[5],  # type: ignore[arg-type]
            quote_volume=values[7],  # type: ignore[arg-type]
            trades=_int_field(values[8], "trades", where),
            taker_buy_base_volume=values[9],  # type: ignore[arg-type]
            taker_buy_quote_volume=values[10],  # type: ignore[arg-type]
            market=market,
        )
    except InvalidRow as exc:
        if where and not exc.where:
            raise InvalidRow(exc.field, exc.value, exc.reason, where=where) from None
        raise


# --- REST /api/v3/klines -------------------------------------------------------------------


def parse_rest_row(
    row: object, symbol: str, interval: str, where: str = "", market: Market = Market.SPOT
) -> Kline:
    """One element of a `/api/v3/klines` response:

    [1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",
     1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]
    """
    if not isinstance(row, list) or len(row) != 12:
        n = len(row) if isinstance(row, list) else type(row).__name__
        raise InvalidRow("row", row, f"expected a 12-element array, got {n}", where=where)
    return _build(row, symbol, interval, where, market)


def parse_rest_page(
    body: bytes | str, symbol: str, interval: str, market: Market = Market.SPOT
) -> Sequence[Kline]:
    """A whole `/api/v3/klines` (`/fapi/v1/klines`, `/dapi/v1/klines`) response body; rows
    must ascend by open_time. Futures rows have the same 12 columns (binance-futures-api.md §6).

    A regular page (compact JSON, contiguous open times, full-length candles: what Binance
    sends outside halts) is validated in bulk (`regular_rest_page`); anything else goes row by
    row, which also names the first offending field. Both accept exactly the same pages.
    A regular page comes as `StreamRows` where the compiled parser is built, else as Klines.
    """
    compiled = _compiled_page(body, symbol, interval, market)
    if compiled is not None:
        return compiled
    rows = load_json(body, "klines response", list)
    regular = regular_rest_page(body, rows, symbol, interval, market)
    if regular is not None:
        return regular
    return parse_rest_rows(rows, symbol, interval, market)


def parse_rest_rows(
    rows: list[Any], symbol: str, interval: str, market: Market = Market.SPOT
) -> list[Kline]:
    """The decoded rows of a `/api/v3/klines` body, one by one (the reference path)."""
    out = [parse_rest_row(r, symbol, interval, f"row {i}", market) for i, r in enumerate(rows)]
    for i in range(1, len(out)):
        if out[i].open_time <= out[i - 1].open_time:
            raise InvalidRow("open_time", out[i].open_time, "not ascending", where=f"row {i}")
    return out


# --- REST pages in bulk (the backfill hot path) --------------------------------------------
#
# Validating row by row costs ~10 µs per row (a dataclass __init__ and 8 decimal checks each);
# a page of 1,000 rows is instead checked with a handful of C-level passes over its bytes and
# columns, then its Klines are built column by column. The checks below together imply every
# check `validate_kline` makes, so a page passes here only if it would pass row by row
# (tests/core/test_rest_page_fast.py compares both on generated pages, valid and not).

# One row of a compact page with its ASCII digits deleted: integer, 5 decimals ("d.d"),
# integer, decimal, integer, 2 decimals, and the ignored field (digits only, as Binance sends).
_REST_ROW_SHAPE = b'[,".",".",".",".",".",,".",,".",".",""]'
_REST_DECIMALS_PER_ROW = _REST_ROW_SHAPE.count(b".")
_ASCII_DIGITS = b"0123456789"
_DIGIT_TO_D = bytes.maketrans(_ASCII_DIGITS, b"d" * len(_ASCII_DIGITS))
# More digits than the decimal rule allows in a whole part (after the opening quote) or in a
# fractional part (after the dot), with the digits mapped to "d".
_WHOLE_TOO_LONG = b'"' + b"d" * (DECIMAL_MAX_WHOLE_DIGITS + 1)
_FRACTION_TOO_LONG = b"." + b"d" * (DECIMAL_MAX_FRACTION_DIGITS + 1)


def _rest_page_shape_ok(body: bytes, n: int) -> bool:
    """Every row is `[int,"D",...,"D","digits"]` where each D passes `_is_decimal` (and has a
    fractional part, as Binance sends them)."""
    # Deleting the digits leaves the structure: 12 columns, the types, exactly one dot in each
    # decimal, and no other byte anywhere (no sign, exponent, escape, space or non-ASCII digit).
    if body.translate(None, _ASCII_DIGITS) != b"[" + b",".join([_REST_ROW_SHAPE] * n) + b"]":
        return False
    return _decimal_digit_runs_ok(body, _REST_DECIMALS_PER_ROW * n)


def _decimal_digit_runs_ok(body: bytes, decimals: int) -> bool:
    """After a digit-free shape check has placed exactly `decimals` quoted `"<digits>.<digits>"`
    values (and no other dot): each passes `_is_decimal`."""
    digits = body.translate(_DIGIT_TO_D)
    # Every dot has a digit on both sides (no "", ".5", "5."), and no part is too long.
    return (
        digits.count(b"d.d") == decimals
        and _WHOLE_TOO_LONG not in digits
        and _FRACTION_TOO_LONG not in digits
    )


def regular_rest_page(
    body: bytes | str, rows: list[Any], symbol: str, interval: str, market: Market = Market.SPOT
) -> list[Kline] | None:
    """The page's Klines if it is regular (see `parse_rest_page`), else None (never raises for
    bad data: the row-by-row path then decides, and names what is wrong)."""
    n = len(rows)
    grid = _bulk_grid(symbol, interval, market)
    if not n or grid is None:
        return None
    raw = body.encode() if isinstance(body, str) else body
    if not _rest_page_shape_ok(raw, n):
        return None
    columns = list(zip(*rows, strict=True))
    opens, closes, trades = columns[0], columns[6], columns[8]
    if not _regular_grid(opens, closes, trades, grid, interval):
        return None
    return _trusted_klines(
        opens, closes, repeat(symbol), repeat(interval), columns[1], columns[2], columns[3],
        columns[4], columns[5], columns[7], trades, columns[9], columns[10], repeat(market),
    )  # fmt: skip


def _regular_grid(
    opens: Sequence[int],
    closes: Sequence[int],
    trades: Sequence[int],
    grid: tuple[int, int],
    interval: str,
) -> bool:
    """Integer columns (the caller's shape check made them so) of contiguous full-length
    candles: ascending, aligned, plausible times, close_time inside each kline, trades in
    bounds; together what `validate_kline` checks of these fields."""
    step, anchor = grid
    n = len(opens)
    first = opens[0]
    end = first + n * step
    # Where Binance does not document the grid's anchor, accept what it sends (validate_kline).
    aligned = interval in GRID_UNDOCUMENTED or (first - anchor) % step == 0
    return (
        aligned
        and first >= _MIN_MS
        and end - 1 < _MAX_MS  # the last close_time
        and tuple(opens) == tuple(range(first, end, step))
        and tuple(closes) == tuple(range(first + step - 1, end + step - 1, step))
        and _trades_ok(min(trades), max(trades))
    )  # fmt: skip


def _bulk_grid(symbol: str, interval: str, market: Market) -> tuple[int, int] | None:
    """The interval's (step, anchor) if a page of this stream may be checked in bulk at all
    (a fixed interval, a valid symbol, a market that has the interval), else None: the
    row-by-row path then names the problem."""
    grid = _GRID.get(interval)
    if (
        grid is None
        or type(symbol) is not str
        or _valid_symbol_or_none(symbol) is None
        or market not in SPECS
        or (market != Market.SPOT and interval == "1s")
    ):
        return None
    return grid


def _valid_symbol_or_none(symbol: str) -> str | None:
    try:
        return _checked_symbol(symbol)
    except (InvalidData, TypeError):
        return None


def _trades_ok(lowest: int, highest: int) -> bool:
    """Every trade count between these passes validate_kline's trades rule."""
    return lowest >= 0 and highest <= MAX_TRADES


# A mutable twin of Kline with the same slots, so the same memory layout: its plain __init__
# stores the fields (what Kline's frozen __init__ does, minus __post_init__) about 2x faster
# than setting Kline's slots one by one; each object then becomes a Kline by `__class__`
# assignment, which CPython allows between classes of the same layout.
_KlineFields = dataclasses.make_dataclass(
    "_KlineFields",
    [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(Kline)],
    slots=True,
    eq=False,
)


def _trusted_klines(*columns: Iterable[object]) -> list[Kline]:
    """Klines from one iterable per field (in field order) without `__post_init__`: only for
    values that the caller has validated in bulk with the same rules (`regular_rest_page`,
    `regular_message_rows`)."""
    out: list[Kline] = list(map(_KlineFields, *columns))
    deque(map(setattr, out, repeat("__class__"), repeat(Kline)), maxlen=0)
    return out


def _trusted_klines_from_values(
    values: Iterable[Iterable[object]], market: Market, lines: Iterable[bytes]
) -> list[Kline]:
    """Klines from each row's 13 values in field order, each carrying its lake line (`_line`),
    as `_trusted_klines` (the same trust: only for rows validated in bulk, and lines cut from
    the bytes that were checked: `regular_message_rows`)."""
    out: list[Kline] = list(starmap(_KlineFields, values))
    if market != Market.SPOT:
        deque(map(setattr, out, repeat("market"), repeat(market)), maxlen=0)
    deque(map(setattr, out, repeat("_line"), lines), maxlen=0)
    deque(map(setattr, out, repeat("__class__"), repeat(Kline)), maxlen=0)
    return out


# --- REST pages compiled (the backfill hot path, issue 15) -----------------------------------
#
# klinelake/core/_rest_page.c does what `regular_rest_page` and `to_line` do for a regular page
# in one pass over its bytes, with no JSON decode: ~0.5 µs per row instead of ~3.5. It is built
# by `pip install` where a C compiler is (setup.py, optional); without it this path is skipped.
# It accepts only pages the reference path accepts, with the same rows and the same lines
# (tests/core/test_rest_page_compiled.py).

try:
    import klinelake.core._rest_page as _compiled
except ImportError:  # not built here: the pure Python path does the same, slower
    _compiled = None  # type: ignore[assignment]  # (mypy's idiom for an optional module)
else:
    _compiled.configure(
        _MIN_MS, _MAX_MS, MAX_TRADES, DECIMAL_MAX_WHOLE_DIGITS, DECIMAL_MAX_FRACTION_DIGITS
    )

COMPILED_ROW_PATH = _compiled is not None
ROW_PATH = "compiled" if COMPILED_ROW_PATH else "pure Python"  # what --version and logs say


@functools.lru_cache(maxsize=4096)
def _line_fragments(symbol: str, interval: str, market: Market) -> tuple[bytes, ...]:
    """The 12 byte strings around a line's 11 page values (open_time, close_time, open, high,
    low, close, volume, quote_volume, trades, taker-buy base, taker-buy quote): `to_line()` of
    any row of this stream is fragment 0, value 0, fragment 1, ..., value 10, fragment 11."""
    k = [orjson.dumps(key) + b":" for key in row_keys(market)]
    quoted_after = b'",'
    return (
        b"{" + k[0],
        b"," + k[1],
        b"," + k[2] + orjson.dumps(symbol) + b"," + k[3] + orjson.dumps(interval) + b"," + k[4]
        + b'"',
        *(quoted_after + k[i] + b'"' for i in (5, 6, 7, 8, 9)),
        quoted_after + k[10],
        b"," + k[11] + b'"',
        quoted_after + k[12] + b'"',
        b'"}\n',
    )  # fmt: skip


def _compiled_page(
    body: bytes | str, symbol: str, interval: str, market: Market
) -> StreamRows | None:
    """The page's rows as open times and lines if the compiled parser is built and the page
    is regular (`parse_rest_page`), else None."""
    grid = _bulk_grid(symbol, interval, market)
    if _compiled is None or grid is None:
        return None
    # Exactly the types the reference's reader (orjson) takes as `bytes | str`: it refuses their
    # subclasses and a str that is not UTF-8 (a lone surrogate), and so must this path.
    if type(body) is bytes:
        raw = body
    elif type(body) is str:
        try:
            raw = body.encode()
        except UnicodeEncodeError:
            return None
    else:
        return None
    step, anchor = grid
    market = Market(market)
    fragments = _line_fragments(symbol, interval, market)
    check_anchor = interval not in GRID_UNDOCUMENTED
    page = _compiled.page_lines(raw, fragments, step, anchor, check_anchor)
    if page is None:
        return None
    return StreamRows(symbol, interval, market, *page)


class StreamRows(Sequence[Kline]):
    """Rows of one stream held as two parallel lists, their open times and their lake lines
    (`Kline.to_line()`): all that the lake and the messages need of a row. The compiled REST
    parser hands a page over like this and the backfill carries it so to the sink, two objects
    per row where a Kline takes fourteen (issue 15); a Kline is parsed from its line only when
    one is asked for. As a Sequence it equals any sequence of the same Klines.

    Only for lines of this stream that a parser validated or `to_line()` wrote; the lists are
    never changed once given."""

    __slots__ = ("interval", "lines", "market", "open_times", "symbol")

    def __init__(
        self,
        symbol: str,
        interval: str,
        market: Market,
        open_times: Sequence[int],
        lines: Sequence[bytes],
    ) -> None:
        if len(open_times) != len(lines):
            raise ValueError("open_times and lines differ in length")
        self.symbol, self.interval, self.market = symbol, interval, market
        self.open_times, self.lines = open_times, lines

    @classmethod
    def of(cls, symbol: str, interval: str, market: Market, rows: Sequence[Kline]) -> StreamRows:
        """`rows` as StreamRows of this stream (themselves if they already are); InvalidData
        if one of them is of another stream."""
        stream = (symbol, interval, market)
        if isinstance(rows, StreamRows):
            if rows.stream != stream:
                raise InvalidData(f"rows of {rows.stream} given as rows of {stream}")
            return rows
        if not of_one_stream(rows, stream):
            other = next(r for r in rows if (r.symbol, r.interval, r.market) != stream)
            raise InvalidData(
                f"row {other.market}:{other.symbol}@{other.interval} given as a row of "
                f"{market}:{symbol}@{interval}"
            )
        return cls(symbol, interval, market, open_times(rows), lake_lines(rows))

    @classmethod
    def joined(
        cls, symbol: str, interval: str, market: Market, parts: Iterable[Sequence[Kline]]
    ) -> StreamRows:
        """The parts one after another as StreamRows of this stream (a page fetched in several
        requests): their lines are taken as they are, no Kline parsed (`of` for each part)."""
        times: list[int] = []
        lines: list[bytes] = []
        for part in parts:
            rows = cls.of(symbol, interval, market, part)
            times.extend(rows.open_times)
            lines.extend(rows.lines)
        return cls(symbol, interval, market, times, lines)

    @property
    def stream(self) -> tuple[str, str, Market]:
        return self.symbol, self.interval, self.market

    def __len__(self) -> int:
        return len(self.lines)

    @overload
    def __getitem__(self, index: int) -> Kline: ...
    @overload
    def __getitem__(self, index: slice) -> StreamRows: ...
    def __getitem__(self, index: int | slice) -> Kline | StreamRows:
        if isinstance(index, slice):
            return StreamRows(
                self.symbol, self.interval, self.market, self.open_times[index], self.lines[index]
            )
        return parse_lake_line(self.lines[index], f"row {index}", self.market)

    def __iter__(self) -> Iterator[Kline]:
        return map(parse_lake_line, self.lines, repeat(""), repeat(self.market))

    def reversed(self) -> StreamRows:
        return self[::-1]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StreamRows):
            return self.stream == other.stream and list(self.lines) == list(other.lines)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(map(operator.eq, self, other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __reduce__(self) -> tuple[type[StreamRows], tuple[Any, ...]]:
        # every pickle protocol, as for a tuple of Klines (slots alone need protocol 2 or more)
        return StreamRows, (self.symbol, self.interval, self.market, self.open_times, self.lines)

    def __repr__(self) -> str:
        return f"StreamRows({self.market}:{self.symbol}@{self.interval}, {len(self)} rows)"


_CACHED_LINE = attrgetter("_line")
_OPEN_TIME = attrgetter("open_time")
_STREAM_OF_ROW = attrgetter("symbol", "interval", "market")


def of_one_stream(rows: Sequence[Kline], stream: tuple[str, str, str]) -> bool:
    """Every row is of `stream` (symbol, interval, market): one C-level pass; StreamRows are of
    one stream by construction."""
    if isinstance(rows, StreamRows):
        return rows.stream == stream
    return list(map(_STREAM_OF_ROW, rows)).count(stream) == len(rows)


def open_times(rows: Sequence[Kline]) -> Sequence[int]:
    """Each row's open_time (StreamRows hold them already)."""
    if isinstance(rows, StreamRows):
        return rows.open_times
    return list(map(_OPEN_TIME, rows))


def open_time_at(rows: Sequence[Kline], index: int) -> int:
    """`rows[index].open_time`, without parsing a line out of StreamRows."""
    if isinstance(rows, StreamRows):
        return rows.open_times[index]
    return rows[index].open_time


def lake_lines(rows: Sequence[Kline]) -> Sequence[bytes]:
    """Each row's `to_line()`: StreamRows hold them already, and the lines a bulk parser put
    in its Klines are taken as they are, in one C-level pass when every row has one."""
    if isinstance(rows, StreamRows):
        return rows.lines
    cached = list(map(_CACHED_LINE, rows))
    if None in cached:
        return [r.to_line() for r in rows]
    return cast(list[bytes], cached)


# --- data.binance.vision CSV ---------------------------------------------------------------


def parse_csv_line(
    line: str, symbol: str, interval: str, where: str = "", market: Market = Market.SPOT
) -> Kline:
    """One headerless dump line (ms before 2025, µs since):

    1640995200000,46216.93000000,46731.39000000,46208.37000000,46656.13000000,1503.33095000,
    1640998799999,69879986.39049930,38608,806.06536000,37462156.91764400,0
    """
    parts = line.rstrip("\r\n").split(",")
    if len(parts) != 12:
        raise InvalidRow("row", line[:80], f"expected 12 columns, got {len(parts)}", where=where)
    values: list[object] = list(parts)
    for idx, name in ((0, "open_time"), (6, "close_time"), (8, "trades")):
        text = parts[idx].strip()
        if not text.isascii() or not text.isdigit():
            raise InvalidRow(name, parts[idx], "must be an integer", where=where)
        values[idx] = int(text)
    return _build(values, symbol, interval, where, market)


def iter_csv(
    text: str | bytes,
    symbol: str,
    interval: str,
    source: str = "csv",
    market: Market = Market.SPOT,
) -> Iterator[Kline]:
    """Rows of a dump file: optional header line (futures files have one), LF or CRLF, ms or µs
    timestamps."""
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if n == 1 and not line.lstrip("\ufeff")[:1].isdigit():
            continue  # a header line ("open_time,open,..." or "Opentime,Open,...")
        yield parse_csv_line(line, symbol, interval, f"{source} line {n}", market)


def parse_csv(text: str | bytes, symbol: str, interval: str, source: str = "csv") -> list[Kline]:
    return list(iter_csv(text, symbol, interval, source))


# --- lake rows and message rows (JSON objects) ---------------------------------------------


def kline_from_dict(obj: object, where: str = "", market: Market = Market.SPOT) -> Kline:
    """A row in the lake schema of `market` (from the lake or a Pub/Sub message); unknown keys
    are refused, so a COIN-M row cannot pass as a spot/USD-M one or the other way round."""
    if not isinstance(obj, Mapping):
        raise InvalidRow("row", obj, "must be a JSON object", where=where)
    keys = row_keys(market)
    missing = [f for f in keys if f not in obj]
    if missing:
        raise InvalidRow(missing[0], None, f"missing (a {market} row)", where=where)
    extra = [k for k in obj if k not in keys]
    if extra:
        raise InvalidRow(
            str(extra[0]), obj[extra[0]], f"unknown field in a {market} row", where=where
        )
    try:
        # The n-th key of any market holds the n-th slot (markets.py), slots being spot's names.
        slots = {slot: obj[key] for slot, key in zip(SPOT_ROW_KEYS, keys, strict=True)}
        return Kline(**slots, market=market)
    except InvalidRow as exc:
        raise InvalidRow(exc.field, exc.value, exc.reason, where=where) from None


# --- message rows in bulk (the function's backfill hot path) --------------------------------
#
# The rows of a Pub/Sub message as JSON objects: the same idea as the REST pages above. The
# decoded rows are re-serialised (orjson: compact, no escapes of ASCII), so the check reads
# canonical bytes whatever spelling arrived; then the same digit-run and grid checks apply.

_DECIMAL_FIELDS = tuple(f for f in FIELDS if f not in ("open_time", "close_time", "trades",
                                                     "symbol", "interval"))  # fmt: skip


def _message_row_shape(symbol: str, interval: str, market: Market = Market.SPOT) -> bytes:
    """One canonical message row of `market` (its row keys) with its ASCII digits deleted
    (decimals as "d.d")."""
    values = dict.fromkeys(SPOT_ROW_KEYS, "0.0") | dict(
        open_time=0, close_time=0, symbol=symbol, interval=interval, trades=0
    )
    # the n-th key of any market holds the n-th slot (markets.py)
    keyed = {key: values[slot] for slot, key in zip(SPOT_ROW_KEYS, row_keys(market), strict=True)}
    return orjson.dumps(keyed).translate(None, _ASCII_DIGITS)


def regular_message_rows(
    klines: list[Any], symbol: str, interval: str, market: Market = Market.SPOT
) -> list[Kline] | None:
    """The Klines of a message's `klines` array, each carrying its lake line (`Kline.to_line()`,
    cut from the bytes the check read), if it is regular (each row an object with
    exactly the contract's keys in contract order, this stream's symbol and interval, decimals
    with a fractional part, contiguous full-length candles), else None. Never raises for bad
    data: `kline_from_dict` row by row then decides and names what is wrong. Accepts only what
    that path accepts, with the same rows (tests/core/test_message_bulk.py). Futures rows take
    their market's keys (COIN-M: `markets.CM_ROW_KEYS`, same slots in the same order)."""
    n = len(klines)
    grid = _GRID.get(interval)
    if (
        not n
        or grid is None
        or type(symbol) is not str
        or not symbol.isascii()
        or "." in symbol
        or _valid_symbol_or_none(symbol) is None
        or market not in SPECS
        or (market != Market.SPOT and interval == "1s")  # the row-by-row path names it
    ):
        return None
    try:
        body = orjson.dumps(klines)
    except orjson.JSONEncodeError:  # e.g. an integer over 64 bits: the slow path names it
        return None
    shape = _message_row_shape(symbol, interval, market)
    if body.translate(None, _ASCII_DIGITS) != b"[" + b",".join([shape] * n) + b"]":
        return None
    if not _decimal_digit_runs_ok(body, len(_DECIMAL_FIELDS) * n):
        return None
    # The shape made every row a dict with the market's keys in slot order (the n-th key of
    # any market holds the n-th slot: markets.py), so each row's values() are a Kline's first
    # 13 fields: the Klines are built from them row-wise, no transposed copy of the columns.
    keys = row_keys(market)
    opens, closes, symbols, intervals, trades = (
        list(map(itemgetter(keys[i]), klines)) for i in (0, 1, 2, 3, 10)
    )
    if (
        symbols.count(symbol) != n
        or intervals.count(interval) != n
        or not _regular_grid(opens, closes, trades, grid, interval)
    ):
        return None
    # Each row's bytes are orjson's dump of its dict, keys in contract order: what to_line
    # writes. Braces occur nowhere else (the shape check), so "},{" separates rows.
    lines = (b"{" + body[2:-2].replace(b"},{", b"}\n{") + b"}\n").splitlines(keepends=True)
    return _trusted_klines_from_values(map(dict.values, klines), Market(market), lines)


def parse_lake_line(line: bytes, where: str = "", market: Market = Market.SPOT) -> Kline:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidRow("row", line[:80], f"not JSON: {exc}", where=where) from None
    return kline_from_dict(obj, where, market)


def open_time_of_line(line: bytes) -> int:
    """open_time of a canonical lake line without parsing the JSON (hot path of merges)."""
    if not line.startswith(_LINE_PREFIX):
        raise InvalidRow("row", line[:80], "not a canonical lake row")
    end = line.index(b",", len(_LINE_PREFIX))
    return int(line[len(_LINE_PREFIX) : end])
