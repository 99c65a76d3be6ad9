"""The health file's per-stream section (issue 15): serialised one stream per line, spliced
into the indented document unchanged, and rebuilt at a cadence that bounds its cost."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.health_report import _section, streams_refresh_s

entry = st.fixed_dictionaries({
    "ws_state": st.sampled_from(["live", "silent", "halted", "connecting"]),
    "last_closed_open_time": st.none() | st.integers(0, 2**53),
    "lag_ms": st.none() | st.integers(0, 2**40),
    "spool_depth": st.integers(0, 10**6),
    "ended": st.none() | st.fixed_dictionaries({"reason": st.text(max_size=20)}),
})  # fmt: skip


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=30), entry, max_size=20))
def test_the_section_is_the_same_json_as_the_entries(entries: dict[str, Any]) -> None:
    doc = orjson.dumps(
        {"state": "running", "streams": orjson.Fragment(_section(entries))},
        option=orjson.OPT_INDENT_2,
    )
    assert orjson.loads(doc) == {"state": "running", "streams": entries}
    # one stream per line: `grep BTCUSDC@1m health.json` shows a stream's whole entry
    assert len(doc.splitlines()) == (5 + len(entries) if entries else 4)


def test_the_section_is_rebuilt_every_write_for_a_few_thousand_streams_then_less_often() -> None:
    assert streams_refresh_s(1, 2.0) == 2.0
    assert streams_refresh_s(4_000, 2.0) == 2.0
    assert streams_refresh_s(24_000, 2.0) == 12.0
