"""The local stack enforces generation preconditions on every mutating call the lake writer
makes (issue 12 item 5): fake-gcs-server alone lets a stale resumable upload, compose and
delete through; through localcloud's proxy each is refused with a 412, as GCS refuses it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from klinelake.backends.gcs_store import GCSStore
from klinelake.core.errors import ObjectNotFound, PreconditionFailed
from klinelake.core.storage import Bounds
from localcloud.gcs import GcsPair, create_bucket, gcs_store, running_gcs


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsPair]:
    with running_gcs(tmp_path_factory.mktemp("gcs")) as pair:
        yield pair


def store_at(url: str, bucket: str) -> GCSStore:
    create_bucket(url, "test", bucket)
    return gcs_store(url, "test", bucket)


def streamed(data: bytes) -> Iterator[bytes]:
    yield data  # an iterable, not bytes: GCSStore streams it as a resumable upload


STALE_WRITES: dict[str, Callable[[GCSStore, str, int], Any]] = {
    "resumable upload": lambda s, n, g: s.write(n, streamed(b"late\n"), if_generation_match=g),
    "multipart upload": lambda s, n, g: s.write(n, b"late\n", if_generation_match=g),
    "compose": lambda s, n, g: s.compose(n, [n, "parts/p"], if_generation_match=g),
    "delete": lambda s, n, g: s.delete(n, if_generation_match=g),
    "merge (replace_from)": lambda s, n, g: s.replace_from(n, 2, [b"x\n"], g, None),
}


def stale_object(store: GCSStore, name: str) -> tuple[int, int]:
    """An object written twice: (stale generation, current generation)."""
    first = store.write(name, b"a\n", if_generation_match=0)
    second = store.write(name, b"a\nb\n", if_generation_match=first.generation)
    store.write("parts/p", b"p\n", if_generation_match=store.stat("parts/p").generation
                if store.stat("parts/p") else 0)  # fmt: skip
    return first.generation, second.generation


@pytest.mark.parametrize("how", list(STALE_WRITES))
def test_a_stale_write_is_refused_through_the_proxy(gcs: GcsPair, how: str) -> None:
    store = store_at(gcs.url, "proxied")
    name = f"raw/{how.split(maxsplit=1)[0]}.jsonl"
    stale, current = stale_object(store, name)
    with pytest.raises((PreconditionFailed, ObjectNotFound)):  # both mean: re-read, retry
        STALE_WRITES[how](store, name, stale)
    info = store.stat(name)
    assert info is not None and info.generation == current  # untouched
    assert store.read_range(name, 0, 100, current) == b"a\nb\n"


def test_fake_gcs_alone_lets_stale_writes_through(gcs: GcsPair) -> None:
    """Why the proxy exists (and what the test above would see without it)."""
    store = store_at(gcs.upstream_url, "direct")
    let_through = []
    for how in ("resumable upload", "compose", "delete"):
        name = f"raw/{how.split()[0]}.jsonl"
        stale, _ = stale_object(store, name)
        try:
            STALE_WRITES[how](store, name, stale)
            let_through.append(how)
        except PreconditionFailed:
            pass
    assert let_through == ["resumable upload", "compose", "delete"]


def test_prepend_by_compose_keeps_bounds_in_metadata(gcs: GcsPair) -> None:
    store = store_at(gcs.url, "compose")
    base = store.write("raw/c.jsonl", b"2\n", if_generation_match=0, bounds=Bounds(2, 2))
    store.write("staging/part", b"1\n", if_generation_match=0)
    out = store.compose(
        "raw/c.jsonl", ["staging/part", "raw/c.jsonl"], if_generation_match=base.generation,
        bounds=Bounds(1, 2),
    )  # fmt: skip
    assert store.read_range("raw/c.jsonl", 0, 10, out.generation) == b"1\n2\n"
    info = store.stat("raw/c.jsonl")
    assert info is not None and info.bounds == Bounds(1, 2)


def test_ranged_reads_split_lines_across_chunks(gcs: GcsPair, monkeypatch: Any) -> None:
    import klinelake.backends.gcs_store as gs

    monkeypatch.setattr(gs, "_READ_CHUNK", 7)  # rows straddle every chunk boundary
    store = store_at(gcs.url, "reads")
    body = b"".join(b"row %d\n" % i for i in range(50))
    info = store.write("raw/r.jsonl", body, if_generation_match=0)
    with store.open_lines("raw/r.jsonl", info.generation) as lines:
        assert b"".join(lines) == body
    with store.open_lines("raw/r.jsonl", info.generation, start=6) as lines:
        assert next(lines) == b"row 1\n"
    assert Path  # keeps the import for type hints above
