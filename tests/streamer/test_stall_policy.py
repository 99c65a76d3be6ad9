"""Stall detection and the slot policy (pure): a halted stream among delivering ones is never a
reason to reconnect (issue 12 item 8); a connection on which everything is silent is."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from klinelake.core.intervals import HOUR, MINUTE
from streamer.slot_policy import Act, Decision, Replacement, SlotView, decide
from streamer.stall import RestVerdict, StallTracker, StreamState

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
CHECK_MS = 500  # the service checks every 0.2 s: (server ms) at speed 2.5


class Run:
    """A connection fed as the service feeds it: closed klines as they arrive, its frame
    counter at each check, and REST answers for the streams the verdict calls silent."""

    def __init__(self, streams: list[tuple[str, str]], grace: int, halted: set[str]) -> None:
        self.t = StallTracker(streams, T0 + 1, grace)
        self.streams, self.halted = dict(streams), halted
        self.frames, self.dead_at, self.rest_calls = 0, None, 0
        self.next_open = {s: T0 for s, _ in streams}
        self.verdicts: list[RestVerdict] = []

    def deliver_until(self, now: int, delay: int, silent_from: int | None = None) -> None:
        for s, iv in self.streams.items():
            step = MINUTE if iv == "1m" else HOUR
            while self.next_open[s] + step - 1 + delay <= now:
                arrives = self.next_open[s] + step - 1 + delay
                alive = silent_from is None or arrives < silent_from
                if s not in self.halted and alive:
                    self.t.on_closed(s, self.next_open[s], arrives)
                self.next_open[s] += step
        if silent_from is None or now < silent_from:
            self.frames += 1  # forming updates of the delivering streams

    def check(self, now: int) -> bool:
        self.t.on_frames(self.frames, now)
        v = self.t.verdict(now)
        if v.dead:
            return True
        for s in v.silent:
            window = self.t.rest_window(s, now)
            self.rest_calls += 1
            self.verdicts.append(self.t.on_rest(s, window, s not in self.halted, now))
        return False


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    delay=st.integers(1, 25_000),
    grace=st.sampled_from([5_000, 30_000, 600_000]),
    others=st.sampled_from([[("A@1m", "1m")], [("B@1h", "1h")], [("A@1m", "1m"), ("B@1h", "1h")]]),
)
def test_a_halted_stream_among_delivering_ones_never_looks_dead(
    delay: int, grace: int, others: list[tuple[str, str]]
) -> None:
    run = Run([("H@1m", "1m"), *others], grace, halted={"H@1m"})
    for now in range(T0 + CHECK_MS, T0 + 20 * MINUTE, CHECK_MS):
        run.deliver_until(now, min(delay, grace - 1))
        assert not run.check(now), f"reconnect at {now - T0} ms"
    assert run.t.state("H@1m") is StreamState.HALTED
    assert run.verdicts[0] is RestVerdict.HALTED and RestVerdict.LOST not in run.verdicts
    # asked again about once per interval (or grace, if longer) while halted
    assert run.rest_calls <= 20 * MINUTE // max(MINUTE, grace) + 2


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    silent_from=st.integers(T0 + 2 * MINUTE, T0 + 3 * HOUR),
    grace=st.sampled_from([5_000, 30_000, 600_000]),
    halt=st.booleans(),
)
def test_a_connection_on_which_everything_goes_silent_is_dead_soon(
    silent_from: int, grace: int, halt: bool
) -> None:
    streams = [("H@1m", "1m"), ("A@1m", "1m"), ("B@1h", "1h")]
    run = Run(streams, grace, halted={"H@1m"} if halt else set())
    now = T0
    while not run.check(now):
        assert now <= silent_from + 2 * MINUTE + grace + CHECK_MS, "a dead connection went unseen"
        now += CHECK_MS
        run.deliver_until(now, 3, silent_from=silent_from)
    assert now >= silent_from + grace, "dead before anything was overdue"


def test_resuming_after_a_halt_and_a_lost_subscription() -> None:
    t = StallTracker([("H@1m", "1m"), ("A@1m", "1m")], T0, 1_000)
    t.on_closed("A@1m", T0, T0 + MINUTE + 3)
    t.on_frames(1, T0 + MINUTE + 1_500)
    v = t.verdict(T0 + MINUTE + 1_500)
    assert not v.dead and v.silent == ("H@1m",) and t.state("H@1m") is StreamState.SILENT
    window = t.rest_window("H@1m", T0 + MINUTE + 1_500)
    assert window == (T0, T0)
    assert t.on_rest("H@1m", window, False, T0 + MINUTE + 1_500) is RestVerdict.HALTED
    assert t.verdict(T0 + MINUTE + 1_600).silent == ()
    t.on_closed("H@1m", T0 + 5 * MINUTE, T0 + 6 * MINUTE + 3)  # trading again
    assert t.state("H@1m") is StreamState.LIVE and t.resumed == ["H@1m"]
    # an answer about a stream that has delivered since is moot
    assert t.on_rest("H@1m", window, True, T0 + 6 * MINUTE) is RestVerdict.MOOT
    # silent again while REST has its klines: the subscription is lost
    for m in range(1, 8):
        t.on_closed("A@1m", T0 + m * MINUTE, T0 + (m + 1) * MINUTE + 3)
    t.on_frames(2, T0 + 8 * MINUTE)
    assert t.verdict(T0 + 8 * MINUTE).silent == ("H@1m",)
    window = t.rest_window("H@1m", T0 + 8 * MINUTE)
    assert t.on_rest("H@1m", window, True, T0 + 8 * MINUTE) is RestVerdict.LOST


def view(**kw: object) -> SlotView:
    return SlotView(alive=True, **kw)  # type: ignore[arg-type]


def test_slot_policy_table() -> None:
    cases: list[tuple[SlotView, Decision]] = [
        (SlotView(alive=False), Decision(Act.RECONNECT, "connection ended")),
        # every stream silent: one REST question first (a lone halted stream is not a stall)
        (
            view(dead=True, silent=("A", "B")),
            Decision(Act.WAIT, "every stream silent: asking REST", ("A",)),
        ),
        (
            view(dead=True, silent=("A", "B"), asking_rest=frozenset({"A"})),
            Decision(Act.WAIT, "every stream silent: waiting for REST"),
        ),
        (
            view(dead=True, silent=("A",), lost=("A",)),
            Decision(Act.RECONNECT, "silent on WS, klines on REST: A"),
        ),
        (
            view(dead=True, silent=("A",), unknown=("A",)),
            Decision(Act.RECONNECT, "stalled: every stream silent, REST unavailable"),
        ),
        (view(lost=("H",)), Decision(Act.RECONNECT, "silent on WS, klines on REST: H")),
        # one silent stream: ask REST, never reconnect
        (view(silent=("H", "K"), asking_rest=frozenset({"K"})), Decision(Act.WAIT, "", ("H",))),
        (view(shutdown_notice=True), Decision(Act.REPLACE, "serverShutdown")),
        (view(age_ms=10, max_age_ms=10), Decision(Act.REPLACE, "connection age")),
        (view(age_ms=10, max_age_ms=10, replacement=Replacement.PENDING), Decision(Act.WAIT)),
        (view(age_ms=10, max_age_ms=10, replacement_retry_due=False), Decision(Act.WAIT)),
        (
            view(replacement=Replacement.READY, silent=("H",)),
            Decision(Act.SWITCH, "replacement subscribed", ("H",)),
        ),
        (view(replacement=Replacement.FAILED), Decision(Act.RETRY_LATER, "replacement failed")),
        (view(), Decision(Act.WAIT)),
    ]
    for v, want in cases:
        assert decide(v) == want, v
