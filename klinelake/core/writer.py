"""The lake writer: the one place that mutates lake objects (DESIGN.md, write semantics).

Each batch takes the cheapest route its position allows; every route ends in one conditional
mutation on the generation it read, so a concurrent change means a 412 and a retry:
- create: the object does not exist → write it with `if_generation_match=0`.
- append: every batch row is after the object's last row → stage the rows as a part object
  (`if_generation_match=0`), compose [object, part] onto the object (deleting the part in the
  same call). O(batch): the object is never read.
- prepend: every batch row is before the object's first row (history backfilled behind live
  rows) → the same with [part, object]. O(batch) on GCS, which composes server-side; the local
  disk has to rewrite the file (backfill emits in ascending order there: see `Route`).
- merge: anything else → find the byte offset of the first row the batch reaches (a binary
  search over ranged reads), diff the batch against the rows from there (no-op detection reads
  only the batch's span), then rewrite the object from that offset on with the merged rows:
  the local disk rewrites only the suffix, in place; GCS streams the object once.
- staged merge: with a `MergeBudget` (the function's, from its ack deadline), a merge into an
  object larger than one piece is built as pieces under staging/ over as many deliveries as
  it takes, each within the budget, then composed onto the object under the generation it
  read (`staged_merge`); one delivery at a time does it (`lease`), the others are deferred.
- 412 (or the generation vanishing under us) → re-read and retry with jittered backoff
  (`retry_conditional`, shared with every other conditional update of the lake).

The first and last open_time of an object (its `Bounds`) are kept in GCS custom metadata and
cached per object with the generation they belong to, so the live path costs a part upload and
a compose (plus a stat when the cache is cold): a stale cache only costs a 412.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar, cast

from klinelake.core import staged_merge
from klinelake.core.contract import KlineBatch, sort_unique
from klinelake.core.errors import InvalidData, ObjectNotFound, PreconditionFailed
from klinelake.core.intervals import Gap
from klinelake.core.lease import held
from klinelake.core.markets import Market, spec
from klinelake.core.merge import (
    BatchLines,
    MergeStats,
    batch_lines,
    chunked,
    diff_batch,
    first_line,
    last_line,
    merge_lines,
)
from klinelake.core.row import Kline, lake_lines, open_time_of_line, open_times
from klinelake.core.storage import (
    STAGING_PREFIX,
    AppendingStore,
    Bounds,
    CountingStore,
    ObjectInfo,
    ObjectStore,
    appends_in_place,
)
from klinelake.core.symbols import object_name

if TYPE_CHECKING:
    from klinelake.core.halts_writer import HaltsResult

_TAIL_BYTES = 2048
_PROBE_BYTES = 4096  # a probe of the binary search: holds several whole rows of any interval
_COPY_BYTES = 8 << 20  # the ranged reads that copy an object's bytes as they are
_CACHE_SIZE = 4096  # objects whose (generation, bounds) a long-lived writer remembers

Action = Literal["create", "append", "prepend", "merge", "noop"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WriteResult:
    object_name: str
    action: Action
    rows_in: int
    rows_added: int
    rows_replaced: int
    rows_unchanged: int
    generation_before: int | None
    generation_after: int | None
    precondition_retries: int
    storage_calls: dict[str, int] = field(default_factory=dict)
    halts: HaltsResult | None = None  # the batch's confirmed-empty ranges, if it carried any

    def log_fields(self) -> dict[str, object]:
        halts = {} if self.halts is None else self.halts.log_fields()
        return {
            **halts,
            "object": self.object_name,
            "action": self.action,
            "rows_in": self.rows_in,
            "rows_appended": self.rows_added if self.action in ("append", "create") else 0,
            "rows_prepended": self.rows_added if self.action == "prepend" else 0,
            "rows_merged": self.rows_added if self.action == "merge" else 0,
            "rows_replaced": self.rows_replaced,
            "rows_ignored": self.rows_unchanged,
            "generation_before": self.generation_before,
            "generation_after": self.generation_after,
            "precondition_retries": self.precondition_retries,
            "storage_calls": self.storage_calls,
        }


class LakeWriter:
    def __init__(
        self,
        store: ObjectStore,
        *,
        max_attempts: int = 25,
        backoff_s: float = 0.02,
        max_backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        merge_budget: staged_merge.MergeBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        # None: a merge rewrites the object in one go (the CLI, backfill: no deadline)
        self.merge_budget = merge_budget
        self.clock = clock
        self.wall_clock = wall_clock  # lease expiry: shared by every instance of the function
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.precondition_retries = 0  # over the writer's life: the concurrency tests read it
        # name -> what this writer last made of it; only ever used under that generation's
        # precondition, so a stale entry costs one 412, never a wrong write
        self._known: dict[str, ObjectInfo] = {}

    def retry_conditional(self, name: str, attempt: Callable[[int], T]) -> T:
        """Run `attempt(retries)` until it does not meet a precondition conflict (412, or the
        generation it read vanished): the one retry policy of every conditional lake update."""
        retries = 0
        while True:
            try:
                return attempt(retries)
            except (PreconditionFailed, ObjectNotFound):
                self._known.pop(name, None)
                retries += 1
                self.precondition_retries += 1
                if retries >= self.max_attempts:
                    raise PreconditionFailed(
                        f"{name}: gave up after {retries} precondition conflicts"
                    ) from None
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** min(retries, 10))
                self.sleep(random.uniform(0, delay))

    def write_batch(self, batch: KlineBatch) -> WriteResult:
        return self.write_batches((batch,))

    def write_batches(self, batches: Sequence[KlineBatch]) -> WriteResult:
        """Consecutive batches of one stream, each above the one before, as one write of their
        rows, then their halts (the local lake's larger writes: `LakeSink.rows_per_send`)."""
        first = batches[0]
        m = first.market
        times: list[int] = []
        lines: list[bytes] = []
        empty: list[Gap] = []
        for batch in batches:  # each already ascending, unique and of one stream (KlineBatch)
            if (batch.symbol, batch.interval, batch.market) != (first.symbol, first.interval, m):
                raise InvalidData(f"a write of {first.stream} got a batch of {batch.stream}")
            batch_times = open_times(batch.rows)
            if times and batch_times and batch_times[0] <= times[-1]:
                raise InvalidData(f"{batch.stream}: batches of one write must ascend")
            times += batch_times
            lines += lake_lines(batch.rows)
            empty += batch.empty
        result = self._write_lines(first.symbol, first.interval, BatchLines(times, lines), m)
        if empty:  # rows first: the halts write drops what lies under a row (contract 4)
            from klinelake.core.halts_writer import write_empty

            token = spec(m).object_token
            halts = write_empty(self, first.symbol, first.interval, tuple(empty), token)
            result = dataclasses.replace(result, halts=halts)
        return result

    def write_rows(
        self,
        symbol: str,
        interval: str,
        rows: Iterable[Kline],
        market: Market = Market.SPOT,
    ) -> WriteResult:
        """Write rows of one stream (any order; for a repeated open_time the last wins)."""
        ordered = sort_unique(rows)
        for r in ordered:
            if r.symbol != symbol or r.interval != interval or r.market != market:
                raise InvalidData(
                    f"row {r.market}:{r.symbol}@{r.interval} in a batch for "
                    f"{market}:{symbol}@{interval}"
                )
        return self._write_ordered(symbol, interval, ordered, market)

    def _write_ordered(
        self, symbol: str, interval: str, ordered: Sequence[Kline], market: Market
    ) -> WriteResult:
        return self._write_lines(symbol, interval, batch_lines(ordered), market)

    def _write_lines(
        self, symbol: str, interval: str, lines: BatchLines, market: Market
    ) -> WriteResult:
        name = object_name(symbol, interval, market)
        counting = CountingStore(self.store)
        started = self.clock()
        result = self.retry_conditional(
            name, lambda retries: self._attempt(counting, name, lines, retries, started)
        )
        return dataclasses.replace(result, storage_calls=dict(counting.calls))

    def _remember(self, info: ObjectInfo, bounds: Bounds) -> ObjectInfo:
        if len(self._known) >= _CACHE_SIZE:
            self._known.pop(next(iter(self._known)))
        self._known[info.name] = known = dataclasses.replace(info, bounds=bounds)
        return known

    def _attempt(
        self,
        store: ObjectStore,
        name: str,
        lines: BatchLines,
        retries: int,
        started: float,
    ) -> WriteResult:
        if not lines:
            return WriteResult(name, "noop", 0, 0, 0, 0, None, None, retries)
        n = len(lines)
        first_new, last_new = lines.times[0], lines.times[-1]
        cached = self._known.get(name)
        info = cached if cached is not None else store.stat(name)
        if info is None:
            body = lines.body()
            bounds = Bounds(first_new, last_new)
            after = store.write(name, body, if_generation_match=0, bounds=bounds)
            self._remember(after, bounds)
            return WriteResult(name, "create", n, n, 0, 0, None, after.generation, retries)
        gen = info.generation
        have = info.bounds if info.bounds is not None else _read_bounds(store, info)
        edge = _edge_route(have, first_new, last_new)
        if edge is not None:
            action, bounds = edge
            if action == "append" and appends_in_place(self.store):
                # the local disk writes the lines at the object's end: no part to upload,
                # compose and delete
                after = cast(AppendingStore, store).append(name, lines.body(), gen, bounds)
                self._remember(after, bounds)
                return WriteResult(name, action, n, n, 0, 0, gen, after.generation, retries)
            part = f"{STAGING_PREFIX}{name}.{uuid.uuid4().hex}.part"
            store.write(part, lines.body(), if_generation_match=0)
            sources = [name, part] if action == "append" else [part, name]
            try:
                after = store.compose(name, sources, if_generation_match=gen, bounds=bounds)
            finally:
                # Not compose's `deleteSourceObjects`: our sources include the destination
                # itself, a case GCS does not document. A part a crash leaves here is removed
                # by `clean_leftovers` (local) or the bucket's staging/ lifecycle rule (GCS).
                _delete_quietly(store, part)
            self._remember(after, bounds)
            return WriteResult(name, action, n, n, 0, 0, gen, after.generation, retries)
        if cached is not None:  # a merge or no-op decides on the rows: read the current ones
            self._known.pop(name, None)
            return self._attempt(store, name, lines, retries, started)
        assert have is not None  # _edge_route takes every empty object
        offset = _offset_of(store, info, first_new)
        budget = self.merge_budget
        staged = budget is not None and budget.staged(info.size)
        stats: MergeStats | None = None
        # The no-op check reads the object over the batch's span. Without a budget, or when
        # that span is within a piece, it runs here; a wider span (a sparse batch: two rows
        # a year apart) is checked piece by piece as staged work (`staged_merge.stage`).
        if not staged or _span_within_a_piece(store, info, offset, last_new, budget):
            with store.open_lines(name, gen, offset) as existing:
                stats = diff_batch(existing, lines)
            if not stats.changes:
                self._remember(info, have)
                return WriteResult(name, "noop", n, 0, 0, stats.unchanged, gen, gen, retries)
        bounds = Bounds(min(have.first, first_new), max(have.last, last_new))
        if staged:
            staged_after, stats = self._staged_merge(
                store, info, lines, bounds, started, diffed=stats
            )
            if staged_after is None:  # the piecewise check found nothing to change
                self._remember(info, have)
                return WriteResult(name, "noop", n, 0, 0, stats.unchanged, gen, gen, retries)
            after = staged_after
        elif (
            stats is not None
            and stats.added == n
            and offset < info.size
            and _open_time_at(store, info, offset) > last_new
        ):
            # The batch falls in a gap between two rows (history in front of newer rows): its
            # lines, then the object's bytes from the gap on as they are, never line by line.
            tail = _byte_range(store, info, offset)
            after = store.replace_from(
                name, offset, itertools.chain((lines.body(),), tail), gen, bounds=bounds
            )
        else:
            with store.open_lines(name, gen, offset) as existing:
                merged = chunked(merge_lines(existing, lines))
                after = store.replace_from(
                    name, offset, merged, if_generation_match=gen, bounds=bounds
                )
        assert stats is not None
        self._remember(after, bounds)
        return WriteResult(
            name, "merge", n, stats.added, stats.replaced, stats.unchanged, gen,
            after.generation, retries,
        )  # fmt: skip

    def _staged_merge(
        self,
        store: ObjectStore,
        info: ObjectInfo,
        lines: BatchLines,
        bounds: Bounds,
        started: float,
        *,
        diffed: MergeStats | None,
    ) -> tuple[ObjectInfo | None, MergeStats]:
        """Stage this delivery's share of a large merge (first its no-op check, unless
        `diffed` holds it); commit it when every piece exists. (the object after it, or None
        for a no-op; what it changes). Raises MergeInProgress (work left for a redelivery)
        or LeaseHeld (another delivery is at it): both leave the object as it was."""
        budget = self.merge_budget
        assert budget is not None
        with held(store, info.name, budget.lease_s, clock=self.wall_clock):
            plan = staged_merge.Plan(
                store, info, lines, budget.piece_bytes, lambda t: _offset_of(store, info, t)
            )
            progress = staged_merge.stage(
                plan, budget, clock=self.clock, started=started, diffed=diffed
            )
            if not progress.done:
                raise staged_merge.in_progress(info.name, progress)
            assert progress.stats is not None
            if not progress.stats.changes:
                staged_merge.discard(plan)  # the check's markers: the object is untouched
                return None, progress.stats
            return staged_merge.commit(plan, bounds), progress.stats


def _span_within_a_piece(
    store: ObjectStore,
    info: ObjectInfo,
    offset: int,
    last_new: int,
    budget: staged_merge.MergeBudget | None,
) -> bool:
    """Whether the object's rows over the batch's time span (from `offset`, the first row the
    batch reaches) fit in one piece: one more offset search, O(log size) small reads."""
    assert budget is not None
    return _offset_of(store, info, last_new + 1) - offset <= budget.piece_bytes


def _edge_route(have: Bounds | None, first_new: int, last_new: int) -> tuple[Action, Bounds] | None:
    """Append or prepend (with the bounds after it) when the batch lies wholly outside the
    object's rows; None when it reaches in among them (a merge)."""
    if have is None:  # an empty object: anything appends
        return "append", Bounds(first_new, last_new)
    if first_new > have.last:
        return "append", Bounds(have.first, last_new)
    if last_new < have.first:
        return "prepend", Bounds(first_new, have.last)
    return None


def _delete_quietly(store: ObjectStore, part: str) -> None:
    with contextlib.suppress(ObjectNotFound, PreconditionFailed):
        store.delete(part)


def _read_bounds(store: ObjectStore, info: ObjectInfo) -> Bounds | None:
    """First and last open_time from the object's head and tail (None for an empty object)."""
    if info.size == 0:
        return None
    head = store.read_range(info.name, 0, _PROBE_BYTES, info.generation)
    line = first_line(head)
    if line is None:  # one row longer than a probe: impossible for canonical rows
        raise InvalidData(f"{info.name}: no whole row in its first {_PROBE_BYTES} bytes")
    return Bounds(open_time_of_line(line), _last_open_time(store, info))


def _last_open_time(store: ObjectStore, info: ObjectInfo) -> int:
    nbytes = _TAIL_BYTES
    while True:
        start = max(0, info.size - nbytes)
        tail = store.read_range(info.name, start, info.size, info.generation)
        line = last_line(b"\n" + tail if start == 0 else tail)
        if line is not None:
            return open_time_of_line(line)
        if start == 0:
            raise InvalidData(f"{info.name}: no whole row in the object")
        nbytes *= 4


def _open_time_at(store: ObjectStore, info: ObjectInfo, offset: int) -> int:
    """open_time of the row starting at `offset` (a row start before the object's end)."""
    line = first_line(store.read_range(info.name, offset, offset + _PROBE_BYTES, info.generation))
    if line is None:  # one row longer than a probe: impossible for canonical rows
        raise InvalidData(f"{info.name}: no whole row at byte {offset}")
    return open_time_of_line(line)


def _byte_range(store: ObjectStore, info: ObjectInfo, start: int) -> Iterator[bytes]:
    """The object's bytes from `start` to its end, in large ranged reads of that generation."""
    for at in range(start, info.size, _COPY_BYTES):
        yield store.read_range(info.name, at, min(at + _COPY_BYTES, info.size), info.generation)


def _offset_of(store: ObjectStore, info: ObjectInfo, open_time: int) -> int:
    """Byte offset of the first row whose open_time is >= `open_time` (the size if none):
    a binary search over ranged reads, O(log size) probes, never a pass over the object."""
    lo, hi = 0, info.size  # lo: a row start with every row before it < open_time; hi: >= or end
    while hi - lo > 2 * _PROBE_BYTES:
        mid = (lo + hi) // 2
        probe = store.read_range(info.name, mid, mid + _PROBE_BYTES, info.generation)
        cut = probe.find(b"\n")
        line = first_line(probe[cut + 1 :]) if cut >= 0 else None
        if line is None:
            break  # no whole row in a probe: finish with the linear scan below
        start = mid + cut + 1
        if open_time_of_line(line) >= open_time:
            hi = start
        else:
            lo = start
    window = store.read_range(info.name, lo, hi, info.generation)
    pos = 0
    while pos < len(window):
        end = window.find(b"\n", pos)
        if end < 0 or open_time_of_line(window[pos : end + 1]) >= open_time:
            return lo + pos
        pos = end + 1
    return hi
