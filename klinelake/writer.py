"""The lake writer: the one place that mutates lake objects (DESIGN.md, write semantics).

- create: the object does not exist → write it with `if_generation_match=0`.
- append: every batch row is after the object's last row → stage the rows as a part object
  (`if_generation_match=0`), compose [object, part] onto the object with a generation
  precondition, delete the part. O(batch): only the object's tail is read.
- merge: anything else → stream the object, merge, write it back with a generation
  precondition. A first streaming pass decides whether anything changes at all, so a batch that
  changes nothing writes nothing (the generation stays).
- 412 (or the generation vanishing under us) → re-read and retry with jittered backoff.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from klinelake.contract import KlineBatch, sort_unique
from klinelake.errors import InvalidData, ObjectNotFound, PreconditionFailed
from klinelake.markets import Market
from klinelake.merge import batch_lines, chunked, diff_batch, last_line, merge_lines
from klinelake.row import Kline, open_time_of_line
from klinelake.storage import CountingStore, ObjectStore
from klinelake.symbols import object_name

STAGING_PREFIX = "staging/"
_TAIL_BYTES = 2048

Action = Literal["create", "append", "merge", "noop"]


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

    def log_fields(self) -> dict[str, object]:
        return {
            "object": self.object_name,
            "action": self.action,
            "rows_in": self.rows_in,
            "rows_appended": self.rows_added if self.action in ("append", "create") else 0,
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
    ) -> None:
        self.store = store
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.precondition_retries = 0  # over the writer's life: the concurrency tests read it

    def write_batch(self, batch: KlineBatch) -> WriteResult:
        return self.write_rows(batch.symbol, batch.interval, batch.rows, batch.market)

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
        name = object_name(symbol, interval, market)
        counting = CountingStore(self.store)
        lines = batch_lines(ordered)
        retries = 0
        while True:
            try:
                result = self._attempt(counting, name, lines, retries)
            except (PreconditionFailed, ObjectNotFound):
                retries += 1
                self.precondition_retries += 1
                if retries >= self.max_attempts:
                    raise PreconditionFailed(
                        f"{name}: gave up after {retries} precondition conflicts"
                    ) from None
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** min(retries, 10))
                self.sleep(random.uniform(0, delay))
                continue
            return dataclasses.replace(result, storage_calls=dict(counting.calls))

    def _attempt(
        self, store: ObjectStore, name: str, lines: Sequence[tuple[int, bytes]], retries: int
    ) -> WriteResult:
        if not lines:
            return WriteResult(name, "noop", 0, 0, 0, 0, None, None, retries)
        n = len(lines)
        info = store.stat(name)
        if info is None:
            after = store.write(name, b"".join(ln for _, ln in lines), if_generation_match=0)
            return WriteResult(name, "create", n, n, 0, 0, None, after.generation, retries)
        gen = info.generation
        last = self._last_open_time(store, name, gen, info.size)
        if last is None or lines[0][0] > last:
            part = f"{STAGING_PREFIX}{name}.{uuid.uuid4().hex}.part"
            staged = store.write(part, b"".join(ln for _, ln in lines), if_generation_match=0)
            try:
                after = store.compose(name, [name, part], if_generation_match=gen)
            finally:
                with contextlib.suppress(ObjectNotFound, PreconditionFailed):
                    store.delete(part, if_generation_match=staged.generation)
            return WriteResult(name, "append", n, n, 0, 0, gen, after.generation, retries)
        with store.open_lines(name, gen) as existing:
            stats = diff_batch(existing, lines)
        if not stats.changes:
            return WriteResult(name, "noop", n, 0, 0, stats.unchanged, gen, gen, retries)
        with store.open_lines(name, gen) as existing:
            merged = chunked(merge_lines(existing, lines))
            after = store.write(name, merged, if_generation_match=gen)
        return WriteResult(
            name, "merge", n, stats.added, stats.replaced, stats.unchanged, gen,
            after.generation, retries,
        )  # fmt: skip

    @staticmethod
    def _last_open_time(store: ObjectStore, name: str, gen: int, size: int) -> int | None:
        if size == 0:
            return None
        nbytes = _TAIL_BYTES
        while True:
            tail = store.read_tail(name, nbytes, gen)
            whole = len(tail) >= size
            line = last_line(b"\n" + tail if whole else tail)
            if line is not None:
                return open_time_of_line(line)
            if whole:
                return None
            nbytes *= 4
