"""Health for systemd and operators: `state/health.json` rewritten atomically every few seconds,
an optional HTTP endpoint on 127.0.0.1 serving the same JSON, and sd_notify (READY=1,
WATCHDOG=1) when NOTIFY_SOCKET is set. The watchdog ping comes from the event loop, so a frozen
loop stops it and systemd restarts the service."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any, Literal

import orjson

# `state` in the health JSON: starting (checks running), running, stopping (after SIGTERM), or
# blocked: Binance refuses this client (451/403), exchangeInfo keeps failing, or the
# configuration names a symbol Binance does not list; `reason` then holds the one-line error.
HealthState = Literal["starting", "running", "stopping", "blocked"]


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sd_notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send `message` to systemd's notify socket, if any (sd_notify(3), no dependency)."""
    addr = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


async def serve_http(port: int, snapshot: Any) -> asyncio.Server:
    """A minimal HTTP/1.0 endpoint: any GET answers the current health JSON."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = orjson.dumps(snapshot())
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)
