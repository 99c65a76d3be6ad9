"""Issue 12 item 6 on the local stack: a merge into a large object never needs longer than the
ack deadline (it is staged over deliveries, each within its budget) and overlapping deliveries
of the same slow merge do the work once (the second finds the lease and writes nothing).

The first test drives two handlers in this process against the stack's GCS (fake-gcs behind
the enforcing proxy), interleaving them deterministically; the second goes through the whole
push path (Pub/Sub emulator -> functions-framework), the function started with a small piece
and a short deadline so that the stack's objects are "large". Printed totals: lost 0,
duplicated 0 (the fault-suite form)."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from ingest_function.handler import IngestHandler
from klinelake.backends.lake import read_object
from klinelake.core.errors import LeaseHeld, MergeInProgress
from klinelake.core.row import Kline
from klinelake.core.staged_merge import MergeBudget
from klinelake.core.storage import Bounds, Data, ObjectInfo
from klinelake.core.symbols import object_name
from klinelake.logs import JsonFormatter
from localcloud import Stack, wait_for
from tests.function.helpers import klines, lines, message, push_event

pytestmark = pytest.mark.stack


class Watched:
    """The stack's GCSStore, recording each upload and letting a test act before one."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.uploads: list[str] = []
        self.before_upload: Callable[[str], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: Bounds | None = None
    ) -> ObjectInfo:
        hook = self.before_upload
        if hook is not None:
            hook(name)
        self.uploads.append(name)
        return self.inner.write(name, data, if_generation_match, bounds)  # type: ignore[no-any-return]

    def replace_from(self, *args: Any, **kw: Any) -> ObjectInfo:
        self.uploads.append(args[0])
        return self.inner.replace_from(*args, **kw)  # type: ignore[no-any-return]


def corrected(rows: list[Kline], every: int) -> list[Kline]:
    """Every `every`-th row with another close: a backfill correcting the object's middle."""
    return [Kline(**{**r.to_dict(), "close": "1.00000000"}) for r in rows[::every]]


def handler(store: Any, budget: MergeBudget) -> tuple[IngestHandler, io.StringIO]:
    out = io.StringIO()
    log = logging.getLogger(f"ingest.staged.{id(out)}")
    log.propagate = False
    log.addHandler(logging.StreamHandler(out))
    log.handlers[-1].setFormatter(JsonFormatter())
    h = IngestHandler(store, None, log=log, merge_budget=budget)
    h.writer.clock = _ticking()  # each clock reading 1 s on: pieces look slow, deterministically
    return h, out


def _ticking() -> Callable[[], float]:
    counter = itertools.count()
    return lambda: float(next(counter))


def totals(got: bytes | None, want: bytes) -> tuple[int, int]:
    have = (got or b"").splitlines(keepends=True)
    return len(set(want.splitlines(keepends=True)) - set(have)), len(have) - len(set(have))


