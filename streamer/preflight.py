"""`python -m streamer --check`: prove, from this machine, that Binance serves the configured
streams before a deployment says "done" (infra/deploy_vm.sh runs it on the VM).

Two questions, each bounded by `timeout_s`:
1. does exchangeInfo answer 200 and list every symbol (`klinelake.core.publish.check_listed`, per
   market: spot `/api/v3/exchangeInfo?symbols=[...]`, futures `/fapi|/dapi/v1/exchangeInfo`)?
   A selector (`um:quote=USDT`) is resolved from that answer.
2. does one kline frame arrive over the WS for every configured stream (Binance pushes the
   forming kline every 2 s on spot, 250 ms on futures: binance-spot-api.md §2,
   binance-futures-api.md §2)? USD-M klines are on the `/market` route.

The answer is one line and an exit code: 0 OK, EXIT_BAD_CONFIG (2) a symbol Binance does not list,
EXIT_BLOCKED (4) a 451/403 from REST or the WS handshake, or no answer in time.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

from klinelake.binance.rest import BinanceRest, Blocked, NoAnswer
from klinelake.config import EXIT_BAD_CONFIG, EXIT_BLOCKED
from klinelake.core.binance_ws import KlineEvent, parse_ws_frame
from klinelake.core.errors import InvalidData
from klinelake.core.exchange_info import parse_exchange_info
from klinelake.core.markets import spec, stream_key
from klinelake.core.publish import UnlistedSymbols, check_listed
from streamer.config import Settings, StreamSpec
from streamer.shards import shard
from streamer.ws_client import CloseInfo, WsClient, WsClosed, WsOpenFailed

URL_STREAMS = 200  # streams per check connection, subscribed in the URL (keeps it short)


async def check_rest(settings: Settings, timeout_s: float) -> tuple[StreamSpec, ...]:
    """The streams to check: the configured ones (every symbol listed), or a selector's."""
    market = settings.market
    async with BinanceRest(
        settings.rest_url, max_attempts=2, timeout_s=timeout_s, market=market
    ) as rest:
        selector = settings.symbol_set
        if selector is not None and selector.is_selector:
            info = await asyncio.wait_for(rest.exchange_info(None), timeout_s)
            chosen = selector.resolve(parse_exchange_info(info, market))
            return tuple(StreamSpec(s, iv, market) for s in chosen for iv in settings.intervals)
        symbols = sorted({s.symbol for s in settings.streams})
        await asyncio.wait_for(check_listed(rest, symbols, market), timeout_s * 2)
        return settings.streams


async def check_ws(
    settings: Settings, timeout_s: float, streams: tuple[StreamSpec, ...] | None = None
) -> None:
    """Raise TimeoutError naming the silent streams unless each sends a frame in time."""
    deadline = time.monotonic() + timeout_s
    market = settings.market
    base = settings.ws_url.rstrip("/") + spec(market).ws_route
    for group in shard(list(settings.streams if streams is None else streams), URL_STREAMS):
        waiting: dict[str, StreamSpec] = {spec.sid: spec for spec in group}
        names = "/".join(spec.ws_name for spec in group)
        url = f"{base}/stream?streams={quote(names, safe='/@_')}"
        frames: asyncio.Queue[bytes | CloseInfo] = asyncio.Queue()
        ws = WsClient(frames.put_nowait, frames.put_nowait)
        await ws.connect(url, max(1.0, deadline - time.monotonic()))
        try:
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no WS frame within {timeout_s:g} s for {sorted(waiting)}")
                frame = await asyncio.wait_for(frames.get(), left)
                if isinstance(frame, CloseInfo):
                    raise WsClosed(f"closed by the server ({frame.code} {frame.reason!r})")
                try:
                    msg = parse_ws_frame(frame, market)
                except InvalidData:
                    continue
                if isinstance(msg, KlineEvent):
                    waiting.pop(stream_key(market, msg.kline.symbol, msg.kline.interval), None)
        finally:
            await ws.close()


async def preflight(settings: Settings, timeout_s: float = 20.0) -> tuple[int, str]:
    """(exit code, one line)."""
    try:
        streams = await check_rest(settings, timeout_s)
    except Blocked as exc:
        return EXIT_BLOCKED, str(exc)
    except UnlistedSymbols as exc:
        return EXIT_BAD_CONFIG, f"Binance does not list these symbols: {exc}"
    except Exception as exc:
        return EXIT_BLOCKED, str(NoAnswer(settings.rest_url, f"{timeout_s:g} s", repr(exc)))
    try:
        if not streams:
            return EXIT_BAD_CONFIG, "the selector matches no symbol listed now"
        await check_ws(settings, timeout_s, streams)
    except Blocked as exc:
        return EXIT_BLOCKED, str(exc)
    except (WsOpenFailed, WsClosed, TimeoutError, OSError) as exc:
        return EXIT_BLOCKED, f"blocked: WS {settings.ws_url}: {exc}"[:400]
    return 0, (
        f"ok: exchangeInfo at {settings.rest_url} lists every symbol; a kline frame arrived from "
        f"{settings.ws_url} for each of {len(streams)} stream(s)"
    )
