"""`--source vision`: closed history from the data.binance.vision archives (no weight cost).

The plan (`plan_vision_stream`) gives every calendar month lying wholly inside [first, last] one
page served by its monthly zip, every whole UTC day of the partial months one page served by its
daily zip (intervals up to `1d`), and what is left at the edges (partial days, or a partial month
of an interval without daily files) ordinary REST pages on the REST grid (`plan_ranges`). So a
backfill of closed days costs no API weight at all. `VisionFetcher.fetch` downloads and verifies
an archive page (`klinelake.binance.vision_client`: a CHECKSUM mismatch raises `ChecksumMismatch`
and nothing of that archive reaches the sink); an archive that is a 404 (not published yet) and
every edge page are fetched over REST exactly as `--source rest`. Rows then take the same
emitter/sink/checkpoint path as REST pages; the open times an archive lacks are halts.
"""

from __future__ import annotations

from collections.abc import Sequence

from backfill.plan import Page, StreamPlan, plan_ranges
from klinelake.binance.rest import BinanceRest
from klinelake.binance.vision_client import VisionClient
from klinelake.core.intervals import count_between
from klinelake.core.markets import Market
from klinelake.core.publish import fetch_range
from klinelake.core.row import Kline, StreamRows
from klinelake.core.vision import Archive, cover


def archive_page(archive: Archive) -> Page:
    """The page covering every open time of one archive's span."""
    first, last = archive.first_open_time, archive.last_open_time
    return Page(
        archive.symbol, archive.interval, first, archive.end - 1,
        count_between(first, last, archive.interval), archive.market,
    )  # fmt: skip


def plan_vision_stream(
    symbol: str,
    interval: str,
    first: int,
    last: int,
    *,
    page_limit: int,
    market: Market = Market.SPOT,
) -> tuple[StreamPlan, dict[str, Archive]]:
    """(the stream's pages in open-time order, the archive serving each archive page's key);
    futures archives come from data/futures/um|cm (`klinelake.core.vision.Archive.path`)."""
    archives, rest = cover(symbol, interval, first, last, market)
    keyed = {archive_page(a).key: a for a in archives}
    pages = [archive_page(a) for a in archives]
    pages += plan_ranges(symbol, interval, rest, page_limit, market)
    pages.sort(key=lambda p: p.start)
    return StreamPlan(symbol, interval, first, last, tuple(pages), market), keyed


class VisionFetcher:
    """Fetches a page: from its archive if it is one of `archives`, else over REST."""

    def __init__(
        self,
        client: VisionClient,
        rest: BinanceRest,
        archives: dict[str, Archive],
        *,
        page_limit: int,
    ) -> None:
        self.client = client
        self.rest = rest
        self.archives = archives
        self.page_limit = page_limit

    async def fetch(self, page: Page) -> Sequence[Kline]:
        archive = self.archives.get(page.key)
        if archive is not None:
            rows = await self.client.fetch(archive)
            if rows is not None:
                return [r for r in rows if page.start <= r.open_time <= page.end]
            edges = [(page.start, page.end)]
            return await self.rest_pages(
                plan_ranges(page.symbol, page.interval, edges, self.page_limit, page.market)
            )
        return await self.rest_pages([page])

    async def rest_pages(self, pages: Sequence[Page]) -> Sequence[Kline]:
        """The pages' rows (pages of one stream, in order), their lines as the parser made them."""
        if not pages:
            return []
        parts: list[Sequence[Kline]] = []
        for p in pages:  # the core's pager: each market's paging rule (COIN-M's window)
            pager = fetch_range(
                self.rest, p.symbol, p.interval, p.start, p.end, limit=self.page_limit,
                market=p.market,
            )  # fmt: skip
            parts.extend([part async for part in pager])
        first = pages[0]
        return StreamRows.joined(first.symbol, first.interval, first.market, parts)
