"""The streamer's WebSocket client (streamer/ws_client.py) does what picows leaves to its user:
fragmented messages reassembled, every message delivered in order across paused reads, pings
answered, the peer's CLOSE code and reason reported (and echoed), our own close completed, and
a 451 at the handshake turned into `Blocked`. Against a picows server in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import picows
import pytest

from klinelake.binance.rest import Blocked
from streamer.ws_client import CloseInfo, WsClient, WsOpenFailed

BURST_PACING_S = 0.01  # the spacing under test, not synchronisation


@dataclass
class Server:
    url: str
    connected: asyncio.Queue[picows.WSTransport] = field(default_factory=asyncio.Queue)
    pongs: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    texts: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    closes: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    peers: list[picows.WSTransport] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv_state: list[Server] = []

    class Listener(picows.WSListener):
        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            srv_state[0].connected.put_nowait(transport)
            srv_state[0].peers.append(transport)

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            s = srv_state[0]
            if frame.msg_type == picows.WSMsgType.PONG:
                s.pongs.put_nowait(frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.TEXT:
                s.texts.put_nowait(frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.CLOSE:
                s.closes.put_nowait(int.from_bytes(frame.get_payload_as_bytes()[:2], "big"))
                transport.send_close(picows.WSCloseCode.OK)
                transport.disconnect()

    def route(request: picows.WSUpgradeRequest) -> picows.WSListener | picows.WSUpgradeResponse:
        if request.path.startswith(b"/blocked"):
            return picows.WSUpgradeResponseWithListener(
                picows.WSUpgradeResponse.create_error_response(451, b"restricted"), None
            )
        return Listener()

    srv = await picows.ws_create_server(route, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv_state.append(Server(f"ws://127.0.0.1:{port}/"))
    yield srv_state[0]
    for peer in srv_state[0].peers:  # a failed test leaves its connection open
        peer.disconnect(graceful=False)
    srv.close()
    await srv.wait_closed()


@dataclass
class Received:
    expect: int = 0
    messages: list[bytes] = field(default_factory=list)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, message: bytes) -> None:
        self.messages.append(message)
        if len(self.messages) >= self.expect:
            self.all_in.set()


def collecting(expect: int = 0) -> tuple[WsClient, Received, asyncio.Future[CloseInfo]]:
    got = Received(expect)
    closed: asyncio.Future[CloseInfo] = asyncio.get_running_loop().create_future()
    client = WsClient(got, closed.set_result, read_tick_s=0.02)
    return client, got, closed


async def test_messages_in_order_fragments_pings_and_peer_close(server: Server) -> None:
    client, got, closed = collecting(expect=20 * 51)
    await client.connect(server.url, 5)
    peer = await asyncio.wait_for(server.connected.get(), 5)
    sent: list[bytes] = []
    for burst in range(20):  # bursts between ticks: reads are paused and resumed many times
        for i in range(50):
            msg = f'{{"burst":{burst},"i":{i}}}'.encode()
            peer.send(picows.WSMsgType.TEXT, msg)
            sent.append(msg)
        # a message in three fragments (text, continuation, continuation)
        whole = b'{"fragmented":' + str(burst).encode() + b',"pad":"' + b"x" * 300 + b'"}'
        peer.send(picows.WSMsgType.TEXT, whole[:10], fin=False)
        peer.send(picows.WSMsgType.CONTINUATION, whole[10:200], fin=False)
        peer.send(picows.WSMsgType.CONTINUATION, whole[200:], fin=True)
        sent.append(whole)
        peer.send_ping(b"ping-%d" % burst)
        await asyncio.sleep(BURST_PACING_S)  # bursts land in different read ticks (not a wait)
    await asyncio.wait_for(got.all_in.wait(), 10)
    assert got.messages == sent
    pongs = [await asyncio.wait_for(server.pongs.get(), 5) for _ in range(20)]
    assert pongs == [b"ping-%d" % i for i in range(20)]
    peer.send_close(picows.WSCloseCode.POLICY_VIOLATION, b"Too many requests")
    info = await asyncio.wait_for(closed, 5)
    assert info == CloseInfo(1008, "Too many requests", by_us=False)


async def test_our_close_is_a_handshake(server: Server) -> None:
    client, _, closed = collecting()
    await client.connect(server.url, 5)
    request = '{"method":"LIST_SUBSCRIPTIONS","id":1}'
    await client.send(request)
    assert await asyncio.wait_for(server.texts.get(), 5) == request.encode()
    await client.close()
    assert await asyncio.wait_for(server.closes.get(), 5) == 1000
    assert (await asyncio.wait_for(closed, 5)).by_us
    with pytest.raises(Exception, match="closed"):
        await client.send("{}")


async def test_handshake_refusals(server: Server) -> None:
    client, _, _ = collecting()
    with pytest.raises(Blocked, match="451"):
        await client.connect(server.url + "blocked", 5)
    with pytest.raises(WsOpenFailed):
        await client.connect("ws://127.0.0.1:9/", 5)  # nothing listens on the discard port
