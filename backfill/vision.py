"""`--source vision`: whole months from the data.binance.vision monthly dumps (no weight cost).

The plan (`plan_vision_stream`) gives every calendar month lying wholly inside [first, last] one
page covering the month; the partial months at the edges get ordinary REST pages on the REST grid
(`plan_ranges`). `VisionFetcher.fetch` downloads a month page's zip and its `.CHECKSUM`, verifies
the sha256 (a mismatch raises `ChecksumMismatch`: the month is never handed to the sink), unzips
the one headerless CSV and parses it (`parse_csv` reads µs and ms times alike). A month whose zip
is 404 (not published yet) and every edge page are fetched over REST exactly as `--source rest`.
Rows then take the same emitter/sink/checkpoint path as REST pages.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Sequence

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from backfill.plan import Page, StreamPlan, first_open_at_or_after, plan_ranges
from klinelake.binance_rest import BinanceRest
from klinelake.errors import InvalidData, KlineLakeError, TransientError
from klinelake.intervals import (
    Gap,
    _month_index,
    _month_start,
    align_down,
    count_between,
)
from klinelake.markets import Market, spec
from klinelake.row import Kline, iter_csv

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class ChecksumMismatch(InvalidData):
    """A dump's sha256 differs from its `.CHECKSUM`: nothing of that month is written."""


class VisionError(KlineLakeError):
    """A dump could not be fetched or read (other than a 404, which falls back to REST)."""


def month_page(symbol: str, interval: str, month_index: int, market: Market = Market.SPOT) -> Page:
    """The page covering every open time of one calendar month."""
    start = first_open_at_or_after(_month_start(month_index), interval)
    end = _month_start(month_index + 1) - 1
    expected = count_between(start, align_down(end, interval), interval)
    return Page(symbol, interval, start, end, expected, market)


def whole_months(interval: str, first: int, last: int) -> list[int]:
    """Month indexes whose open times all lie in [first, last]."""
    out: list[int] = []
    for index in range(_month_index(first), _month_index(last) + 1):
        start = first_open_at_or_after(_month_start(index), interval)
        end = align_down(_month_start(index + 1) - 1, interval)
        if start >= first and end <= last and start <= end:
            out.append(index)
    return out


def plan_vision_stream(
    symbol: str,
    interval: str,
    first: int,
    last: int,
    *,
    page_limit: int,
    market: Market = Market.SPOT,
) -> tuple[StreamPlan, set[str]]:
    """(the stream's pages in open-time order, the keys of the pages served by a dump)."""
    months = whole_months(interval, first, last)
    if not months:
        pages = plan_ranges(symbol, interval, [(first, last)], page_limit, market)
        return StreamPlan(symbol, interval, first, last, tuple(pages), market), set()
    month_pages = [month_page(symbol, interval, i, market) for i in months]
    head: list[Gap] = [(first, month_pages[0].start - 1)] if first < month_pages[0].start else []
    tail_first = month_pages[-1].end + 1
    tail: list[Gap] = [(tail_first, last)] if tail_first <= last else []
    pages = [
        *plan_ranges(symbol, interval, head, page_limit, market),
        *month_pages,
        *plan_ranges(symbol, interval, tail, page_limit, market),
    ]
    return (
        StreamPlan(symbol, interval, first, last, tuple(pages), market),
        {p.key for p in month_pages},
    )


def dump_name(symbol: str, interval: str, month_start_ms: int) -> str:
    import time

    ym = time.strftime("%Y-%m", time.gmtime(month_start_ms / 1000))
    return f"{symbol}-{'1mo' if interval == '1M' else interval}-{ym}"


class VisionFetcher:
    """Fetches a page: from a monthly dump if it is one of `month_keys`, else over REST."""

    def __init__(
        self,
        base_url: str,
        rest: BinanceRest,
        month_keys: set[str],
        *,
        page_limit: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.rest = rest
        self.month_keys = month_keys
        self.page_limit = page_limit
        self.client = httpx.AsyncClient(timeout=120, transport=transport)
        self.dumps_fetched = 0
        self.dumps_missing = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, page: Page) -> list[Kline]:
        if page.key in self.month_keys:
            rows = await self.dump(page)
            if rows is not None:
                return rows
            self.dumps_missing += 1
            edges = [(page.start, page.end)]
            return await self.rest_pages(
                plan_ranges(page.symbol, page.interval, edges, self.page_limit, page.market)
            )
        return await self.rest_pages([page])

    async def rest_pages(self, pages: Sequence[Page]) -> list[Kline]:
        rows: list[Kline] = []
        for p in pages:
            rows.extend(
                await self.rest.klines(p.symbol, p.interval, p.start, p.end, limit=self.page_limit)
            )
        return rows

    async def _get(self, url: str) -> httpx.Response | None:
        """The response body, None on 404; retries transport errors and 5xx."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(5),
            wait=wait_exponential(multiplier=0.5, max=10),
            reraise=True,
        ):
            with attempt:
                try:
                    r = await self.client.get(url)
                except httpx.TransportError as exc:
                    raise TransientError(f"{url}: {exc!r}") from exc
                if r.status_code == 404:
                    return None
                if r.status_code >= 500 or r.status_code == 429:
                    raise TransientError(f"{url}: HTTP {r.status_code}")
                if r.status_code != 200:
                    raise VisionError(f"{url}: HTTP {r.status_code}")
                return r
        raise AssertionError("unreachable")  # pragma: no cover

    async def dump(self, page: Page) -> list[Kline] | None:
        """The month's rows from its dump, verified; None if the dump does not exist (404)."""
        name = dump_name(page.symbol, page.interval, _month_start(_month_index(page.start)))
        interval = "1mo" if page.interval == "1M" else page.interval
        # data/spot/... or data/futures/um|cm/... (binance-futures-api.md §10)
        prefix = spec(page.market).archive_prefix
        url = f"{self.base_url}/{prefix}/monthly/klines/{page.symbol}/{interval}/{name}.zip"
        zipped = await self._get(url)
        if zipped is None:
            return None
        check = await self._get(url + ".CHECKSUM")
        if check is None:
            raise VisionError(f"{url}.CHECKSUM: 404 while the zip exists; cannot verify it")
        fields = check.text.split()
        if not fields or not _HEX64.fullmatch(fields[0]):
            raise VisionError(f"{url}.CHECKSUM: not in sha256sum format '<hex>  <name>'")
        actual = hashlib.sha256(zipped.content).hexdigest()
        if actual != fields[0].lower():
            raise ChecksumMismatch(
                f"{name}.zip: sha256 {actual} does not match {fields[0]} in its CHECKSUM "
                f"({url}.CHECKSUM); nothing written for {page.stream} {name[-7:]}"
            )
        try:
            with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
                names = [n for n in zf.namelist() if n.endswith(".csv")]
                if len(names) != 1:
                    raise VisionError(f"{url}: expected one .csv inside, found {names}")
                data = zf.read(names[0])
        except zipfile.BadZipFile as exc:
            raise VisionError(f"{url}: not a zip: {exc}") from exc
        # futures CSVs start with a header line (skipped); COIN-M columns mean other things
        rows = list(iter_csv(data, page.symbol, page.interval, source=url, market=page.market))
        self.dumps_fetched += 1
        return [r for r in rows if page.start <= r.open_time <= page.end]
