"""A stale-generation write on the local stack (issue 12 item 5, fault-suite style): two
writers race on one object through the stack's GCS; the one that acts on what it read before
the other's write is refused (412 from the enforcing proxy), re-reads and retries. Printed
totals: lost 0, duplicated 0."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from klinelake.backends.lake import read_object
from klinelake.core.row import Kline
from klinelake.core.storage import Bounds, ObjectInfo
from klinelake.core.symbols import object_name
from klinelake.core.writer import LakeWriter
from localcloud import Stack
from tests.function.helpers import klines, lines


class Interleaving:
    """A store that lets another writer in just before this one's next mutation."""

    def __init__(self, inner: Any, before_mutation: Any) -> None:
        self.inner = inner
        self.before_mutation = before_mutation

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _race(self) -> None:
        hook, self.before_mutation = self.before_mutation, None
        if hook is not None:
            hook()

    def replace_from(
        self, name: str, offset: int, data: Iterable[bytes], if_generation_match: int,
        bounds: Bounds | None = None,
    ) -> ObjectInfo:  # fmt: skip
        self._race()
        return self.inner.replace_from(name, offset, data, if_generation_match, bounds)  # type: ignore[no-any-return]

    def compose(
        self, name: str, sources: list[str], if_generation_match: int,
        bounds: Bounds | None = None,
    ) -> ObjectInfo:  # fmt: skip
        self._race()
        return self.inner.compose(name, sources, if_generation_match, bounds)  # type: ignore[no-any-return]


def _totals(got: bytes, want: list[Kline]) -> tuple[int, int]:
    have = got.splitlines(keepends=True)
    expected = set(lines(want).splitlines(keepends=True))
    return len(expected - set(have)), len(have) - len(set(have))


def test_stale_generation_writes_are_refused_on_the_stack_and_retried(stack: Stack) -> None:
    rows = klines("STALEGEN", 60)
    name = object_name("STALEGEN", "1h")
    store = stack.store()
    other = LakeWriter(store)
    other.write_rows("STALEGEN", "1h", rows[20:40])

    # 1. a merge streamed back under a generation another writer replaced meanwhile
    racing = LakeWriter(
        Interleaving(store, lambda: other.write_rows("STALEGEN", "1h", rows[40:50])),
        sleep=lambda _s: None,
    )  # fmt: skip
    merged = racing.write_rows("STALEGEN", "1h", rows[10:30])
    assert merged.action in ("merge", "prepend") and merged.precondition_retries >= 1

    # 2. a live append from a writer whose cached generation went stale
    racing.store = Interleaving(store, lambda: other.write_rows("STALEGEN", "1h", rows[50:55]))
    appended = racing.write_rows("STALEGEN", "1h", rows[55:60])
    assert appended.action == "append" and appended.precondition_retries >= 1

    # 3. history prepended by compose, racing another prepend
    racing.store = Interleaving(store, lambda: other.write_rows("STALEGEN", "1h", rows[5:10]))
    prepended = racing.write_rows("STALEGEN", "1h", rows[0:5])
    assert prepended.precondition_retries >= 1

    lost, duplicated = _totals(read_object(store, name), rows)
    print(f"stale-generation writes on the stack: lost {lost}, duplicated {duplicated}")
    assert read_object(store, name) == lines(rows)
    assert (lost, duplicated) == (0, 0)
    assert store.list("staging/") == []
