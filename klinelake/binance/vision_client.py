"""Downloading data.binance.vision archives (aiohttp, asyncio): the adapter over
`klinelake.core.vision`.

`fetch(archive)` GETs the zip and its `.CHECKSUM`, verifies and parses them (`read_archive`), and
returns the rows, or None when the zip is a 404 (not published yet, or no klines that period).
Transport errors, 429 and 5xx are retried with backoff (tenacity) and then raise
`TransientError`; any other status raises `ArchiveError`; aiohttp exceptions stop here.
"""

from __future__ import annotations

import aiohttp
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from klinelake.binance.http_session import env_proxy, new_session
from klinelake.core.errors import TransientError
from klinelake.core.row import Kline
from klinelake.core.vision import Archive, ArchiveError, read_archive

# Per socket operation, as httpx's timeout was (a slow archive download is not cut short).
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=120, sock_read=120)


class VisionClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._client: aiohttp.ClientSession | None = None  # built in the running loop
        self._proxy = env_proxy(self.base_url)
        self.fetched = 0
        self.missing = 0

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

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
        text = check.decode("utf-8", "replace")  # not UTF-8: read_archive says what is wrong
        rows = read_archive(zipped, text, archive, source=url)
        self.fetched += 1
        return rows

    @retry(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(5),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    async def _get(self, url: str) -> bytes | None:
        """The body, None on 404; network errors, timeouts, 429 and 5xx are retried (above)."""
        if self._client is None:
            self._client = new_session(_TIMEOUT, limit=16)
        try:
            async with self._client.get(url, proxy=self._proxy) as r:
                status = r.status
                body = await r.read() if status == 200 else b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"{url}: {exc!r}") from exc
        if status == 404:
            return None
        if status >= 500 or status == 429:
            raise TransientError(f"{url}: HTTP {status}")
        if status != 200:
            raise ArchiveError(f"{url}: HTTP {status}")
        return body
