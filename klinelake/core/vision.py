"""data.binance.vision kline archives (binance-spot-api.md §10), pure: names, spans, checksums.

Layout (spot; `1mo` stands for `1M` in paths and names):

    data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2022-01.zip           one calendar month
    data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2022-01-15.zip          one UTC day
    ...zip.CHECKSUM   sha256sum format: "<64 hex>  BTCUSDT-1h-2022-01.zip"

Each zip holds one headerless CSV of the same stem in Binance's 12-column order (times in µs
for files from 2025-01-01 on, ms before; `klinelake.core.row.parse_csv` reads both). Daily files
exist for intervals up to `1d`. Futures archives (binance-futures-api.md §10) live under
`data/futures/um/...` and `data/futures/cm/...` (`markets.MarketSpec.archive_prefix`), keep ms
times, and their CSVs start with a header line (skipped by `klinelake.core.row.iter_csv`); futures
symbols may contain `_` (`BTCUSD_PERP`). This module is the one home of the layout and of
the checksum verification: the backfill, `klinelake verify --against vision` and the simulator
use it.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from klinelake.core.errors import InvalidData, KlineLakeError
from klinelake.core.intervals import (
    DAY,
    _month_index,  # the calendar-month helpers of the shared interval arithmetic
    _month_start,
    align_down,
    check_interval,
    next_open_time,
    prev_open_time,
)
from klinelake.core.markets import Market, spec
from klinelake.core.row import Kline, iter_csv

MICROS_FROM_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC: spot files use µs from here on
DAILY_INTERVALS = frozenset({"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h",
                             "8h", "12h", "1d"})  # fmt: skip
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NAME = re.compile(
    r"(?P<symbol>[A-Z0-9_]+)-(?P<interval>[0-9]+[smhdw]|1mo)-(?P<y>\d{4})-(?P<m>\d{2})(?:-(?P<d>\d{2}))?"
)

Period = Literal["monthly", "daily"]


class ChecksumMismatch(InvalidData):
    """An archive's sha256 differs from its `.CHECKSUM`: nothing of it may be used."""


class ArchiveError(KlineLakeError):
    """An archive could not be read (not a zip, no CHECKSUM, not one CSV inside)."""


def path_interval(interval: str) -> str:
    return "1mo" if check_interval(interval) == "1M" else interval


@dataclass(frozen=True, slots=True, order=True)
class Archive:
    """One archive file: a stream's calendar month or UTC day, starting at `start` (ms)."""

    start: int
    period: Period
    symbol: str
    interval: str
    market: Market = Market.SPOT

    @property
    def end(self) -> int:
        """First ms after the span."""
        if self.period == "daily":
            return self.start + DAY
        return _month_start(_month_index(self.start) + 1)

    @property
    def stem(self) -> str:
        d = datetime.fromtimestamp(self.start / 1000, UTC)
        date = d.strftime("%Y-%m-%d" if self.period == "daily" else "%Y-%m")
        return f"{self.symbol}-{path_interval(self.interval)}-{date}"

    @property
    def path(self) -> str:
        return (
            f"{spec(self.market).archive_prefix}/{self.period}/klines/{self.symbol}/{path_interval(self.interval)}/"
            f"{self.stem}.zip"
        )

    @property
    def first_open_time(self) -> int:
        """The first open time of the interval grid inside the span."""
        t = align_down(self.start, self.interval)
        return t if t >= self.start else next_open_time(t, self.interval)

    @property
    def last_open_time(self) -> int:
        return align_down(self.end - 1, self.interval)

    @property
    def micros(self) -> bool:
        """Spot files use µs from 2025 on; futures files keep ms (FS §10)."""
        return self.market == Market.SPOT and self.start >= MICROS_FROM_MS


def month(symbol: str, interval: str, index: int, market: Market = Market.SPOT) -> Archive:
    return Archive(_month_start(index), "monthly", symbol, interval, market)


