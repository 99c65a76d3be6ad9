"""A connection closed while its reader waits behind a slow ingest (rotation, reconnect,
shutdown) keeps the closed klines it has read: they go to the spool, not to REST repair.

Against a picows server in this process that answers the SUBSCRIBE and then sends N closed
klines at once; the ingest takes the first and never returns (its queue is full)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import picows
import pytest

from binance_sim.market import synthetic_kline
from binance_sim.ws import kline_event
from klinelake.core.intervals import MINUTE
from klinelake.core.row import Kline
from streamer.clock import ServerClock
from streamer.connection import Connection, StreamRef

T0 = 1_704_067_200_000
N = 20
REF = StreamRef("aaausdc@kline_1m", "AAAUSDC@1m", "1m")


@dataclass
class Server:
    url: str = ""
    close_seen: asyncio.Event = field(default_factory=asyncio.Event)  # our CLOSE reached it


class Watched(Connection):
    """A connection that says when it has read the reply and the N klines."""

    all_read: asyncio.Event

    def _on_frame(self, frame: bytes) -> None:
        super()._on_frame(frame)
        if self.frames_received >= N + 1:
            self.all_read.set()


@pytest.fixture(params=["echoes the close", "never echoes the close"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    peers: list[picows.WSTransport] = []
    state = Server()
    echoes_close = request.param == "echoes the close"

    class Listener(picows.WSListener):
        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            peers.append(transport)

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.TEXT:  # the SUBSCRIBE
                request = orjson.loads(frame.get_payload_as_bytes())
                reply = {"result": None, "id": request["id"]}
                transport.send(picows.WSMsgType.TEXT, orjson.dumps(reply))
                for i in range(N):
                    k = synthetic_kline(0, "AAAUSDC", "1m", T0 + i * MINUTE)
                    event = kline_event(k, True, k.close_time + 1, micros=False)
                    transport.send(
                        picows.WSMsgType.TEXT, orjson.dumps({"stream": REF.name, "data": event})
                    )
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                state.close_seen.set()
                if echoes_close:
                    transport.send_close(picows.WSCloseCode.OK)
                    transport.disconnect()

    srv = await picows.ws_create_server(lambda _: Listener(), "127.0.0.1", 0)
    state.url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    yield state
    for peer in peers:
        peer.disconnect(graceful=False)
    srv.close()
    await srv.wait_closed()


async def _connected_behind_a_full_ingest(url: str, kept: list[tuple[str, Kline]]) -> Connection:
    async def full_ingest(sid: str, k: Kline) -> None:
        await asyncio.Event().wait()  # the ingest queue is full: never returns

    conn = Watched(
        "t.1", url, [REF], full_ingest, ServerClock(), stall_grace_ms=60_000,
        keep_leftovers=kept.extend,
    )  # fmt: skip
    conn.all_read = asyncio.Event()
    await conn.open()
    await asyncio.wait_for(conn.all_read.wait(), 10)
    return conn


def _all_of_them(kept: list[tuple[str, Kline]]) -> None:
    # every one, in order: the one inside the ingest when the close came, then the queued ones
    assert [(sid, k.open_time) for sid, k in kept] == [(REF.sid, T0 + i * MINUTE) for i in range(N)]
    assert [k for _, k in kept] == [synthetic_kline(0, "AAAUSDC", "1m", T0 + i * MINUTE)
                                    for i in range(N)]  # fmt: skip


async def test_a_shutdown_cancelling_the_close_still_keeps_them(server: Server) -> None:
    """SIGTERM while a slot closes a connection (a reconnect, a rotation): the slot task is
    cancelled inside the close, possibly while the peer is slow to echo it."""
    kept: list[tuple[str, Kline]] = []
    conn = await _connected_behind_a_full_ingest(server.url, kept)
    closing = asyncio.create_task(conn.close())
    await asyncio.wait_for(server.close_seen.wait(), 10)  # the close is under way
    closing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closing
    await conn.close()  # the slot's `finally`: a no-op by then
    assert conn.read_task is not None and conn.read_task.done()
    _all_of_them(kept)


async def test_closed_klines_read_but_not_handed_over_are_kept_on_close(server: Server) -> None:
    kept: list[tuple[str, Kline]] = []
    conn = await _connected_behind_a_full_ingest(server.url, kept)
    await conn.close()
    _all_of_them(kept)
