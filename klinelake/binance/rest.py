"""Async client for Binance's public REST market data (klines, exchangeInfo, time).

One client per market (`market=`): spot `/api/v3`, USD-M `/fapi/v1`, COIN-M `/dapi/v1`, with
each market's paths, `limit` ceiling, weights by `limit` and COIN-M's end-anchored window from
`klinelake.core.markets` (binance-futures-api.md §6-§8).

Every request goes through a shared `WeightBudget` (klinelake.binance.weight): weight is reserved
before sending and the server's `X-MBX-USED-WEIGHT-1M` is learned from every response. Errors are
translated here, at the edge, into the project's tree (binance-spot-api.md §8, §9):

    BinanceError (klinelake.core.errors)
    ├── BinanceAPIError(status, code, msg)   4xx: our request is wrong; never retried
    │   ├── UnknownSymbol                    -1121 Invalid symbol
    │   └── BadInterval                      -1120 Invalid interval
    ├── RateLimited(retry_after_s)           429: everyone waits Retry-After, then retries
    ├── IPBanned(retry_after_s, until_ms)    418: nothing is sent until the ban ends
    ├── Blocked(status, url, detail)         451 restricted location, 403 WAF: configuration,
    │                                        never retried; its message is the operator's line
    ├── NoAnswer(url, within, last_error)    exchangeInfo never answered (callers raise it when
    │                                        their retries are spent): configuration too
    └── ServerError(status)                  5xx: outcome unknown; retried (also a TransientError)
    TransientError (klinelake.core.errors)        network failures and timeouts; retried

Bad rows raise `InvalidData` naming the field (klinelake.core.row.parse_rest_page).
Retries (5xx, network) use exponential backoff with jitter (tenacity); a 429 waits the
`Retry-After` the server asked for; a 418 is never retried and later calls raise `IPBanned`
at once, without touching the network, until the ban ends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from klinelake.binance.http_session import env_proxy, new_session
from klinelake.binance.weight import Banned, WeightBudget
from klinelake.config import (
    DEFAULT_REST_URL,
    MARKET_DATA_REST_URL,
    MARKET_DATA_WS_URL,
    REST_URL,
    WS_URL,
)
from klinelake.core.errors import BinanceError, TransientError
from klinelake.core.intervals import check_interval
from klinelake.core.markets import Market, check_market_interval, spec, window_for_page
from klinelake.core.row import Kline, parse_rest_page
from klinelake.core.symbols import validate_symbol

MAX_LIMIT = 1000
USED_WEIGHT_HEADER = "x-mbx-used-weight-1m"
_BANNED_UNTIL = re.compile(r"banned until (\d{12,16})")


class BinanceAPIError(BinanceError):
    """A 4xx answer with Binance's `{"code": ..., "msg": ...}` body: the request is wrong."""

    def __init__(self, status: int, code: int | None, msg: str) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        super().__init__(f"HTTP {status} code {code}: {msg}")


class UnknownSymbol(BinanceAPIError):
    """-1121 Invalid symbol."""


class BadInterval(BinanceAPIError):
    """-1120 Invalid interval."""


class RateLimited(BinanceError):
    """429 -1003: over the weight limit; wait `retry_after_s` or be banned."""

    def __init__(self, retry_after_s: float, msg: str = "") -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"rate limited (429), Retry-After {retry_after_s:g} s: {msg}")


class IPBanned(BinanceError):
    """418: the IP is banned until `until_ms`; no request may be sent before then."""

    def __init__(self, retry_after_s: float, until_ms: int) -> None:
        self.retry_after_s = retry_after_s
        self.until_ms = until_ms
        super().__init__(f"IP banned by Binance for {retry_after_s:g} s (until {until_ms} ms)")


BLOCKED_STATUSES = {
    451: "restricted location: Binance does not serve this machine's country or region",
    403: "forbidden by Binance's web application firewall",
}


class Blocked(BinanceError):
    """Binance refuses this client: HTTP 451 (restricted location, e.g. any US address) or 403
    (its WAF). Retrying cannot help; the message is one line saying what Binance answered, to
    which URL, and what to do."""

    def __init__(self, status: int, url: str, detail: str = "") -> None:
        self.status = status
        self.url = url
        self.detail = " ".join(detail.split())[:160]
        super().__init__(blocked_line(status, url, self.detail))


def blocked_line(status: int, url: str, detail: str = "") -> str:
    """`Binance answered HTTP 451 (...) to GET URL ["detail"]: <what to do>` on one line."""
    meaning = BLOCKED_STATUSES.get(status, "refused")
    said = f' "{detail}"' if detail else ""
    return (
        f"blocked: Binance answered HTTP {status} ({meaning}) to {url}{said}; "
        f"run from a region Binance serves (e.g. GCP asia-northeast1, VM_REGION in "
        f"infra/config.env) or switch endpoints: {REST_URL.env}={MARKET_DATA_REST_URL} "
        f"{WS_URL.env}={MARKET_DATA_WS_URL} (docs/deploy.md, 'Region and endpoints')"
    )


