"""The weight budget: pure ledger (property-tested against a model server) and asyncio adapter."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from klinelake.binance.weight import Banned, WeightBudget, WeightLedger

W = 60_000


class ModelServer:
    """Binance's per-IP counter: fixed windows on the same clock, charged when a request is
    handled (some time after it was sent, possibly in a later window), reported in the header."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def handle(self, now: int, weight: int) -> int:
        window = now // W
        self.counts[window] = self.counts.get(window, 0) + weight
        return self.counts[window]


# One step of an interleaving: (op, a, b)
#   op 0: advance the clock by a*b ms; op 1: try to send a request of weight (a % 25) + 1
#   op 2: the server handles pending request #a; op 3: the response of handled request #a
#   arrives; op 4: request #a fails on the network (handled by the server or not: b odd)
steps = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 400), st.integers(0, 400)), max_size=300
)


@example(
    # a header-less failure, then an older request's lower header: the failure must still count
    steps=[(1, 0, 0), (1, 143, 0), (2, 0, 0), (4, 0, 1), (3, 0, 0), (1, 210, 0), (2, 0, 0)],
    share=0.05,
    grace=0,
    start=0,
)
@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    steps=steps,
    share=st.sampled_from([0.05, 0.3, 0.8, 1.0]),
    grace=st.sampled_from([0, 1_000]),
    start=st.integers(0, 10 * W),
)
def test_header_never_exceeds_budget_under_any_interleaving(
    steps: list[tuple[int, int, int]], share: float, grace: int, start: int
) -> None:
    ledger = WeightLedger(limit=600, share=share, grace_ms=grace)
    server = ModelServer()
    now = start
    sent: list[int] = []  # weights of requests sent, not yet handled
    handled: list[tuple[int, int]] = []  # (weight, header) handled, response not yet read
    headers: list[int] = []
    for op, a, b in steps:
        if op == 0:
            now += a * b
        elif op == 1:
            weight = a % 25 + 1
            if weight > ledger.budget:
                continue
            if ledger.try_reserve(now, weight) is None:
                sent.append(weight)
        elif op == 2 and sent:
            weight = sent.pop(a % len(sent))
            header = server.handle(now, weight)
            headers.append(header)
            handled.append((weight, header))
        elif op == 3 and handled:
            weight, header = handled.pop(a % len(handled))
            ledger.on_response(now, weight, header)
        elif op == 4 and sent:
            weight = sent.pop(a % len(sent))
            if b % 2:
                headers.append(server.handle(now, weight))
            ledger.on_response(now, weight, None)
    assert all(h <= ledger.budget for h in headers), (headers, ledger.budget)
    assert all(c <= ledger.budget for c in server.counts.values())


def test_reserves_before_sending_so_concurrency_cannot_overshoot() -> None:
    ledger = WeightLedger(limit=100, share=0.1)  # budget 10
    assert ledger.budget == 10
    for _ in range(5):
        assert ledger.try_reserve(1_000, 2) is None
    wake = ledger.try_reserve(1_000, 2)
    assert wake == W + 1_000  # the next window, once trusted
    ledger.on_response(1_500, 2, 2)  # one answered: used 2 + in flight 8 = 10 still
    assert ledger.try_reserve(1_600, 2) is not None
    assert ledger.charged == 10


def test_learns_other_users_of_the_ip_from_the_header() -> None:
    ledger = WeightLedger(limit=6000, share=0.8)
    assert ledger.try_reserve(0, 2) is None
    ledger.on_response(10, 2, 4790)  # someone else on this IP used most of it
    assert ledger.try_reserve(20, 20) is not None
    assert ledger.try_reserve(20, 10) is None
    assert ledger.max_header == 4790


def test_window_reset_is_trusted_only_after_grace() -> None:
    ledger = WeightLedger(limit=100, share=1.0, grace_ms=1_000)
    assert ledger.try_reserve(59_000, 60) is None
    ledger.on_response(59_500, 60, 100)
    assert ledger.try_reserve(60_200, 10) == 61_000  # in grace: old window still counts
    assert ledger.try_reserve(61_000, 10) is None


def test_429_pauses_everyone_until_retry_after() -> None:
    ledger = WeightLedger()
    ledger.on_rate_limited(10_000, 3)
    assert ledger.try_reserve(10_001, 2) == 13_000
    assert ledger.try_reserve(12_999, 2) == 13_000
    assert ledger.try_reserve(13_000, 2) is None


def test_418_ban_refuses_everything_until_it_ends() -> None:
    ledger = WeightLedger()
    ledger.on_banned(50_000)
    with pytest.raises(Banned) as info:
        ledger.try_reserve(49_999, 1)
    assert info.value.until_ms == 50_000
    assert ledger.try_reserve(50_000, 1) is None


def test_network_failure_counts_as_used() -> None:
    ledger = WeightLedger(limit=10, share=1.0)
    assert ledger.try_reserve(0, 6) is None
    ledger.on_response(5, 6, None)
    assert ledger.try_reserve(6, 6) is not None
    assert ledger.try_reserve(6, 4) is None


def test_bad_share_rejected() -> None:
    with pytest.raises(ValueError, match="share"):
        WeightLedger(share=0)


async def test_budget_waiters_wake_when_a_response_frees_weight() -> None:
    now = [1_000]
    budget = WeightBudget(limit=4, share=1.0, clock=lambda: now[0])
    await budget.acquire(4)
    waiter = asyncio.create_task(budget.acquire(2))
    done, _ = await asyncio.wait({waiter}, timeout=0.05)
    assert not done and budget.waits == 1
    await budget.release(4, None)  # counted as used: still full, waiter keeps waiting
    done, _ = await asyncio.wait({waiter}, timeout=0.05)
    assert not done
    now[0] = W + 1_000  # the window turns over
    await budget.release(0, None)  # any state change wakes waiters to re-check
    await asyncio.wait_for(waiter, 1)
    assert budget.waits == 1


async def test_budget_raises_banned() -> None:
    budget = WeightBudget(clock=lambda: 5)
    await budget.banned(1_000)
    with pytest.raises(Banned):
        await budget.acquire(1)
