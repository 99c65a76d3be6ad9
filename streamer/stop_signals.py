"""SIGTERM/SIGINT → the service's stop request, reliably under load.

Written by hand because asyncio's `loop.add_signal_handler` is not reliable here: it learns of a
signal from a byte that the C-level handler writes into the loop's self-pipe, the socket that
every `call_soon_threadsafe` (so every `asyncio.to_thread` completion) also writes a wake-up byte
into. With 1,000 streams sending to the lake through threads that socket fills while the loop is
busy, the signal's byte is dropped and the stop request is lost (python/cpython#74224; uvloop
records signals in its handler for the same reason). A `signal.signal` handler runs in the main
thread between bytecodes whatever the pipe holds, and hands the request to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(
    loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None]
) -> Iterator[None]:
    """While inside: SIGTERM and SIGINT call `request_stop` on `loop`; the previous handlers
    come back on the way out. Outside the main thread (tests run services there) it does
    nothing: only the main thread may set signal handlers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        # A full self-pipe only delays the wake-up byte's write; the callback is queued.
        try:
            loop.call_soon_threadsafe(request_stop)
        except RuntimeError:  # the loop is closed (a handler left behind): the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    previous: dict[signal.Signals, object] = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)  # type: ignore[arg-type]  # what signal.signal returned
