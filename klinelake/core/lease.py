"""A per-object lease, so overlapping deliveries of one slow merge do its work once.

Pub/Sub redelivers a message whose push has not been answered within the ack deadline, and
may deliver it twice at any time; the generation preconditions already make a second writer
harmless (its final write is refused with a 412), but not cheap: without a lease both would
stage the whole merge. The lease is a small object beside the lake object,

    staging/<object name>.lease   {"holder": "<uuid>", "expires_at": <unix seconds>}

created with `if_generation_match=0` (exactly one delivery can create it), deleted by its
holder with its own generation as precondition when the work ends. A delivery that finds a
live lease raises `LeaseHeld` at the cost of a create, a stat and a small read: Pub/Sub
retries it later with backoff, by which time the work is done (the retry is then a no-op that
reads only the batch's span) or the lease is free. A holder that crashed leaves a lease that
expires: whoever finds it stale takes it over with the stale lease's generation as
precondition, so two deliveries cannot both take it over. The lease never guards correctness
(the lake object's generation precondition does); a clock skew between instances only moves
the moment a stale lease is taken over. It lives under staging/ (the function's IAM condition
covers it; the bucket's lifecycle rule and `clean_leftovers` remove what is forgotten).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson

from klinelake.core.errors import LeaseHeld, ObjectNotFound, PreconditionFailed
from klinelake.core.storage import STAGING_PREFIX, ObjectInfo, ObjectStore

_MAX_LEASE_BYTES = 1024


def lease_name(name: str) -> str:
    return f"{STAGING_PREFIX}{name}.lease"


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    expires_at: float  # unix seconds

    def encode(self) -> bytes:
        return orjson.dumps({"holder": self.holder, "expires_at": self.expires_at})

    @classmethod
    def decode(cls, data: bytes) -> Lease | None:
        """None for a body that is not a lease (torn, foreign): treated as expired."""
        try:
            raw = orjson.loads(data)
            return cls(str(raw["holder"]), float(raw["expires_at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def live(self, now: float) -> bool:
        return now < self.expires_at


def seconds_left(lease: Lease | None, now: float) -> float:
    """How long a found lease still blocks others (0: it may be taken over)."""
    return 0.0 if lease is None else max(0.0, lease.expires_at - now)


@contextlib.contextmanager
def held(
    store: ObjectStore, name: str, duration_s: float, clock: Callable[[], float] = time.time
) -> Iterator[Lease]:
    """Hold `name`'s lease for the block (at most `duration_s`), or raise LeaseHeld."""
    lname = lease_name(name)
    mine = Lease(uuid.uuid4().hex, clock() + duration_s)
    try:
        info = store.write(lname, mine.encode(), if_generation_match=0)
    except PreconditionFailed:
        info = _take_over(store, lname, mine, clock)
    try:
        yield mine
    finally:
        # only our own generation: a lease someone took over after ours expired stays theirs
        with contextlib.suppress(ObjectNotFound, PreconditionFailed):
            store.delete(lname, if_generation_match=info.generation)


def _take_over(
    store: ObjectStore, lname: str, mine: Lease, clock: Callable[[], float]
) -> ObjectInfo:
    found = store.stat(lname)
    try:
        if found is None:  # released between our create and the stat: create again
            return store.write(lname, mine.encode(), if_generation_match=0)
        other = _read(store, found)
        if other is not None and other.holder == mine.holder:
            # our own create landed and its reply was lost: the client's retry got the 412
            return found
        if other is not None and other.live(clock()):
            raise LeaseHeld(
                f"{lname}: held by delivery {other.holder} for "
                f"{seconds_left(other, clock()):.0f} s more"
            )
        return store.write(lname, mine.encode(), if_generation_match=found.generation)
    except (PreconditionFailed, ObjectNotFound):
        # another delivery created, renewed or took it over in between: it is theirs, unless
        # that write was ours (landed, reply lost, the retry refused)
        with contextlib.suppress(ObjectNotFound):  # (gone again: not ours either way)
            now = store.stat(lname)
            lease = _read(store, now) if now is not None else None
            if now is not None and lease is not None and lease.holder == mine.holder:
                return now
        raise LeaseHeld(f"{lname}: taken by another delivery just now") from None


def _read(store: ObjectStore, info: ObjectInfo) -> Lease | None:
    return Lease.decode(store.read_range(info.name, 0, _MAX_LEASE_BYTES, info.generation))
