"""A real HTTP server on 127.0.0.1 (a free port) answering with a plain function, for clients
under test: requests go over sockets, through the client's own connection pool and parser.

    def handler(request: StubRequest) -> Reply:          # or `async def`
        return Reply(200, b"[]", {"x-mbx-used-weight-1m": "2"})

    async with http_stub(handler) as base_url:
        ...

A handler may raise `Drop` to close the connection without an answer (the client sees a network
error), or wait on something that never comes to let the client time out (the server cancels it
when the client goes away).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class StubRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Drop(Exception):
    """Raised by a handler: the connection is closed without an answer."""


Handler = Callable[[StubRequest], Reply | Awaitable[Reply]]


@asynccontextmanager
async def http_stub(handler: Handler) -> AsyncIterator[str]:
    """Serve `handler` on 127.0.0.1 at a free port; yields the base URL (no trailing slash)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        stub = StubRequest(request.method, request.path, dict(request.query), dict(request.headers))
        try:
            answer = handler(stub)
            reply = await answer if inspect.isawaitable(answer) else answer
        except Drop:
            assert request.transport is not None
            request.transport.abort()  # no status line, no body: a reset connection
            raise web.HTTPInternalServerError() from None  # never reaches the client
        assert isinstance(reply, Reply)
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    # handler_cancellation: a handler still waiting when its client gives up is cancelled,
    # so closing the server does not wait for it.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