def test_overlapping_deliveries_of_a_slow_merge_do_the_work_once(stack: Stack) -> None:
    rows = klines("SLOWMERGE")  # the month of 1h rows
    name = object_name("SLOWMERGE", "1h")
    store = Watched(stack.store())
    store.inner.write(name, lines(rows), if_generation_match=0)
    size = len(lines(rows))
    budget = MergeBudget(work_s=6.0, lease_s=60, piece_bytes=size // 8)
    a, a_log = handler(store, budget)
    b, b_log = handler(store, budget)
    fix = corrected(rows[100:600], 10)
    data, attrs, _ = message(fix, source="rest")
    event = push_event(data, attrs, message_id="slow-1")

    def redelivered_meanwhile(upload: str) -> None:
        if upload.endswith(".piece"):
            store.before_upload = None
            mark = len(store.uploads)
            with pytest.raises(LeaseHeld):
                b.handle(event)  # Pub/Sub's redelivery while A still works
            assert [u for u in store.uploads[mark:] if not u.endswith(".lease")] == []

    store.before_upload = redelivered_meanwhile
    deliveries = 0
    while True:  # A's deliveries, as Pub/Sub repeats them until one is acked
        deliveries += 1
        try:
            result = a.handle(event)
            break
        except MergeInProgress:
            continue
    assert result is not None and result.action == "merge"
    assert result.rows_replaced == len(fix) and deliveries > 1
    pieces = [u for u in store.uploads if u.endswith(".piece")]
    assert len(pieces) == len(set(pieces)) >= 8  # every piece uploaded once, by A only
    assert name not in store.uploads  # the object itself was never re-uploaded

    # B's own redeliveries after A committed: a no-op, acked. The batch spans 5/8 of the
    # object, wider than a piece, so its no-op check is staged piece by piece too
    committed = store.inner.stat(name)
    again = until_acked(b, event)
    assert again is not None and again.action == "noop"
    # an operator's hand-made replay of the object's first and last rows (a month apart):
    # checked in bounded steps, a no-op, the object never written
    ends, ends_attrs, _ = message([rows[0], rows[-1]], source="rest")
    sparse = until_acked(b, push_event(ends, ends_attrs, message_id="replay-1"))
    assert sparse is not None and sparse.action == "noop" and sparse.rows_unchanged == 2
    assert store.inner.stat(name) == committed

    by_time = {r.open_time: r for r in rows} | {r.open_time: r for r in fix}
    want = lines([by_time[t] for t in sorted(by_time)])
    got = read_object(store.inner, name)
    lost, duplicated = totals(got, want)
    print(f"slow merge, overlapping deliveries on the stack: lost {lost}, duplicated {duplicated}")
    assert got == want and (lost, duplicated) == (0, 0)
    assert stack.store().list(f"staging/{name}") == []
    deferred = [json.loads(x) for x in (a_log.getvalue() + b_log.getvalue()).splitlines()]
    warned = {r["error"] for r in deferred if r["severity"] == "WARNING"}
    assert warned == {"MergeInProgress", "LeaseHeld"}
    assert all("Pub/Sub will redeliver" in r["message"] for r in deferred if "error" in r)


def until_acked(h: IngestHandler, event: Any) -> Any:
    """Deliver again after every MergeInProgress, as Pub/Sub does, until one is acked."""
    while True:
        try:
            return h.handle(event)
        except MergeInProgress:
            continue


@pytest.fixture
def small_pieces(stack: Stack) -> Any:
    """The function with 2 KiB pieces and a 0.6 s deadline (0.2 s of work per delivery)."""
    stack.restart_function({"MERGE_PIECE_BYTES": "2048", "ACK_DEADLINE_S": "0.6"})
    yield stack
    stack.restart_function({})


def test_a_large_merge_through_the_push_path_is_staged_and_lands_once(small_pieces: Stack) -> None:
    stack = small_pieces
    rows = klines("STAGEDPUSH")
    name = object_name("STAGEDPUSH", "1h")
    data, attrs, key = message(rows)
    stack.publish(data, attrs, key)
    wait_for(lambda: stack.read_object(name) == lines(rows), 60, what="the object")
    fix = corrected(rows[50:700], 5)
    data, attrs, key = message(fix, source="rest")
    merge_id = stack.publish(data, attrs, key)
    by_time = {r.open_time: r for r in rows} | {r.open_time: r for r in fix}
    want = lines([by_time[t] for t in sorted(by_time)])
    wait_for(lambda: stack.read_object(name) == want, 120, what="the merged object")

    def logs() -> list[dict[str, Any]]:
        return [r for r in stack.function_log_lines() if r.get("message_id") == merge_id]

    done = wait_for(lambda: [r for r in logs() if r.get("action") == "merge"], 30)
    deferred = [r for r in logs() if r.get("error") == "MergeInProgress"]
    assert len(done) == 1 and done[0]["rows_replaced"] == len(fix)
    assert deferred, "a 240 KB object in 2 KiB pieces (3 HTTP calls each) cannot fit 0.2 s"
    assert all(r["severity"] == "WARNING" for r in deferred)
    lost, duplicated = totals(stack.read_object(name), want)
    print(
        f"staged merge through the push path: {len(deferred) + 1} deliveries, "
        f"lost {lost}, duplicated {duplicated}"
    )
    assert (lost, duplicated) == (0, 0)
    wait_for(lambda: stack.store().list(f"staging/{name}") == [], 30, what="staging cleaned")
