"""Silence on a connection: a dead connection, or one silent stream (pure).

Binance sends one `x:true` frame when each kline closes, even for a quiet symbol with no trades,
and a forming-kline update about every 2 s per stream. So for every stream on a connection we
know by when its next closed kline must arrive: that kline's close time plus a grace. When that
deadline passes, the stream is *silent*, and the question is whose fault it is:

- the connection is *dead* when nothing at all (no frame of any stream) arrived on it since the
  newest close a silent stream should have delivered by now: every stream is silent. Reconnect.
- otherwise the other streams deliver and only this one is silent: an exchange halt, or a lost
  subscription. The service asks REST whether the missed klines exist (`rest_window`) and tells
  the tracker (`on_rest`): none on REST means *halted* (no reconnect; the stream is checked
  again at each later deadline and is *live* again with its next closed kline); klines on REST
  that WS never delivered mean the subscription is lost, which only a reconnect repairs.

Server time in milliseconds throughout; `grace_ms` is in server time too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from klinelake.core.intervals import align_down, next_open_time


class StreamState(StrEnum):
    LIVE = "live"  # delivering, or not yet due
    SILENT = "silent"  # a closed kline is overdue; REST will say why
    HALTED = "halted"  # REST confirmed that the overdue klines do not exist


class RestVerdict(StrEnum):
    HALTED = "halted"  # newly confirmed halted
    STILL_HALTED = "still halted"
    LOST = "lost"  # REST has klines that WS did not deliver: the subscription is broken
    UNKNOWN = "unknown"  # REST did not answer
    MOOT = "moot"  # the stream delivered meanwhile (or is unknown): nothing to do


def expected_close(now_ms: int, interval: str) -> int:
    """Close time of the kline forming at `now_ms` (its x:true frame comes after that)."""
    return next_open_time(align_down(now_ms, interval), interval) - 1


def _close(open_time: int, interval: str) -> int:
    return next_open_time(open_time, interval) - 1


@dataclass
class _Watch:
    interval: str
    due_open: int  # open_time of the next closed kline we expect
    state: StreamState = StreamState.LIVE


@dataclass(frozen=True)
class Verdict:
    dead: bool  # every stream silent: the connection is gone
    silent: tuple[str, ...]  # overdue streams (halted ones included, for their re-check)


class StallTracker:
    """Per connection: feed it closed klines (`on_closed`), any-frame activity
    (`on_frames`) and REST answers (`on_rest`); ask it for a `verdict`."""

    def __init__(self, streams: Iterable[tuple[str, str]], now_ms: int, grace_ms: int) -> None:
        self.grace_ms = grace_ms
        self._watch = {name: _Watch(iv, align_down(now_ms, iv)) for name, iv in streams}
        self.last_activity = now_ms  # server time at which a frame was last seen
        self._frames = 0
        self.resumed: list[str] = []  # halted streams that delivered again (for the log)
        # No stream's deadline is before this (a lower bound: closes only move deadlines later),
        # so `verdict` need not look at every stream at every check.
        self._no_deadline_before = 0

    def deadline(self, stream: str) -> int:
        w = self._watch[stream]
        return _close(w.due_open, w.interval) + self.grace_ms

    def state(self, stream: str) -> StreamState:
        return self._watch[stream].state

    def on_closed(self, stream: str, open_time: int, now_ms: int) -> None:
        w = self._watch.get(stream)
        if w is None:
            return
        # the next kline due is the one after this, and never one in the past
        w.due_open = max(w.due_open, next_open_time(open_time, w.interval))
        w.due_open = max(w.due_open, align_down(now_ms, w.interval))
        if w.state is StreamState.HALTED:
            self.resumed.append(stream)
        w.state = StreamState.LIVE
        self.last_activity = max(self.last_activity, now_ms)

    def add(self, stream: str, interval: str, now_ms: int) -> None:
        """A stream subscribed on the live connection (a new listing)."""
        self._watch.setdefault(stream, _Watch(interval, align_down(now_ms, interval)))
        self._no_deadline_before = 0

    def remove(self, stream: str) -> None:
        """A retired stream (delivered, delisted): nothing is expected of it any more."""
        self._watch.pop(stream, None)

    def watches(self, stream: str) -> bool:
        return stream in self._watch

    def on_frames(self, frames_received: int, now_ms: int) -> None:
        """The connection's frame counter, read at each check: any change is activity."""
        if frames_received != self._frames:
            self._frames = frames_received
            self.last_activity = max(self.last_activity, now_ms)

    def verdict(self, now_ms: int) -> Verdict:
        if now_ms <= self._no_deadline_before:
            return Verdict(False, ())
        deadlines = {s: self.deadline(s) for s in self._watch}
        silent = tuple(s for s, d in deadlines.items() if d < now_ms)
        self._no_deadline_before = min(deadlines.values(), default=now_ms)
        dead = False
        for s in silent:
            w = self._watch[s]
            if w.state is StreamState.HALTED:
                continue  # a halted stream expects nothing: no evidence either way
            # the newest close this stream should have delivered by now
            newest_due = align_down(now_ms - self.grace_ms, w.interval) - 1
            if self.last_activity <= newest_due:
                dead = True
        for s in silent:
            if self._watch[s].state is StreamState.LIVE:
                self._watch[s].state = StreamState.SILENT
        return Verdict(dead, silent)

    def rest_window(self, stream: str, now_ms: int) -> tuple[int, int]:
        """Open times [first, last] of the klines `stream` owes us by now: ask REST for them."""
        w = self._watch[stream]
        newest_due_open = align_down(align_down(now_ms - self.grace_ms, w.interval) - 1, w.interval)
        return w.due_open, max(w.due_open, newest_due_open)

    def on_rest(
        self, stream: str, window: tuple[int, int], rest_has: bool, now_ms: int
    ) -> RestVerdict:
        """REST's answer for `window` (from `rest_window`): does any kline exist there?"""
        w = self._watch.get(stream)
        if w is None or w.state is StreamState.LIVE or w.due_open > window[0]:
            return RestVerdict.MOOT  # it delivered meanwhile
        if rest_has:
            return RestVerdict.LOST
        was = w.state
        w.state = StreamState.HALTED
        # nothing exists up to the window's end: expect the kline after it, but ask REST again
        # no sooner than a grace from now (a halt can last days: not a call per kline)
        w.due_open = max(
            next_open_time(window[1], w.interval), align_down(now_ms + self.grace_ms, w.interval)
        )
        return RestVerdict.STILL_HALTED if was is StreamState.HALTED else RestVerdict.HALTED

    def next_check(self) -> int | None:
        """The earliest deadline (server ms): when to look again."""
        return min((self.deadline(s) for s in self._watch), default=None)
