"""SIGTERM reaches the service however busy its event loop is.

asyncio's `loop.add_signal_handler` learns of a signal from a byte the C handler writes into
the loop's self-pipe, the same socket every `call_soon_threadsafe` (every `asyncio.to_thread`
completion) writes a wake-up byte into. Under load (1,000 streams sending to the lake through
threads) that socket fills, the signal's byte is dropped ("Exception ignored when trying to
write to the signal wakeup fd: BlockingIOError") and the stop request is lost: systemd then
kills the service after `TimeoutStopSec` instead of letting it drain (python/cpython#74224).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

from streamer.stop_signals import stop_on_signals

FLOOD = 200_000  # wake-ups: far more than the self-pipe's socket buffer holds


async def _stop_seen_after_flood() -> bool:
    """Block the loop while another thread floods its self-pipe, send SIGTERM to this process,
    unblock: is the stop request seen within 10 s?"""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    flooded = threading.Event()

    def flood() -> None:
        for _ in range(FLOOD):
            loop.call_soon_threadsafe(lambda: None)
        flooded.set()

    with stop_on_signals(loop, stop.set):
        flooder = threading.Thread(target=flood)
        flooder.start()
        assert flooded.wait(60)  # the loop is blocked right here: nobody drains the pipe
        flooder.join()
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.wait_for(stop.wait(), 10)
        except TimeoutError:
            return False
    return True


def test_sigterm_is_not_lost_when_the_loop_self_pipe_is_full() -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert asyncio.run(_stop_seen_after_flood())
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored on the way out


def test_the_handler_also_wakes_an_idle_loop() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        with stop_on_signals(loop, stop.set):
            t0 = time.monotonic()
            loop.call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stop.wait(), 10)
            return time.monotonic() - t0

    assert asyncio.run(main()) < 10


LEFT_BEHIND = """
import asyncio, os, signal, sys
from streamer.stop_signals import stop_on_signals
loop = asyncio.new_event_loop()
handlers = stop_on_signals(loop, lambda: None)
handlers.__enter__()  # never left: a run that raised past it
loop.close()
os.kill(os.getpid(), signal.SIGTERM)
print("still running after SIGTERM", flush=True)
sys.exit(3)
"""


def test_a_handler_left_behind_a_closed_loop_does_not_swallow_sigterm() -> None:
    """Had the service's run raised past its handlers' restore, SIGTERM must still stop the
    process (the default action), not vanish into a closed loop."""
    proc = subprocess.run(
        [sys.executable, "-c", LEFT_BEHIND], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stdout, proc.stderr)
