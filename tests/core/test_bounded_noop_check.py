"""Issue 12 item 6, the last gap: the no-op check before a staged merge is bounded too.

A batch whose rows lie far apart in a large object (an operator's hand-made replay of two rows
a year apart, or any sparse batch) used to be diffed in one delivery over its whole time span,
i.e. over up to the whole object. Now a delivery reads at most a few pieces' worth of bytes
whatever the object's size: a span wider than one piece is diffed piece by piece, as staged
work, across deliveries. Checked against the reference merge (a dict, the batch winning)."""

from __future__ import annotations

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from klinelake.backends.lake import read_object
from klinelake.core.errors import MergeInProgress
from klinelake.core.row import Kline
from klinelake.core.staged_merge import MergeBudget
from klinelake.core.writer import LakeWriter, WriteResult
from tests.core.test_merge_property import NAME, row
from tests.core.test_staged_merge import Recording, deliver_until_done, ticking

_GAP = 5  # the object lacks every key k with k % _GAP == 3: batch rows there are added
_SEARCH_BYTES = 64 * 4096  # offset searches: O(log size) probes of 4 KiB (< 64 here)


def deliver_counting(
    writer: LakeWriter, store: Recording, batch: list[Kline]
) -> tuple[WriteResult, list[int]]:
    """Redeliver like Pub/Sub until acked; (the result, bytes read by each delivery)."""
    per_delivery: list[int] = []
    while True:
        store.bytes_read = 0
        try:
            result = writer.write_rows("ETHUSDT", "1m", batch)
        except MergeInProgress:
            per_delivery.append(store.bytes_read)
            continue
        per_delivery.append(store.bytes_read)
        return result, per_delivery


def object_keys(n: int) -> list[int]:
    return [k for k in range(n) if k % _GAP != 3]


# no shrinking: an example costs ~1 s (a 1 MB object), and the first failure is readable
@settings(max_examples=25, deadline=None, derandomize=True, phases=[Phase.generate])
@given(
    st.integers(1200, 2500),
    st.lists(st.tuples(st.integers(0, 4100), st.sampled_from([0, 0, 0, 1, 2])), max_size=12),
    st.integers(1, 3),
    st.integers(1500, 4000),
)
def test_the_no_op_check_reads_a_bounded_amount_per_delivery(
    object_rows: int, picks: list[tuple[int, int]], pieces_per_delivery: int, piece_bytes: int
) -> None:
    store = Recording()
    keys = object_keys(object_rows)
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in keys])
    before = store.stat(NAME)
    assert before is not None and before.size > 10 * piece_bytes  # always a staged merge
    budget = MergeBudget(work_s=3.0 * pieces_per_delivery, lease_s=60, piece_bytes=piece_bytes)
    writer = LakeWriter(store, merge_budget=budget, clock=ticking(1.0))
    # a sparse batch: its rows anywhere in the object (or after it), a variant per row
    chosen = dict(picks)
    batch = [row(k, v) for k, v in sorted(chosen.items())]
    if not batch:
        batch = [row(keys[0]), row(keys[-1])]  # the two ends: the widest no-op there is
    present = set(keys)
    is_noop = all(r.open_time // 60_000 - row(0).open_time // 60_000 in present for r in batch)
    is_noop = is_noop and all(v == 0 for v in chosen.values())

    writes_before = len(store.writes)
    result, per_delivery = deliver_counting(writer, store, batch)

    # bounded per delivery, independent of the object's size (up to ~1.3 MB here)
    bound = (pieces_per_delivery + 3) * (piece_bytes + 16 * 1024) + _SEARCH_BYTES
    assert max(per_delivery) <= bound, (per_delivery, bound, before.size)

    want = {k: row(k).to_line() for k in keys}
    want.update({r.open_time // 60_000 - row(0).open_time // 60_000: r.to_line() for r in batch})
    assert read_object(store, NAME) == b"".join(want[k] for k in sorted(want))
    assert store.list("staging/") == []
    if is_noop:
        assert result.action == "noop"
        assert result.rows_unchanged == len(batch)
        assert store.stat(NAME) == before  # the object was never written
        assert [n for n, _ in store.writes[writes_before:] if n == NAME] == []
    else:
        assert result.action in ("merge", "append")
        added = sum(1 for r in batch if r.open_time // 60_000 - row(0).open_time // 60_000
                    not in present)  # fmt: skip
        assert result.rows_added == added
        assert result.rows_added + result.rows_replaced + result.rows_unchanged == len(batch)
    # a redelivery after it is acked is a no-op that leaves the object and staging as they were
    after = store.stat(NAME)
    again, per_delivery = deliver_counting(writer, store, batch)
    assert again.action == "noop" and store.stat(NAME) == after
    assert max(per_delivery) <= bound
    assert store.list("staging/") == []


def test_two_rows_a_year_apart_are_a_bounded_no_op() -> None:
    """The example from the issue, scaled: the object's first and last rows sent again."""
    store = Recording()
    keys = object_keys(6000)
    LakeWriter(store).write_rows("ETHUSDT", "1m", [row(k) for k in keys])
    before = store.stat(NAME)
    assert before is not None
    budget = MergeBudget(work_s=3.0, lease_s=60, piece_bytes=4096)
    writer = LakeWriter(store, merge_budget=budget, clock=ticking(1.0))
    result, _ = deliver_until_done(writer, [row(keys[0]), row(keys[-1])])
    assert result.action == "noop" and result.rows_unchanged == 2
    assert store.stat(NAME) == before
    _, per_delivery = deliver_counting(writer, store, [row(keys[0]), row(keys[-1])])
    # per delivery: a piece or two and a few offset searches (O(log size) 4 KiB probes each),
    # where the check used to read the whole object (the span between the two rows)
    assert max(per_delivery) < before.size // 10, (per_delivery, before.size)
    assert store.stat(NAME) == before
