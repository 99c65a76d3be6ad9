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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from klinelake.core.errors import InvalidData, MergeInProgress, ObjectNotFound, PreconditionFailed
from klinelake.core.merge import (
    BatchLines,
    MergeStats,
    diff_batch,
    first_line,
    merge_lines,
    split_lines,
)
from klinelake.core.row import open_time_of_line
from klinelake.core.storage import STAGING_PREFIX, Bounds, ObjectInfo, ObjectStore

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
        self,
        store: ObjectStore,
        info: ObjectInfo,
        lines: BatchLines,
        piece_bytes: int,
        offset_of: Callable[[int], int],
    ) -> None:
        self.store, self.info, self.lines, self.piece_bytes = store, info, lines, piece_bytes
        self.offset_of = offset_of  # byte offset of the first row >= an open_time (a search)
        self.count = max(1, -(-info.size // piece_bytes))
        key = batch_key(lines, piece_bytes)
        self.prefix = f"{STAGING_PREFIX}{info.name}.g{info.generation}.{key}."
        self._times = lines.times
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

    def share(self, k: int) -> tuple[int, int]:
        """[lo, hi): the indices of the batch rows that fall in piece k."""
        first, last = self.boundary(k)[1], self.boundary(k + 1)[1]
        return bisect.bisect_left(self._times, first), bisect.bisect_left(self._times, last)

    def piece_of(self, open_time: int) -> int:
        """The piece whose time range holds `open_time`: one offset search and a probe or two,
        never a pass over the object. The row at that offset starts in piece offset // size
        (a_k <= offset < a_k+1); a time in the gap just before a piece's first row belongs
        to the piece before."""
        k = min(self.offset_of(open_time) // self.piece_bytes, self.count - 1)
        while k > 0 and self.boundary(k)[1] > open_time:
            k -= 1
        return k

    def build(self, k: int) -> tuple[MergeStats, bytes]:
        """Piece k's bytes (its range of the object merged with its share of the batch) and
        what the merge changes in that range: both from one read of the range."""
        start, end = self.boundary(k)[0], self.boundary(k + 1)[0]
        lo, hi = self.share(k)
        existing = list(split_lines(_range(self.store, self.info, start, end)))
        share = self.lines[lo:hi]
        return diff_batch(existing, share), b"".join(merge_lines(existing, share))

    def piece(self, k: int) -> bytes:
        return self.build(k)[1]

    def marker(self, lo: int, hi: int, stats: MergeStats) -> str:
        """The name that records the no-op check of batch rows [lo, hi) (one piece's share):
        a pure function of (G, batch, piece size), so whoever creates it writes the same."""
        a, r, u = stats.added, stats.replaced, stats.unchanged
        return f"{self.prefix}d{lo:07d}-{hi:07d}.{a}-{r}-{u}.diff"

    def markers(self, names: Iterable[str]) -> dict[int, tuple[int, MergeStats]]:
        """lo -> (hi, stats) of the no-op check markers among `names`."""
        found: dict[int, tuple[int, MergeStats]] = {}
        for name in names:
            if not (name.startswith(f"{self.prefix}d") and name.endswith(".diff")):
                continue
            span, counts = name[len(self.prefix) + 1 : -len(".diff")].split(".")
            lo, hi = (int(x) for x in span.split("-"))
            a, r, u = (int(x) for x in counts.split("-"))
            found[lo] = (hi, MergeStats(a, r, u))
        return found


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
    made: int  # pieces read by this delivery (to check or to stage)
    checked: int  # batch rows the no-op check has covered so far (all: `stats` is set)
    stats: MergeStats | None  # what the merge changes; None until every row is checked

    @property
    def done(self) -> bool:
        """Nothing left to stage: a no-op (stats without changes) or every piece exists."""
        if self.stats is None:
            return False
        return not self.stats.changes or self.staged == self.total


class _Pace:
    """One delivery's use of its budget, shared by the check and the staging."""

    def __init__(self, budget: MergeBudget, clock: Callable[[], float], begin: float) -> None:
        self.budget, self.clock, self.begin = budget, clock, begin
        self.made = 0
        self.slowest = 0.0

    def may_start(self) -> bool:
        return not self.made or self.budget.may_start_piece(self.clock() - self.begin, self.slowest)

    @contextlib.contextmanager
    def piece(self) -> Iterator[None]:
        """Time one piece's worth of work (a piece staged or checked)."""
        t0 = self.clock()
        yield
        self.slowest = max(self.slowest, self.clock() - t0)
        self.made += 1


def stage(
    plan: Plan,
    budget: MergeBudget,
    *,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
    diffed: MergeStats | None = None,
) -> Progress:
    """Finish the no-op check (unless `diffed` already holds its result), then, if the merge
    changes anything, make the missing pieces, all while the budget allows; how far it got."""
    pace = _Pace(budget, clock, clock() if started is None else started)
    have = {o.name for o in plan.store.list(plan.prefix)}
    checked = len(plan.lines)
    stats = diffed
    if stats is None:
        checked, stats = _check(plan, have, pace)
    if stats is None or not stats.changes:
        return Progress(0, plan.count, pace.made, checked, stats)
    staged = 0
    for k in range(plan.count):
        name = plan.name(k)
        if name in have:
            staged += 1
            continue
        if not pace.may_start():
            break
        with pace.piece():
            _create(plan.store, name, plan.piece(k))
        staged += 1
    return Progress(staged, plan.count, pace.made, checked, stats)


def _check(plan: Plan, have: set[str], pace: _Pace) -> tuple[int, MergeStats | None]:
    """The no-op check of a batch spread wider than a piece, piece by piece: each step finds
    the piece of the first unchecked batch row (an offset search), reads that piece's range
    once, and records what merging its share changes in a marker (a name: `Plan.marker`).
    A piece that changes is staged at once from the same read. Steps are paced like pieces,
    so a sparse batch is checked over as many deliveries as it needs; a delivery reads at
    most its budget's pieces, never the span between the rows. (rows checked, total stats
    or None while rows remain)."""
    known = plan.markers(have)
    total = MergeStats(0, 0, 0)
    i, n = 0, len(plan.lines)
    while i < n:
        if i in known:
            hi, stats = known[i]
        else:
            if not pace.may_start():
                return i, None
            k = plan.piece_of(plan.lines.times[i])
            lo, hi = plan.share(k)
            assert lo == i, (lo, i)  # pieces partition the batch in order
            with pace.piece():
                stats, body = plan.build(k)
                if stats.changes:
                    _create(plan.store, plan.name(k), body)
                    have.add(plan.name(k))
                _create(plan.store, plan.marker(lo, hi, stats), b"")
        total = total + stats
        i = hi
    return n, total


def _create(store: ObjectStore, name: str, body: bytes) -> None:
    with contextlib.suppress(PreconditionFailed):  # another delivery made it: same bytes
        store.write(name, body, if_generation_match=0)


def discard(plan: Plan) -> None:
    """Drop what the staging left under the plan's prefix (pieces, composes, markers)."""
    for o in plan.store.list(plan.prefix):
        with contextlib.suppress(ObjectNotFound, PreconditionFailed):
            plan.store.delete(o.name)


def commit(plan: Plan, bounds: Bounds) -> ObjectInfo:
    """Compose every piece onto the object under its generation, then drop the pieces."""
    store, info = plan.store, plan.info
    sources = plan.names()
    level = 0
    while len(sources) > COMPOSE_MAX:
        grouped = []
        for i in range(0, len(sources), COMPOSE_MAX):
            inner = f"{plan.prefix}c{level}-{i // COMPOSE_MAX:05d}.piece"
            with contextlib.suppress(PreconditionFailed):  # an earlier delivery composed it
                store.compose(inner, sources[i : i + COMPOSE_MAX], if_generation_match=0)
            grouped.append(inner)
        sources, level = grouped, level + 1
    try:
        after = store.compose(
            info.name, sources, if_generation_match=info.generation, bounds=bounds
        )
    except PreconditionFailed:
        # the object is past generation G (another writer, or this compose landed and its
        # retry got the 412): pieces of G can never be composed again
        discard(plan)
        raise
    discard(plan)
    return after


def in_progress(name: str, progress: Progress) -> MergeInProgress:
    if progress.stats is None:
        return MergeInProgress(
            f"{name}: no-op check covered {progress.checked} batch rows so far "
            f"({progress.made} pieces read in this delivery); Pub/Sub redelivers to go on"
        )
    return MergeInProgress(
        f"{name}: merge staged {progress.staged}/{progress.total} pieces "
        f"({progress.made} in this delivery); Pub/Sub redelivers to go on"
    )
