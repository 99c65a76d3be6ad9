"""A REST page held as open times and lines (row.StreamRows: what gap repair fetches) is spooled
as it is, with no Kline parsed back per row, and the spool ends up as `add` leaves it."""

from __future__ import annotations

from itertools import repeat
from pathlib import Path

import pytest

from klinelake.core import row as lake_row
from klinelake.core.markets import Market
from klinelake.core.row import StreamRows
from streamer.spool import Spool
from tests.streamer.test_spool_sender import SID, k


def test_lines_are_spooled_as_add_spools_the_klines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [k(i) for i in range(20)]
    page = StreamRows.of("AAAUSDC", "1m", Market.SPOT, rows)
    as_klines, as_lines = Spool(tmp_path / "a.sqlite3"), Spool(tmp_path / "b.sqlite3")
    for spool in (as_klines, as_lines):
        spool.open()
        spool.ack(SID, rows[4].open_time)  # rows up to here were published: both drop them
    assert as_klines.add([(SID, r) for r in rows], source="rest") == {SID}

    def parsed(*args: object, **kw: object) -> None:
        raise AssertionError("a line was parsed back into a Kline")

    monkeypatch.setattr(lake_row, "parse_lake_line", parsed)
    got = as_lines.add_lines(zip(repeat(SID), page.open_times, page.lines), source="rest")
    monkeypatch.undo()
    assert got == {SID}
    assert as_lines.peek(SID, 100) == as_klines.peek(SID, 100) == (rows[5:], "rest")
