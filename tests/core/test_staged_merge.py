"""Issue 12 item 6: a merge never needs longer than the ack deadline, and overlapping
deliveries of one slow merge do its work once.

The function's writer carries a `MergeBudget`; a merge into an object larger than a piece is
staged over deliveries (each raising MergeInProgress until the last composes), under a
per-object lease (a second delivery meanwhile raises LeaseHeld and writes nothing)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.errors import LeaseHeld, MergeInProgress
from klinelake.core.lease import Lease, held, lease_name, seconds_left
from klinelake.core.row import Kline
from klinelake.core.staged_merge import MergeBudget
from klinelake.core.storage import Bounds, Data, ObjectInfo, ObjectNames
from klinelake.core.writer import LakeWriter, WriteResult
from tests.core.memory_store import MemoryStore
from tests.core.test_merge_property import NAME, row

# --- pure policy ---------------------------------------------------------------------------


def test_budget_from_the_ack_deadline() -> None:
    budget = MergeBudget.for_ack_deadline(300, piece_bytes=1000)
    assert (budget.work_s, budget.lease_s) == (100, 300)
    assert not budget.staged(1000) and budget.staged(1001)
    assert budget.may_start_piece(0, 0)
    assert budget.may_start_piece(60, 40) and not budget.may_start_piece(60, 40.1)
    with pytest.raises(ValueError, match="positive"):
        MergeBudget.for_ack_deadline(0)


def test_lease_expiry_policy() -> None:
    lease = Lease("a", expires_at=100.0)
    assert lease.live(99.9) and not lease.live(100.0)
    assert seconds_left(lease, 40) == 60 and seconds_left(lease, 140) == 0
    assert Lease.decode(lease.encode()) == lease
    for torn in (b"", b"{", b'{"holder": "a"}', b'{"holder": "a", "expires_at": "x"}'):
        assert Lease.decode(torn) is None  # unreadable: treated as expired, taken over
    assert seconds_left(None, 0) == 0


# --- the lease over a store ----------------------------------------------------------------


def test_a_live_lease_defers_a_second_holder_and_a_stale_one_is_taken_over() -> None:
    store, now = MemoryStore(), [1000.0]
    with held(store, NAME, 300, clock=lambda: now[0]) as mine:
        with (
            pytest.raises(LeaseHeld, match=r"held by delivery \w+ for 300 s more"),
            held(store, NAME, 300, clock=lambda: now[0]),
        ):
            pass
        assert mine.holder in store.objects[lease_name(NAME)][1].decode()
    assert store.list("staging/") == []  # released

    # a holder that crashed never releases: its lease blocks until it expires, then is taken
    crashed = held(store, NAME, 300, clock=lambda: now[0])
    crashed.__enter__()
    now[0] += 299
    with pytest.raises(LeaseHeld), held(store, NAME, 300, clock=lambda: now[0]):
        pass
    now[0] += 1
    with held(store, NAME, 300, clock=lambda: now[0]) as taker:
        assert taker.holder in store.objects[lease_name(NAME)][1].decode()
    assert store.list("staging/") == []
    # the crashed holder's late release does not remove anyone else's lease
    with held(store, NAME, 300, clock=lambda: now[0]):
        crashed.__exit__(None, None, None)
        assert lease_name(NAME) in store.objects


class LostReply(MemoryStore):
    """A conditional write whose first attempt lands but whose reply is lost: the client's
    retry, under the same precondition, is refused (412), as on GCS."""

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: Bounds | None = None
    ) -> ObjectInfo:
        super().write(name, data, if_generation_match, bounds)
        return super().write(name, data, if_generation_match, bounds)  # the retry: 412


def test_a_lease_whose_create_reply_was_lost_is_still_ours() -> None:
    """The 412 of a retried create is our own lease: held, and released at the end (it used to
    defer the delivery as "held by" itself and block the object until the lease expired)."""
    store, now = LostReply(), [1000.0]
    with held(store, NAME, 300, clock=lambda: now[0]) as mine:
        assert mine.holder in store.objects[lease_name(NAME)][1].decode()
    assert store.list("staging/") == []  # released
    # the same for the take-over of a stale lease (a crashed holder's)
    MemoryStore.write(store, lease_name(NAME), Lease("crashed", 900.0).encode(), 0)
    with held(store, NAME, 300, clock=lambda: now[0]) as mine:
        assert mine.holder in store.objects[lease_name(NAME)][1].decode()
    assert store.list("staging/") == []


# --- the staged merge ----------------------------------------------------------------------


class Recording(MemoryStore):
    """Counts bytes uploaded per write and lets a test act just before a write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int]] = []
        self.before_write: Callable[[str], None] | None = None

    def write(
        self, name: str, data: Data, if_generation_match: int, bounds: Bounds | None = None
    ) -> ObjectInfo:
        body = data if isinstance(data, bytes) else b"".join(data)
        if self.before_write is not None:
            self.before_write(name)
        self.writes.append((name, len(body)))
        return super().write(name, body, if_generation_match, bounds)

    def replace_from(
        self, name: str, offset: int, data: Iterable[bytes], if_generation_match: int,
        bounds: Bounds | None,
    ) -> ObjectInfo:  # fmt: skip
        body = b"".join(data)
        self.writes.append((name, offset + len(body)))  # GCS uploads the head again
        return super().replace_from(name, offset, [body], if_generation_match, bounds)


