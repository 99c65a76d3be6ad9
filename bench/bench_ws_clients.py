"""WebSocket clients side by side (run by hand): client CPU per received frame.

    python bench/bench_ws_clients.py [--conns 4] [--rate 500] [--bursts 1,8,125] [--seconds 10]
                                     [--clients websockets,aiohttp,picows] [--rounds 2]

A server process (picows, pre-encoded frames: its cost is one socket write per burst) sends each
of `--conns` connections `--rate` frames/s of a real 377-byte combined-stream forming frame, in
bursts of B frames written at once (B = 1: one frame per write, spread evenly, connections
staggered: one event-loop wake-up per frame at the client; B = 125: the simulator's 250 ms grid at
1,000 streams per connection). Each client runs in its own process, one after another against the
same server, interleaved over `--rounds`; it measures its own CPU (`time.process_time`) over a
window after a warm-up and divides by the frames it received. The client does nothing with a
frame but take its bytes and count it: what is measured is the receive path alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FRAME = (
    b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1617566591776,"s":"BTCUSDT","k":{'
    b'"t":1617566580000,"T":1617566639999,"s":"BTCUSDT","i":"1m","f":346711017,"L":346711087,'
    b'"o":"2063.88000000","c":"2064.73000000","h":"2065.00000000","l":"2063.88000000",'
    b'"v":"70.86425000","n":71,"x":false,"q":"146321.71560700","V":"46.98201000",'
    b'"Q":"97009.77617410","B":"0"}}}'
)


def ws_text_frame(payload: bytes) -> bytes:
    """A server-to-client (unmasked) text frame, RFC 6455 §5.2."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


# --- server -------------------------------------------------------------------------------


async def serve(port: int, rate: float, burst: int, conns: int) -> None:
    import picows

    batch = ws_text_frame(FRAME) * burst
    period = burst / rate
    loop = asyncio.get_running_loop()
    live: list[asyncio.Transport] = []

    class Listener(picows.WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            t = transport.underlying_transport
            live.append(t)
            phase = (len(live) - 1) % conns / conns  # stagger: one wake-up per write

            def tick(at: float) -> None:
                if t.is_closing():
                    return
                t.write(batch)
                loop.call_at(at + period, tick, at + period)

            start = loop.time() + phase * period
            loop.call_at(start, tick, start)

    server = await picows.ws_create_server(lambda _req: Listener(), "127.0.0.1", port)
    await server.serve_forever()


# --- clients: each returns after `seconds` of measurement: (cpu_s, frames) -----------------


class Meter:
    def __init__(self, warm: float, seconds: float) -> None:
        self.frames = 0
        self.warm = warm
        self.seconds = seconds


async def run_websockets(url: str, conns: int, m: Meter) -> None:
    from websockets.asyncio.client import connect

    async def one() -> None:
        async with connect(url, ping_interval=None, max_queue=64) as ws:
            while True:
                frame = await ws.recv(decode=False)
                assert isinstance(frame, bytes)
                m.frames += 1

    await _run(m, [one() for _ in range(conns)])


async def run_aiohttp(url: str, conns: int, m: Meter) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with session.ws_connect(url, autoping=True) as ws:
                while True:
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return
                    m.frames += 1

        await _run(m, [one() for _ in range(conns)])


async def run_picows(url: str, conns: int, m: Meter) -> None:
    import picows

    class Listener(picows.WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.TEXT:
                frame.get_payload_as_bytes()
                m.frames += 1

    transports = [(await picows.ws_connect(Listener, url))[0] for _ in range(conns)]
    await _run(m, [t.wait_disconnected() for t in transports])


async def _run(m: Meter, readers: list) -> None:  # type: ignore[type-arg]
    tasks = [asyncio.ensure_future(r) for r in readers]
    await asyncio.sleep(m.warm)  # the warm-up, then the window: a benchmark's fixed durations
    cpu0, n0 = time.process_time(), m.frames
    await asyncio.sleep(m.seconds)
    cpu, n = time.process_time() - cpu0, m.frames - n0
    print(f"{cpu:.6f} {n}", flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_picows_tick(url: str, conns: int, m: Meter, tick_s: float = 0.05) -> None:
    """picows, each socket read at most once per `tick_s`: after a read the transport stops
    reading until the next tick, so the frames that arrived meanwhile come in one read."""
    import picows

    paused: list[asyncio.Transport] = []

    class Listener(picows.WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.TEXT:
                frame.get_payload_as_bytes()
                m.frames += 1
            if frame.last_in_buffer:
                t = transport.underlying_transport
                t.pause_reading()
                paused.append(t)

    loop = asyncio.get_running_loop()

    def tick() -> None:
        for t in paused:
            t.resume_reading()
        paused.clear()
        loop.call_later(tick_s, tick)

    tick()
    transports = [(await picows.ws_connect(Listener, url))[0] for _ in range(conns)]
    await _run(m, [t.wait_disconnected() for t in transports])


CLIENTS = {"websockets": run_websockets, "aiohttp": run_aiohttp, "picows": run_picows,
           "picows-tick50": run_picows_tick}  # fmt: skip


def client_main(name: str, url: str, conns: int, warm: float, seconds: float) -> None:
    asyncio.run(CLIENTS[name](url, conns, Meter(warm, seconds)))


# --- coordinator --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a port with a deadline
    raise TimeoutError(f"server on {port} not listening after {deadline_s} s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--rate", type=float, default=500.0, help="frames/s per connection")
    p.add_argument("--bursts", default="1,8,125")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warm", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", default="websockets,aiohttp,picows")
    p.add_argument("--serve", nargs=4, metavar=("PORT", "RATE", "BURST", "CONNS"))
    p.add_argument("--client", nargs=2, metavar=("NAME", "URL"))
    a = p.parse_args()
    if a.serve:
        port, rate, burst, conns = a.serve
        asyncio.run(serve(int(port), float(rate), int(burst), int(conns)))
        return
    if a.client:
        client_main(a.client[0], a.client[1], a.conns, a.warm, a.seconds)
        return
    names = a.clients.split(",")
    print(f"{a.conns} connections x {a.rate:g} frames/s, {len(FRAME)}-byte frames, "
          f"{a.seconds:g} s windows, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    for burst in (int(b) for b in a.bursts.split(",")):
        port = free_port()
        cmd = [sys.executable, __file__, "--serve", str(port), str(a.rate), str(burst),
               str(a.conns)]  # fmt: skip
        server = subprocess.Popen(cmd)
        try:
            wait_listening(port, 20)
            results: dict[str, list[float]] = {n: [] for n in names}
            rates: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(a.rounds):
                for name in names:
                    out = subprocess.run(
                        [sys.executable, __file__, "--client", name, f"ws://127.0.0.1:{port}/",
                         "--conns", str(a.conns), "--seconds", str(a.seconds),
                         "--warm", str(a.warm)],
                        capture_output=True, text=True, timeout=a.seconds + a.warm + 60,
                        check=True,
                    )  # fmt: skip
                    cpu, frames = out.stdout.split()
                    results[name].append(1e6 * float(cpu) / int(frames))
                    rates[name].append(int(frames) / a.seconds)
            for name in names:
                us = ", ".join(f"{v:.1f}" for v in results[name])
                print(f"burst {burst:4d}: {name:10s} {us} us/frame "
                      f"({sum(rates[name]) / len(rates[name]):,.0f} frames/s received); "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