def day(symbol: str, interval: str, start_ms: int, market: Market = Market.SPOT) -> Archive:
    return Archive(start_ms - start_ms % DAY, "daily", symbol, interval, market)


def parse_archive_path(
    symbol: str, path_iv: str, name: str, market: Market = Market.SPOT
) -> tuple[Archive, bool] | None:
    """(the archive, whether `name` is its .CHECKSUM) for a served file name, else None."""
    checksum = name.endswith(".zip.CHECKSUM")
    if not name.endswith((".zip", ".zip.CHECKSUM")):
        return None
    m = _NAME.fullmatch(name.removesuffix(".CHECKSUM").removesuffix(".zip"))
    if m is None or m["symbol"] != symbol or m["interval"] != path_iv or path_iv == "1M":
        return None
    interval = "1M" if path_iv == "1mo" else path_iv
    try:
        check_interval(interval)
        if m["d"] is None:
            start = datetime(int(m["y"]), int(m["m"]), 1, tzinfo=UTC)
            monthly = Archive(int(start.timestamp() * 1000), "monthly", symbol, interval, market)
            return monthly, checksum
        start = datetime(int(m["y"]), int(m["m"]), int(m["d"]), tzinfo=UTC)
    except (InvalidData, ValueError):
        return None
    if interval not in DAILY_INTERVALS:
        return None
    return Archive(int(start.timestamp() * 1000), "daily", symbol, interval, market), checksum


def cover(
    symbol: str, interval: str, first: int, last: int, market: Market = Market.SPOT
) -> tuple[list[Archive], list[tuple[int, int]]]:
    """The archives whose open times all lie in [first, last] (whole months, then whole days of
    the partial months when the interval has daily files), and the (first, last) open-time
    ranges left for REST, in open-time order."""
    archives: list[Archive] = []
    for index in range(_month_index(first), _month_index(last) + 1):
        whole = month(symbol, interval, index, market)
        if _inside(whole, first, last):
            archives.append(whole)
        elif interval in DAILY_INTERVALS:
            lo = max(whole.start, first - first % DAY)
            for start in range(lo, min(whole.end, last + 1), DAY):
                if _inside(d := day(symbol, interval, start, market), first, last):
                    archives.append(d)
    rest: list[tuple[int, int]] = []
    t = first
    for a in archives:
        if a.first_open_time > t:
            rest.append((t, prev_open_time(a.first_open_time, interval)))
        t = next_open_time(a.last_open_time, interval)
    if t <= last:
        rest.append((t, last))
    return archives, rest


def _inside(a: Archive, first: int, last: int) -> bool:
    return first <= a.first_open_time <= a.last_open_time <= last


def checksum_text(zip_bytes: bytes, archive: Archive) -> str:
    """What Binance serves as the `.CHECKSUM`."""
    return f"{hashlib.sha256(zip_bytes).hexdigest()}  {archive.stem}.zip\n"


def read_archive(zip_bytes: bytes, checksum: str, archive: Archive, source: str) -> list[Kline]:
    """The rows of a downloaded archive, after checking it against its CHECKSUM."""
    fields = checksum.split()
    if not fields or not _HEX64.fullmatch(fields[0]):
        raise ArchiveError(f"{source}.CHECKSUM: not in sha256sum format '<hex>  <name>'")
    actual = hashlib.sha256(zip_bytes).hexdigest()
    if actual != fields[0].lower():
        raise ChecksumMismatch(
            f"{archive.stem}.zip: sha256 {actual} does not match {fields[0]} in its CHECKSUM "
            f"({source}.CHECKSUM); nothing of it is used"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            names = [n for n in zf.namelist() if n.endswith(".csv")]
            if len(names) != 1:
                raise ArchiveError(f"{source}: expected one .csv inside, found {names}")
            data = zf.read(names[0])
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{source}: not a zip: {exc}") from exc
    # futures CSVs start with a header line (skipped); COIN-M columns mean other things
    rows = iter_csv(data, archive.symbol, archive.interval, source, archive.market)
    return [r for r in rows if archive.start <= r.open_time < archive.end]
