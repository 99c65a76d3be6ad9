"""The supervisor's decisions, pure (streamer/listing.py, streamer/shards.py): when to re-read
exchangeInfo, how a retired stream ends (one final repair after its last close, then one log
line), and where a new listing's stream is subscribed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from klinelake.core.intervals import HOUR
from streamer.listing import end_step, listing_wait_s
from streamer.shards import slot_with_room

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR


@given(
    st.integers(0, 10**12), st.one_of(st.none(), st.integers(0, 10**12)),
    st.floats(0.1, 3600), st.floats(0.5, 1000),
)  # fmt: skip
def test_listing_wait_is_the_interval_or_the_next_delivery(
    now: int, due: int | None, interval_s: float, speed: float
) -> None:
    wait = listing_wait_s(now, due, interval_s, speed)
    assert 0.05 <= wait <= interval_s or wait == interval_s
    if due is None:
        assert wait == interval_s
    elif (due - now) / 1000 / speed < interval_s:  # the delivery comes first: wake for it
        assert wait == max(0.05, (due - now) / 1000 / speed)


def test_listing_wait_examples() -> None:
    assert listing_wait_s(0, None, 300.0, 1.0) == 300.0
    assert listing_wait_s(0, 10_000, 300.0, 1.0) == 10.0  # settles in 10 s
    assert listing_wait_s(0, 10_000, 300.0, 100.0) == 0.1  # at 100x: 0.1 real s
    assert listing_wait_s(10_000, 0, 300.0, 1.0) == 0.05  # overdue: at once, not a busy loop


def test_a_retired_stream_is_repaired_once_after_its_close_then_logged_once() -> None:
    last_open = T0  # its last kline opens at T0 and closes at T0 + 1 h
    logged = final_repair = False
    steps = []
    # every 10 min over 3 h; the final repair takes two looks to settle
    for i, now in enumerate(range(T0 - HOUR, T0 + 3 * HOUR, 600_000)):
        settled = final_repair and i % 2 == 0
        step = end_step(logged, final_repair, last_open, "1h", now_ms=now, sender_settled=settled)
        steps.append((now, step))
        final_repair |= step == "repair"
        logged |= step == "log"
    assert all(step == "wait" for now, step in steps if now < T0 + HOUR)  # not closed yet
    assert [s for _, s in steps].count("repair") == 1
    assert [s for _, s in steps].count("log") == 1
    first_repair = next(now for now, s in steps if s == "repair")
    assert first_repair == T0 + HOUR  # at the first look after the close
    assert next(now for now, s in steps if s == "log") > first_repair


@given(st.lists(st.integers(0, 5), max_size=8), st.integers(1, 5))
def test_a_new_stream_goes_to_the_first_slot_with_room(sizes: list[int], per: int) -> None:
    idx = slot_with_room(sizes, per)
    if idx is None:
        assert all(n >= per for n in sizes)
    else:
        assert sizes[idx] < per and all(n >= per for n in sizes[:idx])
