"""The HTTP session our Binance clients share the shape of (aiohttp): built inside the running
loop, the system resolver, the environment's proxy resolved once.

aiohttp rather than httpx: a 1000-row klines page costs a quarter of the client CPU
(docs/BENCHMARKS.md, "Backfill HTTP client: aiohttp").
"""

from __future__ import annotations

import urllib.parse
import urllib.request

import aiohttp

KEEPALIVE_S = 15.0  # an idle pooled connection is closed after this (aiohttp's default)


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`/`HTTP_PROXY`, `NO_PROXY`
    honoured), as httpx used it. Resolved once per client: aiohttp's `trust_env` would look it
    (and netrc) up on every request, ~0.5 ms each, as much CPU as the rest of a page's HTTP."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def new_session(
    timeout: aiohttp.ClientTimeout, *, limit: int, headers: dict[str, str] | None = None
) -> aiohttp.ClientSession:
    """A session with a pool of `limit` kept-alive connections; call it inside the running
    loop (aiohttp binds the session to it)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=limit,
            keepalive_timeout=KEEPALIVE_S,
            # the system's getaddrinfo in a thread, as httpx did (/etc/hosts, nsswitch), whether
            # or not aiodns happens to be installed (aiohttp would pick it)
            resolver=aiohttp.ThreadedResolver(),
        ),
        timeout=timeout,
        headers=headers,
    )