def ticking(step: float) -> Callable[[], float]:
    """A clock that advances `step` seconds at every reading: each piece looks slow."""
    counter = itertools.count()
    return lambda: next(counter) * step


def deliver_until_done(writer: LakeWriter, rows: list[Kline]) -> tuple[WriteResult, int]:
    """Redeliver like Pub/Sub until the message is acked; (result, deliveries)."""
    for deliveries in itertools.count(1):
        try:
            return writer.write_rows("ETHUSDT", "1m", rows), deliveries
        except MergeInProgress:
            continue
    raise AssertionError("unreachable")


@settings(max_examples=60, deadline=None)
@given(
    st.integers(20, 300),
    st.lists(st.integers(0, 320), min_size=1, max_size=40),
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(150, 2000),  # from under one row (~330 bytes: empty pieces) to several rows
)
def test_a_large_merge_is_staged_within_the_budget_and_gives_the_same_bytes(
    object_rows: int, keys: list[int], variant: int, pieces_per_delivery: int, piece_bytes: int
) -> None:
    store = Recording()
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in range(object_rows)])
    # every reading of the clock is 1 s on; the budget allows `pieces_per_delivery` pieces
    budget = MergeBudget(work_s=3.0 * pieces_per_delivery, lease_s=60, piece_bytes=piece_bytes)
    writer = LakeWriter(store, merge_budget=budget, clock=ticking(1.0))
    batch = [row(k, variant) for k in sorted(set(keys))]
    before = len(store.writes)

    result, _ = deliver_until_done(writer, batch)

    wanted = {k: row(k).to_line() for k in range(object_rows)}
    wanted.update({r.open_time // 60_000 - row(0).open_time // 60_000: r.to_line() for r in batch})
    assert read_object(store, NAME) == b"".join(wanted[k] for k in sorted(wanted))
    assert store.list("staging/") == []  # pieces and lease gone
    batch_bytes = sum(len(r.to_line()) for r in batch)
    for name, nbytes in store.writes[before:]:  # no upload grows with the object
        assert nbytes <= piece_bytes + 1024 + batch_bytes, name
    staged = budget.staged(store.stat(NAME).size)  # type: ignore[union-attr]
    if result.action == "merge" and staged:
        assert result.storage_calls.get("replace_from", 0) == 0
    # a redelivery after the commit is a no-op that leaves the object as it is (a batch wider
    # than a piece is checked piece by piece, over deliveries: test_bounded_noop_check.py)
    committed, mark = store.stat(NAME), len(store.writes)
    again, _ = deliver_until_done(writer, batch)
    assert again.action == "noop" and store.stat(NAME) == committed
    assert [n for n, _ in store.writes[mark:] if n == NAME] == []
    assert store.list("staging/") == []


def test_a_delivery_never_uploads_the_whole_object() -> None:
    """The red-before-the-fix example: a 2,000-row object, 10 rows merged into its middle."""
    store = Recording()
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in range(2000)])
    size = store.stat(NAME).size  # type: ignore[union-attr]
    budget = MergeBudget(work_s=5.0, lease_s=60, piece_bytes=size // 20)
    writer = LakeWriter(store, merge_budget=budget, clock=ticking(1.0))
    before = len(store.writes)
    result, deliveries = deliver_until_done(writer, [row(k, 7) for k in range(1000, 1010)])
    assert result.action == "merge" and result.rows_replaced == 10
    assert deliveries > 1
    assert max(n for _, n in store.writes[before:]) < size // 10


def test_overlapping_deliveries_do_the_work_once() -> None:
    """Delivery B arrives while delivery A is staging: B costs a lease check and writes no
    piece; A's redeliveries finish the merge; every piece is uploaded exactly once."""
    store = Recording()
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in range(600)])
    size = store.stat(NAME).size  # type: ignore[union-attr]
    budget = MergeBudget(work_s=4.0, lease_s=60, piece_bytes=size // 6)
    now = [0.0]
    a = LakeWriter(store, merge_budget=budget, clock=ticking(1.0), wall_clock=lambda: now[0])
    b = LakeWriter(store, merge_budget=budget, clock=ticking(1.0), wall_clock=lambda: now[0])
    batch = [row(k, 3) for k in range(100, 500, 7)]
    deferred: list[Exception] = []

    def b_arrives(name: str) -> None:
        if name.endswith(".piece") and not deferred:
            mark = len(store.writes)
            with pytest.raises(LeaseHeld) as exc:
                b.write_rows("ETHUSDT", "1m", batch)
            deferred.append(exc.value)
            # B's only write was its lease create, refused: no piece, no object
            assert [n for n, _ in store.writes[mark:]] == [lease_name(NAME)]

    store.before_write = b_arrives
    result, deliveries = deliver_until_done(a, batch)
    store.before_write = None
    assert deferred and result.action == "merge" and deliveries > 1
    pieces = [n for n, _ in store.writes if n.endswith(".piece")]
    assert len(pieces) == len(set(pieces)) >= 6  # each piece uploaded once
    assert deliver_until_done(b, batch)[0].action == "noop"  # B's redeliveries: acked
    want = [row(k, 3) if 100 <= k < 500 and (k - 100) % 7 == 0 else row(k) for k in range(600)]
    assert read_object(store, NAME) == b"".join(r.to_line() for r in want)
    assert store.list("staging/") == []


def test_the_local_lake_stages_the_same_way(tmp_path: Path) -> None:
    """The lease and the pieces go through the ObjectStore interface: the local lake (flock,
    journal) takes the same route, and clean_leftovers knows its staging objects."""
    store = LocalStore(tmp_path / "lake")
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in range(500)])
    size = store.stat(NAME).size  # type: ignore[union-attr]
    budget = MergeBudget(work_s=4.0, lease_s=60, piece_bytes=size // 7)
    writer = LakeWriter(store, merge_budget=budget, clock=ticking(1.0))
    batch = [row(k, 9) for k in range(40, 460, 3)]
    # the batch spans most of the object: its no-op check is staged first, then the pieces
    with pytest.raises(MergeInProgress, match=r"no-op check covered \d+ batch rows"):
        writer.write_rows("ETHUSDT", "1m", batch)
    assert store.list("staging/")  # the check's markers and changed pieces wait
    result, _ = deliver_until_done(writer, batch)
    assert result.action == "merge" and result.rows_replaced == len(batch)
    want = [row(k, 9) if 40 <= k < 460 and (k - 40) % 3 == 0 else row(k) for k in range(500)]
    assert read_object(store, NAME) == b"".join(r.to_line() for r in want)
    assert store.list("staging/") == []


def test_a_delivery_killed_mid_staging_blocks_until_its_lease_expires_then_completes() -> None:
    """SIGKILL runs no `finally`: the lease and some pieces stay. Redeliveries are deferred
    (writing nothing) until the lease expires, then one takes it over, reuses the pieces and
    commits; the object is untouched until then."""
    store = Recording()
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in range(400)])
    before = read_object(store, NAME)
    size = store.stat(NAME).size  # type: ignore[union-attr]
    budget = MergeBudget(work_s=4.0, lease_s=300, piece_bytes=size // 5)
    now = [5000.0]
    writer = LakeWriter(store, merge_budget=budget, clock=ticking(1.0), wall_clock=lambda: now[0])
    batch = [row(k, 4) for k in range(10, 390, 11)]
    with pytest.raises(MergeInProgress):
        writer.write_rows("ETHUSDT", "1m", batch)
    made = {n for n, _ in store.writes if n.endswith(".piece")}
    assert made
    # the killed delivery's lease, as it would have left it
    store.write(lease_name(NAME), Lease("killed", now[0] + 300).encode(), if_generation_match=0)
    now[0] += 299
    mark = len(store.writes)
    with pytest.raises(LeaseHeld, match="held by delivery killed for 1 s more"):
        writer.write_rows("ETHUSDT", "1m", batch)
    assert [n for n, _ in store.writes[mark:]] == [lease_name(NAME)]  # the refused create only
    assert read_object(store, NAME) == before
    now[0] += 1
    result, _ = deliver_until_done(writer, batch)
    assert result.action == "merge" and result.rows_replaced == len(batch)
    remade = [n for n, _ in store.writes[mark:] if n in made]
    assert remade == []  # the killed delivery's pieces were reused, not uploaded again
    assert store.list("staging/") == []


class LostCommit(MemoryStore):
    """The compose that commits a staged merge lands, its reply is lost, and the client's
    retry under the same precondition is refused (412), as on GCS."""

    def compose(
        self,
        name: str,
        sources: ObjectNames,
        if_generation_match: int,
        bounds: Bounds | None = None,
    ) -> ObjectInfo:
        after = super().compose(name, sources, if_generation_match, bounds)
        if name == NAME:
            return super().compose(name, sources, if_generation_match, bounds)  # the retry: 412
        return after


def test_a_commit_whose_reply_was_lost_lands_once_and_leaves_no_pieces() -> None:
    store = LostCommit()
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in range(300)])
    size = store.stat(NAME).size  # type: ignore[union-attr]
    budget = MergeBudget(work_s=100.0, lease_s=60, piece_bytes=size // 4)
    writer = LakeWriter(store, merge_budget=budget, clock=ticking(1.0))
    batch = [row(k, 3) for k in (10, 150, 290)]
    result, _ = deliver_until_done(writer, batch)
    assert result.action == "noop"  # the retry found the batch in the object
    wanted = {k: row(k).to_line() for k in range(300)}
    wanted.update({k: row(k, 3).to_line() for k in (10, 150, 290)})
    assert read_object(store, NAME) == b"".join(wanted[k] for k in sorted(wanted))
    assert store.list("staging/") == []  # the old generation's pieces are of no use any more
