"""A merge into the middle of a large object, staged in pieces so that no delivery of the
message works longer than a fixed time budget, whatever the object's size (issue 12 item 6).

GCS has no partial write and compose takes whole objects, so a merge that changes rows in the
middle of an object has to re-upload every byte of it once (a whole-object rewrite took ~190 s
for 139 MB on the local stack; production allows 300 s per push). Instead the new object is
built as pieces under staging/, each a byte range of the current generation `G` merged with
the batch rows of its time range, then composed onto the object with `if_generation_match=G`:

    object G:  [ a0 ........ a1 ........ a2 ........ size )   a_k: the first row start >= k*B
    pieces:    [ range 0 ∪ batch rows  ][ range 1 ∪ ... ][ range 2 ∪ batch rows >= T2 ]
               (T_k: the open_time of the row at a_k; a piece takes the batch rows in [T_k, T_k+1))
    compose:   pieces (a tree of composes, 32 sources each) ──if_generation_match=G──> object

A piece's bytes are a pure function of (G, the batch, B), so its name carries them
(`staging/<object>.g<G>.<batch key>.<k>.piece`) and it is created with `if_generation_match=0`:
a piece that exists is complete (uploads are atomic) and correct, whoever made it. A delivery
stages missing pieces until its budget is spent, then raises `MergeInProgress`; Pub/Sub
redelivers the message (min-retry-delay later) and the next delivery goes on from the pieces
that exist. The delivery that finds them all composes (server-side, O(pieces) metadata
calls) and so commits the merge in one conditional mutation: exactly once, sorted, one row
per open_time, the batch winning (each piece is `merge_lines` of its range), crash-safe (the
object changes only at that compose; a crash leaves pieces the lifecycle rule removes). If
the object changed meanwhile the compose is refused (412) and the writer starts again from
the new generation.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from klinelake.errors import InvalidData, MergeInProgress, ObjectNotFound, PreconditionFailed
from klinelake.merge import BatchLines, first_line, merge_lines, split_lines
from klinelake.row import open_time_of_line
from klinelake.storage import STAGING_PREFIX, Bounds, ObjectInfo, ObjectStore

COMPOSE_MAX = 32  # GCS: 1 to 32 sources per compose
DEFAULT_PIECE_BYTES = 32 * 1024 * 1024
_PROBE_BYTES = 8192  # holds a whole row after any cut (canonical rows are < 1 KB)
_READ_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MergeBudget:
    """How much merge work one delivery may do, from the push subscription's ack deadline.

    A delivery stages pieces of `piece_bytes` while the time spent so far plus the slowest
    piece so far stays within `work_s` (a third of the deadline: the rest covers the offset
    search, the diff, the final compose and a slow piece), and holds the object's lease for
    `lease_s` (the deadline: past it Pub/Sub has redelivered anyway)."""

    work_s: float
    lease_s: float
    piece_bytes: int = DEFAULT_PIECE_BYTES

    @classmethod
    def for_ack_deadline(
        cls, ack_deadline_s: float, piece_bytes: int = DEFAULT_PIECE_BYTES
    ) -> MergeBudget:
        if ack_deadline_s <= 0 or piece_bytes <= 0:
            raise ValueError("the ack deadline and the piece size must be positive")
        return cls(ack_deadline_s / 3, ack_deadline_s, piece_bytes)

    def staged(self, object_size: int) -> bool:
        """A merge into an object larger than one piece is staged; smaller ones rewrite it."""
        return object_size > self.piece_bytes

    def may_start_piece(self, elapsed_s: float, slowest_piece_s: float) -> bool:
        """Start one more piece only if it can end within the budget at the pace seen so far
        (the first piece of a delivery always starts: progress is never zero)."""
        return elapsed_s + slowest_piece_s <= self.work_s


def batch_key(lines: BatchLines, piece_bytes: int) -> str:
    digest = hashlib.sha256(str(piece_bytes).encode())
    for _, line in lines:
        digest.update(line)
    return digest.hexdigest()[:16]


class Plan:
    """The pieces of merging `lines` into `info`'s generation. Piece k is bytes [a_k, a_k+1)
    merged with the batch rows in [T_k, T_k+1), where a_k is the first row start at or after
    k * piece_bytes (the size past the last row) and T_k its open_time (T_0 below every row,
    T at the size above every row). A piece may be empty; every name exists once staged.
    Boundaries are probed only for the pieces a delivery makes (one small read each), so a
    delivery's cost does not grow with the object's size."""

    def __init__(
        self, store: ObjectStore, info: ObjectInfo, lines: BatchLines, piece_bytes: int
    ) -> None:
        self.store, self.info, self.lines, self.piece_bytes = store, info, lines, piece_bytes
        self.count = max(1, -(-info.size // piece_bytes))
        key = batch_key(lines, piece_bytes)
        self.prefix = f"{STAGING_PREFIX}{info.name}.g{info.generation}.{key}."
        self._times = [t for t, _ in lines]
        self._boundaries: dict[int, tuple[int, int]] = {0: (0, _LOWEST)}

    def name(self, k: int) -> str:
        return f"{self.prefix}{k:05d}.piece"

    def names(self) -> list[str]:
        return [self.name(k) for k in range(self.count)]

    def boundary(self, k: int) -> tuple[int, int]:
        if k not in self._boundaries:
            found = None
            if k < self.count:
                found = _row_at_or_after(self.store, self.info, k * self.piece_bytes)
            self._boundaries[k] = found if found is not None else (self.info.size, _HIGHEST)
        return self._boundaries[k]

    def piece(self, k: int) -> bytes:
        """Piece k's bytes: its range of the object merged with its share of the batch."""
        (start, first), (end, last) = self.boundary(k), self.boundary(k + 1)
        lo, hi = bisect.bisect_left(self._times, first), bisect.bisect_left(self._times, last)
        existing = split_lines(_range(self.store, self.info, start, end))
        return b"".join(merge_lines(existing, self.lines[lo:hi]))


