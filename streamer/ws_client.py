"""The streamer's WebSocket client: picows underneath, frames handed to a callback, reads batched.

Why not a `recv()` loop (websockets, aiohttp): at Binance's cadence (a forming frame every 2 s
per stream, ~14,000 frames/s for the whole spot market) the CPU per frame is mostly the
event-loop wake-up and the Future/Task hand-off of each `recv()`, not the frame itself
(docs/BENCHMARKS.md, "Streamer hot loop: picows"). picows parses frames in C and calls
`on_frame` synchronously from `data_received`; and a socket is read at most once per
`read_tick_s` (after a read the transport stops reading until the next tick on a shared grid),
so the frames that arrived meanwhile come in one read, however Binance spreads them. The cost:
a frame waits up to `read_tick_s` (50 ms) before it is handled, and so does the pong to a ping
(Binance waits 1 min for it on spot, 10 min on futures: binance-spot-api.md §3).

What picows leaves to its user and this module does: echo the peer's CLOSE and disconnect,
reassemble fragmented messages, map a 451/403 handshake to `Blocked`, bound the whole opening
(TCP, TLS, HTTP upgrade) by one timeout, and stop reading while the consumer is behind
(`can_read`), as websockets' `max_queue` did.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import picows

from klinelake.binance.rest import BLOCKED_STATUSES, Blocked

# picows logs every connection and handshake at INFO; the streamer logs its own "connected"
logging.getLogger("picows.streamer.ws").setLevel(logging.WARNING)

READ_TICK_S = 0.05
MAX_MESSAGE = 1 << 20  # bytes: a kline frame is ~380; a larger message is not Binance's


class WsOpenFailed(Exception):
    """The WebSocket could not be opened (retry with backoff)."""


class WsClosed(Exception):
    """The connection is closed: nothing can be sent on it any more."""


@dataclass(frozen=True, slots=True)
class CloseInfo:
    """How a connection ended: the peer's CLOSE code and reason (None: no CLOSE frame, the
    socket dropped), and whether we started the closing handshake."""

    code: int | None
    reason: str
    by_us: bool


class _Listener(picows.WSListener):
    def __init__(self, client: WsClient) -> None:
        self.client = client
        self.fragments: list[bytes] = []

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.client._transport = transport  # before any frame: the reads can be paused at once

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        client = self.client
        kind = frame.msg_type
        if kind is picows.WSMsgType.TEXT or kind is picows.WSMsgType.BINARY:
            if frame.fin:
                client.on_frame(frame.get_payload_as_bytes())
            else:
                self.fragments = [frame.get_payload_as_bytes()]
        elif kind is picows.WSMsgType.CONTINUATION:
            self.fragments.append(frame.get_payload_as_bytes())
            if sum(map(len, self.fragments)) > MAX_MESSAGE:
                transport.send_close(picows.WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
            elif frame.fin:
                message, self.fragments = b"".join(self.fragments), []
                client.on_frame(message)
        elif kind is picows.WSMsgType.CLOSE:
            payload = frame.get_payload_as_bytes()  # code (2 bytes, big-endian) + reason
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            client.peer_close = (code, payload[2:].decode("utf-8", "replace"))
            transport.send_close(_echo_code(code))  # echo, then the TCP close is ours
            transport.disconnect()
        # PING: answered by picows (enable_auto_pong); PONG: we send no pings.
        if frame.last_in_buffer:
            client.pause_until_tick()

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        self.client.on_disconnected()


def _echo_code(code: int | None) -> picows.WSCloseCode:
    try:
        return picows.WSCloseCode(code) if code is not None else picows.WSCloseCode.OK
    except ValueError:  # a code picows has no name for (3000-4999): echo a plain 1000
        return picows.WSCloseCode.OK


class WsClient:
    """One client connection. `on_frame(bytes)` gets every text or binary message, in order;
    `on_close(info)` once, when the connection is gone (whoever closed it)."""

    def __init__(
        self,
        on_frame: Callable[[bytes], None],
        on_close: Callable[[CloseInfo], None],
        *,
        can_read: Callable[[], bool] = lambda: True,
        read_tick_s: float = READ_TICK_S,
    ) -> None:
        self.on_frame = on_frame
        self._on_close = on_close
        self.can_read = can_read
        self.read_tick_s = read_tick_s
        self.peer_close: tuple[int | None, str] | None = None
        self.closed = False
        self._by_us = False
        self._transport: picows.WSTransport | None = None
        self._paused = False
        self._loop = asyncio.get_running_loop()

    async def connect(self, url: str, open_timeout_s: float) -> None:
        """Open the WebSocket; 451/403 at the handshake raise `Blocked` (configuration, never
        retried), any other failure `WsOpenFailed`."""
        try:
            transport, _ = await asyncio.wait_for(
                picows.ws_connect(
                    lambda: _Listener(self),
                    url,
                    websocket_handshake_timeout=open_timeout_s,
                    max_frame_size=MAX_MESSAGE,
                    enable_auto_pong=True,  # Binance pings (20 s spot, 3 min futures)
                    logger_name="streamer.ws",
                ),
                open_timeout_s,
            )
        except picows.WSInvalidStatusError as exc:
            status = exc.response.status if exc.response is not None else None
            if status is not None and status in BLOCKED_STATUSES:
                raise Blocked(int(status), f"WS handshake {url}") from exc
            raise WsOpenFailed(f"connect {url}: {exc!r}") from exc
        except (OSError, TimeoutError, picows.WSError, ValueError) as exc:
            raise WsOpenFailed(f"connect {url}: {exc!r}") from exc
        self._transport = transport

    async def send(self, text: str) -> None:
        """Send a text frame (picows writes it at once; async for the callers' sake)."""
        if self.closed or self._transport is None or self._transport.is_close_frame_sent:
            raise WsClosed("send on a closed connection")
        self._transport.send(picows.WSMsgType.TEXT, text.encode())

    async def close(self, timeout_s: float = 2.0) -> None:
        """Start the closing handshake (1000) and wait for the peer's echo, then drop it."""
        t = self._transport
        if t is None or self.closed:
            return
        self._by_us = True
        t.send_close(picows.WSCloseCode.OK)
        self._resume()  # the echo must be read even if reading is paused
        try:
            await asyncio.wait_for(asyncio.shield(t.wait_disconnected()), timeout_s)
        except TimeoutError:
            t.disconnect(graceful=False)
        except (OSError, picows.WSError):
            pass  # it ended on an error rather than the echo: gone all the same

    # --- reading on a grid ----------------------------------------------------------------

    def pause_until_tick(self) -> None:
        t = self._transport
        if self._paused or t is None or self.closed or self._by_us:
            return
        t.underlying_transport.pause_reading()
        self._paused = True
        # on a shared grid: every connection paused in this interval resumes in the same loop
        # iteration, so one wake-up reads them all
        tick = self.read_tick_s
        self._loop.call_at(math.ceil(self._loop.time() / tick + 1e-9) * tick, self._tick)

    def _tick(self) -> None:
        if self.closed or not self._paused:
            return
        if not self.can_read():  # the consumer is behind: leave the bytes in the socket
            self._loop.call_later(self.read_tick_s, self._tick)
            return
        self._resume()

    def _resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.underlying_transport.resume_reading()

    def on_disconnected(self) -> None:
        if self.closed:
            return
        self.closed = True
        code, reason = self.peer_close if self.peer_close is not None else (None, "")
        self._on_close(CloseInfo(code, reason, self._by_us))
