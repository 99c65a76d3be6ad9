"""The emitter's bookkeeping as pure functions: how many buffered rows to send next, and which
pages that send completes (a page is done only once every one of its rows was sent)."""

from __future__ import annotations

from collections.abc import Sequence

# What all streams' send buffers may hold at once (~200 MB of 1m lines): each stream buffers
# a whole write before sending it, so with many streams each gets smaller writes.
SEND_BUFFER_ROWS = 500_000


def batches_per_send(sink_batches: int, batch_rows: int, streams: int) -> int:
    """Contract batches of `batch_rows` per sink write: as many as the sink takes at once
    (`sink_batches`: the local lake several, Pub/Sub and GCS one), as long as `streams` send
    buffers of that size fit SEND_BUFFER_ROWS together; never fewer than one."""
    by_memory = SEND_BUFFER_ROWS // max(1, streams * batch_rows)
    return max(1, min(sink_batches, by_memory))


def next_send_size(buffered: int, batch_rows: int, final: bool, pages_pending: bool) -> int | None:
    """Rows to send now from a buffer of `buffered`: a full batch whenever there is one; once the
    stream's pages are all in (`final`), whatever is left of its pending pages (0 rows still
    sends a page's halts and completes it); None: wait for more pages."""
    if buffered >= batch_rows:
        return batch_rows
    if final and pages_pending:
        return buffered
    return None


def pages_sent(
    page_ends: Sequence[tuple[str, int]], n: int
) -> tuple[list[str], list[tuple[str, int]]]:
    """After sending the first `n` buffered rows: (keys of the pages whose rows all went, the
    other pages' ends shifted by `n`). `page_ends` holds (page key, end index in the buffer)."""
    done = [key for key, end in page_ends if end <= n]
    return done, [(key, end - n) for key, end in page_ends if end > n]
