"""What a connection slot does next (pure): the supervisor's policy, apart from its I/O.

A slot keeps one live connection for a fixed group of streams. At every check the service
describes the slot (`SlotView`) and does what `decide` says:

    connection ended ─────────────────────────────> RECONNECT  (take a ready replacement if any)
    every stream silent (stall.Verdict.dead) ─────> ask REST about one silent stream first:
        it has klines WS did not deliver, or REST cannot say > RECONNECT
        none (a halt: e.g. the only stream on the connection) > it is marked halted, and the
        connection is dead only if the others are silent too (ask the next one)
    a stream silent on WS while REST has its klines > RECONNECT  (its subscription is lost)
    replacement subscribed ───────────────────────> SWITCH     (then close the old: no gap)
    replacement failed ───────────────────────────> RETRY_LATER (the old one still serves)
    serverShutdown notice, or 23 h old ───────────> REPLACE    (open the new one first)
    otherwise ────────────────────────────────────> WAIT
    and with any of these but RECONNECT: ask REST about the silent streams not being asked yet
    (one silent stream among delivering ones is a halt or a lost subscription, never a reason
    to drop the others: see stall.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Act(StrEnum):
    RECONNECT = "reconnect"
    SWITCH = "switch"
    RETRY_LATER = "retry replacement later"
    REPLACE = "replace"
    WAIT = "wait"


class Replacement(StrEnum):
    NONE = "none"
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class SlotView:
    alive: bool
    dead: bool = False  # stall.Verdict.dead
    lost: tuple[str, ...] = ()  # streams REST showed to be lost on this connection
    unknown: tuple[str, ...] = ()  # silent streams REST could not answer for
    silent: tuple[str, ...] = ()  # stall.Verdict.silent
    asking_rest: frozenset[str] = frozenset()  # silent streams whose REST check is in flight
    shutdown_notice: bool = False
    age_ms: int = 0
    max_age_ms: int = 23 * 3600 * 1000
    replacement: Replacement = Replacement.NONE
    replacement_retry_due: bool = True  # the backoff after a failed replacement has passed


@dataclass(frozen=True)
class Decision:
    act: Act
    reason: str = ""
    ask_rest: tuple[str, ...] = ()  # silent streams to confirm over REST now


def decide(view: SlotView) -> Decision:
    if not view.alive:
        return Decision(Act.RECONNECT, "connection ended")
    if view.lost:
        return Decision(Act.RECONNECT, f"silent on WS, klines on REST: {', '.join(view.lost)}")
    ask = tuple(s for s in view.silent if s not in view.asking_rest)
    if view.dead:
        if view.unknown:
            return Decision(Act.RECONNECT, "stalled: every stream silent, REST unavailable")
        if view.asking_rest:
            return Decision(Act.WAIT, "every stream silent: waiting for REST")
        # one question settles it: a halted stream, or a dead connection
        return Decision(Act.WAIT, "every stream silent: asking REST", ask[:1])
    if view.replacement is Replacement.READY:
        return Decision(Act.SWITCH, "replacement subscribed", ask)
    if view.replacement is Replacement.FAILED:
        return Decision(Act.RETRY_LATER, "replacement failed", ask)
    rollover = view.shutdown_notice or view.age_ms >= view.max_age_ms
    if rollover and view.replacement is Replacement.NONE and view.replacement_retry_due:
        reason = "serverShutdown" if view.shutdown_notice else "connection age"
        return Decision(Act.REPLACE, reason, ask)
    return Decision(Act.WAIT, "", ask)
