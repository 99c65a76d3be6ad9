"""The emitter's bookkeeping (backfill/emit_policy.py), driven the way StreamEmitter drives it:
pages arrive in order, full batches go as soon as they fill, the rest once the last page is in.
Whatever the page sizes and batch size: every row is sent once, in order; no batch is larger
than `batch_rows`; a page is marked done exactly once, and only after all of its rows went."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backfill.emit_policy import SEND_BUFFER_ROWS, batches_per_send, next_send_size, pages_sent


def drive(sizes: list[int], batch_rows: int) -> tuple[list[int], list[tuple[str, int]]]:
    """(the batches' sizes, (page key, rows sent when it was marked done) in marking order)."""
    buffered, page_ends, sent, batches, marks = 0, [], 0, [], []
    for i, size in enumerate(sizes):
        buffered += size
        page_ends.append((f"p{i}", buffered))
        final = i == len(sizes) - 1
        while (n := next_send_size(buffered, batch_rows, final, bool(page_ends))) is not None:
            batches.append(n)
            sent += n
            done, page_ends = pages_sent(page_ends, n)
            marks += [(key, sent) for key in done]
            buffered -= n
    return batches, marks


@given(st.lists(st.integers(0, 12), min_size=1, max_size=12), st.integers(1, 7))
def test_every_row_once_and_pages_done_only_when_sent(sizes: list[int], batch_rows: int) -> None:
    batches, marks = drive(sizes, batch_rows)
    assert sum(batches) == sum(sizes)
    assert all(0 <= b <= batch_rows for b in batches)
    assert all(b == batch_rows for b in batches[:-1] if b)  # only the tail batch is short
    assert [key for key, _ in marks] == [f"p{i}" for i in range(len(sizes))]
    for i, (_, sent_then) in enumerate(marks):
        assert sent_then >= sum(sizes[: i + 1])  # all of page i's rows were sent before


def test_waits_for_a_full_batch_until_the_last_page() -> None:
    assert next_send_size(3, 5, final=False, pages_pending=True) is None
    assert next_send_size(5, 5, final=False, pages_pending=True) == 5
    assert next_send_size(3, 5, final=True, pages_pending=True) == 3
    assert next_send_size(0, 5, final=True, pages_pending=True) == 0  # halts-only pages complete
    assert next_send_size(0, 5, final=True, pages_pending=False) is None


def test_pages_sent_shifts_the_rest() -> None:
    assert pages_sent([("a", 2), ("b", 5), ("c", 9)], 5) == (["a", "b"], [("c", 4)])


def test_writes_shrink_with_the_number_of_streams_never_below_one_batch() -> None:
    """The local lake takes 20 batches per write; the send buffers of every stream together
    stay within SEND_BUFFER_ROWS, or one batch each (what Pub/Sub and GCS always get)."""
    assert batches_per_send(20, 5000, 1) == 20
    assert batches_per_send(20, 5000, 30) == 3
    assert batches_per_send(20, 5000, 500) == 1
    assert batches_per_send(1, 5000, 1) == 1  # Pub/Sub, GCS
    assert batches_per_send(20, 24, 1) == 20
    for streams in range(1, 300):
        n = batches_per_send(20, 5000, streams)
        assert 1 <= n <= 20 and (n == 1 or streams * n * 5000 <= SEND_BUFFER_ROWS)