class NoAnswer(BinanceError):
    """exchangeInfo did not answer 200 within the caller's budget: nothing can be collected."""

    def __init__(self, url: str, within: str, last_error: str) -> None:
        self.url = url
        super().__init__(
            f"blocked: exchangeInfo at {url} did not answer within {within} (last error: "
            f"{' '.join(last_error.split())[:200]}); check {REST_URL.env} and the network, or "
            "the region (docs/deploy.md, 'Region and endpoints')"
        )


class ServerError(BinanceError, TransientError):
    """5xx: Binance's problem, and the request's outcome is unknown (never 'failed')."""

    def __init__(self, status: int, msg: str = "") -> None:
        self.status = status
        super().__init__(f"HTTP {status} from Binance: {msg[:200]}")


_CODE_ERRORS: dict[int, type[BinanceAPIError]] = {-1121: UnknownSymbol, -1120: BadInterval}


@dataclass
class RestCounters:
    requests: int = 0  # HTTP requests sent (every attempt)
    retries: int = 0  # attempts after the first (5xx, network, 429)
    rate_limited: int = 0  # 429s received
    weight_charged: int = 0  # sum of the weights of requests sent
    last_used_weight: int = 0  # the latest X-MBX-USED-WEIGHT-1M
    max_used_weight: int = 0  # the highest seen


def _retry_after_s(headers: Mapping[str, str], default: float) -> float:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return default


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")[:200]


def _error_body(body: bytes) -> tuple[int | None, str]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, _text(body)
    if isinstance(obj, dict):
        code = obj.get("code")
        return (code if isinstance(code, int) else None), str(obj.get("msg", ""))
    return None, _text(body)


# Uncompressed answers, asked for: inflating a gzipped klines page costs ~0.7 µs per row of CPU
# (docs/BENCHMARKS.md: as much as a fifth of the backfill's whole cost per row), where the
# bytes saved are free ingress on GCP. A server that compresses anyway is still understood
# (aiohttp inflates any Content-Encoding it is sent: tests/backfill/test_gzip_answers.py).
REQUEST_HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}


