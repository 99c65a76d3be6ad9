"""Downloading data.binance.vision archives (httpx, asyncio): the adapter over
`klinelake.core.vision`.

`fetch(archive)` GETs the zip and its `.CHECKSUM`, verifies and parses them (`read_archive`), and
returns the rows, or None when the zip is a 404 (not published yet, or no klines that period).
Transport errors, 429 and 5xx are retried with backoff (tenacity) and then raise
`TransientError`; any other status raises `ArchiveError`; httpx exceptions stop here.
"""

from __future__ import annotations

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from klinelake.core.errors import TransientError
from klinelake.core.row import Kline
from klinelake.core.vision import Archive, ArchiveError, read_archive


class VisionClient:
    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=120, transport=transport)
        self.fetched = 0
        self.missing = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    def url(self, archive: Archive) -> str:
        return f"{self.base_url}/{archive.path}"

    async def fetch(self, archive: Archive) -> list[Kline] | None:
        url = self.url(archive)
        zipped = await self._get(url)
        if zipped is None:
            self.missing += 1
            return None
        check = await self._get(url + ".CHECKSUM")
        if check is None:
            raise ArchiveError(f"{url}.CHECKSUM: 404 while the zip exists; cannot verify it")
        rows = read_archive(zipped.content, check.text, archive, source=url)
        self.fetched += 1
        return rows

    @retry(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(5),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    async def _get(self, url: str) -> httpx.Response | None:
        """The response, None on 404; transport errors, 429 and 5xx are retried (above)."""
        try:
            r = await self._client.get(url)
        except httpx.TransportError as exc:
            raise TransientError(f"{url}: {exc!r}") from exc
        if r.status_code == 404:
            return None
        if r.status_code >= 500 or r.status_code == 429:
            raise TransientError(f"{url}: HTTP {r.status_code}")
        if r.status_code != 200:
            raise ArchiveError(f"{url}: HTTP {r.status_code}")
        return r
