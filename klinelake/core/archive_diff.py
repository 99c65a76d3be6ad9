"""Comparing lake rows with Binance's archive rows (pure): every difference, by open time.

Both inputs ascending by open time. A row present on both sides whose canonical bytes differ is
`differs` (naming the fields); an archive row the lake lacks is `missing_from_lake`; a lake row
the archive lacks is `not_in_archive`. `bad_archive` and `unchecked` are added by the caller
(`klinelake.commands.verify_vision`) for archives that failed their CHECKSUM or are not published.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from klinelake.core.row import FIELDS, Kline

Kind = Literal["differs", "missing_from_lake", "not_in_archive", "bad_archive", "unchecked"]
FAILING: frozenset[Kind] = frozenset({"differs", "missing_from_lake", "not_in_archive",
                                      "bad_archive"})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Difference:
    stream: str
    kind: Kind
    open_time: int | None
    detail: str

    @property
    def failing(self) -> bool:
        return self.kind in FAILING


def field_diff(lake: Kline, archive: Kline) -> str:
    """`volume: lake '1.5' != archive '1.50000000'; ...` for the fields that differ."""
    a, b = lake.to_dict(), archive.to_dict()
    return "; ".join(f"{f}: lake {a[f]!r} != archive {b[f]!r}" for f in FIELDS if a[f] != b[f])


def diff_rows(stream: str, lake: Iterable[Kline], archive: Iterable[Kline]) -> Iterator[Difference]:
    """Merge-join two ascending row sequences (memory: one row of each)."""
    lake_it, arch_it = iter(lake), iter(archive)
    x, y = next(lake_it, None), next(arch_it, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x.open_time < y.open_time):
            assert x is not None
            yield Difference(stream, "not_in_archive", x.open_time, "the archive has no such row")
            x = next(lake_it, None)
        elif x is None or y.open_time < x.open_time:
            yield Difference(stream, "missing_from_lake", y.open_time, "the lake has no such row")
            y = next(arch_it, None)
        else:
            if x != y:
                yield Difference(stream, "differs", x.open_time, field_diff(x, y))
            x, y = next(lake_it, None), next(arch_it, None)