class BinanceRest:
    """`async with BinanceRest(url) as rest: await rest.klines("BTCUSDT", "1h", a, b)`.

    HTTP is aiohttp's client (klinelake.binance.http_session): one session with a pool of up to
    64 kept-alive connections, created inside the running loop on the first request (the client
    may be built before the loop runs); a proxy comes from the environment, as with httpx.
    `on_used_weight` is called with every `X-MBX-USED-WEIGHT-1M` value received.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_REST_URL,
        *,
        budget: WeightBudget | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        max_rate_limited: int = 10,
        on_used_weight: Callable[[int], None] | None = None,
        market: Market = Market.SPOT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.market = market
        self.spec = spec(market)
        self.budget = (
            budget if budget is not None else WeightBudget(limit=self.spec.weight_limit_1m)
        )
        self.counters = RestCounters()
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_rate_limited = max_rate_limited
        self.on_used_weight = on_used_weight
        self.timeout_s = timeout_s
        self._http: aiohttp.ClientSession | None = None
        self._proxy = env_proxy(self.base_url)

    async def __aenter__(self) -> BinanceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = new_session(
                aiohttp.ClientTimeout(total=self.timeout_s),
                limit=64,
                headers=REQUEST_HEADERS,
            )
        return self._http

    # --- endpoints --------------------------------------------------------------------------

    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int = MAX_LIMIT
    ) -> Sequence[Kline]:
        """Klines with `start_ms <= open_time <= end_ms`, at most `limit` (≤ the market's
        ceiling: 1000 spot, 1500 futures), ascending, the first from `start_ms` on.

        The still-forming kline comes back too if the range reaches it (binance-spot-api.md §6);
        callers that want closed klines only bound `end_ms` by the server's time. On COIN-M the
        server returns the newest bars of the window, so `endTime` is bounded to `limit` bars
        from `start_ms` (and 200 days): the answer still starts at `start_ms`.
        """
        validate_symbol(symbol)
        check_market_interval(self.market, check_interval(interval))
        if not 1 <= limit <= self.spec.max_limit:
            raise ValueError(f"limit must be 1..{self.spec.max_limit}, got {limit}")
        end_ms = window_for_page(self.market, start_ms, end_ms, interval, limit)
        params = {
            "symbol": symbol,
            "interval": interval,
            "startTime": str(start_ms),
            "endTime": str(end_ms),
            "limit": str(limit),
        }
        weight = self.spec.weight_for_limit(limit)
        body = await self._get(self.spec.klines_path, params, weight)
        return parse_rest_page(body, symbol, interval, self.market)

    async def exchange_info(self, symbols: list[str] | None = None) -> dict[str, Any]:
        """`GET /api/v3/exchangeInfo`, for the given symbols (one request; -1121 if any is
        unknown) or for all. Futures exchangeInfo takes no parameters (always every symbol,
        weight 1: binance-futures-api.md §7); callers filter."""
        params: dict[str, str] = {}
        if symbols:
            for s in symbols:
                validate_symbol(s)
            if not self.spec.is_futures:
                params["symbols"] = orjson.dumps(symbols).decode()
        body = await self._get(self.spec.exchange_info_path, params, self.spec.exchange_info_weight)
        info = orjson.loads(body)
        if not isinstance(info, dict):
            raise BinanceError("exchangeInfo: expected a JSON object")
        return info

    async def server_time(self) -> int:
        """`GET /api/v3/time` → `{"serverTime": 1499827319559}`."""
        body = await self._get(self.spec.time_path, {}, self.spec.time_weight)
        obj = orjson.loads(body)
        value = obj.get("serverTime") if isinstance(obj, dict) else None
        if type(value) is not int:
            raise BinanceError(f"time: unexpected body {body[:100]!r}")
        return value

    # --- plumbing ---------------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return 0.0  # the budget holds every request until Retry-After has passed
        return float(
            wait_exponential_jitter(
                initial=self.backoff_initial_s,
                max=self.backoff_max_s,
                jitter=self.backoff_initial_s,
            )(state)
        )

    async def _get(self, path: str, params: dict[str, str], weight: int) -> bytes:
        failures = 0
        rate_limited = 0

        def stop(state: RetryCallState) -> bool:
            nonlocal failures, rate_limited
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RateLimited):
                rate_limited += 1
                return rate_limited > self.max_rate_limited
            failures += 1
            return failures >= self.max_attempts

        def count_retry(state: RetryCallState) -> None:
            self.counters.retries += 1

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((TransientError, RateLimited)),
            stop=stop,
            wait=self._wait,
            before_sleep=count_retry,
            reraise=True,
        )
        body: bytes = await retrying(self._once, path, params, weight)
        return body

    async def _once(self, path: str, params: dict[str, str], weight: int) -> bytes:
        try:
            await self.budget.acquire(weight)
        except Banned as exc:
            now = self.budget.clock()
            raise IPBanned(max(0, exc.until_ms - now) / 1000, exc.until_ms) from None
        self.counters.requests += 1
        self.counters.weight_charged += weight
        try:
            url = self.base_url + path
            async with self._session().get(url, params=params, proxy=self._proxy) as response:
                status = response.status
                headers = response.headers
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self.budget.release(weight, None)
            raise TransientError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            # Cancelled mid-request: free the reservation without awaiting (counted as used).
            self.budget.ledger.on_response(self.budget.clock(), weight, None)
            raise
        used = self._used_weight(headers)
        await self.budget.release(weight, used)
        if status == 200:
            return body
        if status == 429:
            self.counters.rate_limited += 1
            retry_after = _retry_after_s(headers, 60.0)
            await self.budget.rate_limited(retry_after)
            raise RateLimited(retry_after, _error_body(body)[1])
        if status == 418:
            # Retry-After (seconds) is relative, so it does not depend on the server's clock;
            # the "IP banned until <ms>" in the message is the fallback.
            now = self.budget.clock()
            match = _BANNED_UNTIL.search(_error_body(body)[1])
            if "retry-after" in headers or not match:
                until = now + int(_retry_after_s(headers, 120.0) * 1000)
            else:
                until = int(match.group(1))
            await self.budget.banned(until)
            raise IPBanned(max(0, until - now) / 1000, until)
        if status in BLOCKED_STATUSES:
            # Binance's 451 is JSON with a "msg"; the WAF's 403 is an HTML page (not quoted).
            is_json = "json" in headers.get("content-type", "")
            detail = _error_body(body)[1] if is_json else ""
            raise Blocked(status, f"GET {self.base_url}{path}", detail)
        if status >= 500:
            raise ServerError(status, _text(body))
        code, msg = _error_body(body)
        cls = _CODE_ERRORS.get(code, BinanceAPIError) if code is not None else BinanceAPIError
        raise cls(status, code, msg)

    def _used_weight(self, headers: Mapping[str, str]) -> int | None:
        raw = headers.get(USED_WEIGHT_HEADER) or headers.get("x-mbx-used-weight")
        if raw is None:
            return None
        try:
            used = int(raw)
        except ValueError:
            return None
        self.counters.last_used_weight = used
        self.counters.max_used_weight = max(self.counters.max_used_weight, used)
        if self.on_used_weight is not None:
            self.on_used_weight(used)
        return used