_LOWEST, _HIGHEST = -(2**63), 2**63


def _row_at_or_after(store: ObjectStore, info: ObjectInfo, pos: int) -> tuple[int, int] | None:
    """(offset, open_time) of the first row starting at or after `pos` (> 0); None if none."""
    probe = store.read_range(info.name, pos - 1, pos - 1 + _PROBE_BYTES, info.generation)
    cut = probe.find(b"\n")
    if cut < 0:
        raise InvalidData(f"{info.name}: no row end within {_PROBE_BYTES} bytes of {pos}")
    start = pos + cut
    if start >= info.size:
        return None
    line = first_line(probe[cut + 1 :])
    if line is None:
        raise InvalidData(f"{info.name}: no whole row within {_PROBE_BYTES} bytes of {start}")
    return start, open_time_of_line(line)


def _range(store: ObjectStore, info: ObjectInfo, start: int, end: int) -> Iterator[bytes]:
    for pos in range(start, end, _READ_CHUNK):
        yield store.read_range(info.name, pos, min(end, pos + _READ_CHUNK), info.generation)


@dataclass(frozen=True, slots=True)
class Progress:
    staged: int  # pieces that existed or this delivery made
    total: int
    made: int  # by this delivery


def stage(
    plan: Plan,
    budget: MergeBudget,
    *,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
) -> Progress:
    """Make the missing pieces while the budget allows; how far the staging got."""
    begin = clock() if started is None else started
    have = {o.name for o in plan.store.list(plan.prefix)}
    staged = made = 0
    slowest = 0.0
    for k in range(plan.count):
        name = plan.name(k)
        if name in have:
            staged += 1
            continue
        if made and not budget.may_start_piece(clock() - begin, slowest):
            break
        t0 = clock()
        with contextlib.suppress(PreconditionFailed):  # another delivery made it: same bytes
            plan.store.write(name, plan.piece(k), if_generation_match=0)
        slowest = max(slowest, clock() - t0)
        staged += 1
        made += 1
    return Progress(staged, plan.count, made)


def commit(plan: Plan, bounds: Bounds) -> ObjectInfo:
    """Compose every piece onto the object under its generation, then drop the pieces."""
    store, info = plan.store, plan.info
    sources = plan.names()
    made: list[str] = []
    level = 0
    while len(sources) > COMPOSE_MAX:
        grouped = []
        for i in range(0, len(sources), COMPOSE_MAX):
            inner = f"{plan.prefix}c{level}-{i // COMPOSE_MAX:05d}.piece"
            with contextlib.suppress(PreconditionFailed):  # an earlier delivery composed it
                store.compose(inner, sources[i : i + COMPOSE_MAX], if_generation_match=0)
            made.append(inner)
            grouped.append(inner)
        sources, level = grouped, level + 1
    after = store.compose(info.name, sources, if_generation_match=info.generation, bounds=bounds)
    for name in plan.names() + made:
        with contextlib.suppress(ObjectNotFound, PreconditionFailed):
            store.delete(name)
    return after


def in_progress(name: str, progress: Progress) -> MergeInProgress:
    return MergeInProgress(
        f"{name}: merge staged {progress.staged}/{progress.total} pieces "
        f"({progress.made} in this delivery); Pub/Sub redelivers to go on"
    )
