"""The local backend enforces generations exactly as GCS documents them, and is atomic."""

from __future__ import annotations

import os

import pytest

from klinelake.backends.local_store import LocalStore, escape_name, unescape_name
from klinelake.core.errors import ObjectNotFound, PreconditionFailed


def test_generation_preconditions(tmp_path: os.PathLike[str]) -> None:
    s = LocalStore(tmp_path)
    a = s.write("raw/a.jsonl", b"1\n", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        s.write("raw/a.jsonl", b"2\n", if_generation_match=0)  # exists
    with pytest.raises(PreconditionFailed):
        s.write("raw/a.jsonl", b"2\n", if_generation_match=a.generation + 1)
    b = s.write("raw/a.jsonl", b"2\n", if_generation_match=a.generation)
    assert b.generation > a.generation
    p = s.write("staging/p", b"3\n", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        s.compose("raw/a.jsonl", ["raw/a.jsonl", "staging/p"], if_generation_match=a.generation)
    c = s.compose("raw/a.jsonl", ["raw/a.jsonl", "staging/p"], if_generation_match=b.generation)
    assert c.generation > b.generation and c.size == 4
    with pytest.raises(PreconditionFailed):
        s.delete("staging/p", if_generation_match=p.generation + 5)
    s.delete("staging/p", if_generation_match=p.generation)
    with pytest.raises(ObjectNotFound):
        s.delete("staging/p")
    with pytest.raises(PreconditionFailed):
        s.read_range("raw/a.jsonl", 0, 10, b.generation)
    assert s.read_range("raw/a.jsonl", c.size - 2, c.size, c.generation) == b"3\n"
    with s.open_lines("raw/a.jsonl", c.generation) as lines:
        assert list(lines) == [b"2\n", b"3\n"]
    assert [o.name for o in s.list("raw/")] == ["raw/a.jsonl"]
    assert s.stat("raw/missing") is None


def test_compose_into_new_object_and_32_source_limit(tmp_path: os.PathLike[str]) -> None:
    s = LocalStore(tmp_path)
    for i in range(3):
        s.write(f"p/{i}", f"{i}\n".encode(), if_generation_match=0)
    out = s.compose("c", [f"p/{i}" for i in range(3)], if_generation_match=0)
    assert out.size == 6
    with pytest.raises(ValueError, match="1 to 32"):
        s.compose("c", ["p/0"] * 33, if_generation_match=out.generation)


def test_case_sensitive_names_never_collide(tmp_path: os.PathLike[str]) -> None:
    s = LocalStore(tmp_path)
    s.write("raw/binance_btcusdc_1m.jsonl", b"minute\n", if_generation_match=0)
    s.write("raw/binance_btcusdc_1M.jsonl", b"month\n", if_generation_match=0)
    files = sorted(os.listdir(os.path.join(tmp_path, "raw")))
    assert [f.lower() for f in files] == sorted(
        {f.lower() for f in files}
    )  # distinct ignoring case
    assert {o.name for o in s.list("raw/")} == {
        "raw/binance_btcusdc_1m.jsonl",
        "raw/binance_btcusdc_1M.jsonl",
    }


@pytest.mark.parametrize("name", ["raw/币安_1M.jsonl", "a%b", "x/.hidden", "UPPER/lower"])
def test_escape_roundtrip(name: str) -> None:
    esc = escape_name(name)
    assert esc == esc.lower() and unescape_name(esc) == name
    assert not any(part.startswith(".") for part in esc.split("/"))


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "./a"])
def test_traversal_refused(name: str) -> None:
    with pytest.raises(ValueError):
        escape_name(name)


def test_crash_mid_append_is_rolled_back(tmp_path: os.PathLike[str]) -> None:
    """Simulate a process dying after it wrote the journal and half the appended bytes."""
    s = LocalStore(tmp_path)
    info = s.write("raw/a.jsonl", b"row1\n", if_generation_match=0)
    journal = s._meta("journal", "raw/a.jsonl")
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_bytes(b'{"size":%d,"generation":%d}' % (info.size, info.generation))
    with open(s._path("raw/a.jsonl"), "ab") as f:
        f.write(b"ro")  # torn append
    after = s.stat("raw/a.jsonl")  # the next process to lock the object repairs it
    assert after == info
    assert s.read_range("raw/a.jsonl", 0, 100, info.generation) == b"row1\n"
    assert not journal.exists()


def test_append_in_place_is_compose_without_the_part(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`append` makes what `compose(name, [name, part])` makes, under the same precondition,
    and a crash after part of the bytes went in is rolled back by the next lock holder."""
    s = LocalStore(tmp_path)
    with pytest.raises(PreconditionFailed):
        s.append("raw/a.jsonl", b"row1\n", if_generation_match=1)  # no such object
    info = s.write("raw/a.jsonl", b"row1\n", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        s.append("raw/a.jsonl", b"row2\n", if_generation_match=info.generation + 1)
    after = s.append("raw/a.jsonl", b"row2\n", if_generation_match=info.generation)
    assert after.generation > info.generation and after.size == 10
    assert s.read_range("raw/a.jsonl", 0, 100, after.generation) == b"row1\nrow2\n"
    assert s.stat("raw/a.jsonl") == after and not s.list("staging/")

    def crash(fd: int) -> None:  # the process dies once the bytes are written, before fsync
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        s.append("raw/a.jsonl", b"row3\n", if_generation_match=after.generation)
    monkeypatch.undo()
    assert s.stat("raw/a.jsonl") == after  # the journal rolled the torn append back
    assert s.read_range("raw/a.jsonl", 0, 100, after.generation) == b"row1\nrow2\n"


def test_failed_write_leaves_old_object(tmp_path: os.PathLike[str]) -> None:
    s = LocalStore(tmp_path)
    info = s.write("raw/a.jsonl", b"old\n", if_generation_match=0)

    def chunks() -> object:
        yield b"new-partial"
        raise RuntimeError("crash mid-upload")

    with pytest.raises(RuntimeError):
        s.write("raw/a.jsonl", chunks(), if_generation_match=info.generation)  # type: ignore[arg-type]
    assert s.stat("raw/a.jsonl") == info
    assert s.read_range("raw/a.jsonl", 0, 100, info.generation) == b"old\n"
    assert not list((tmp_path / ".klinelake" / "tmp").iterdir())  # type: ignore[operator]


def test_crash_mid_rewrite_is_rolled_back(tmp_path: os.PathLike[str]) -> None:
    """A process died after saving the old suffix, writing the journal and half the new bytes."""
    s = LocalStore(tmp_path)
    info = s.write("raw/a.jsonl", b"row1\nrow2\nrow3\n", if_generation_match=0)
    s._begin_in_place("raw/a.jsonl", s._path("raw/a.jsonl"), 5, info.generation)
    with open(s._path("raw/a.jsonl"), "r+b") as f:
        f.seek(5)
        f.write(b"new1\nne")  # torn rewrite
    assert s.stat("raw/a.jsonl") == info  # the next process to lock the object repairs it
    assert s.read_range("raw/a.jsonl", 0, 100, info.generation) == b"row1\nrow2\nrow3\n"
    assert not list((tmp_path / ".klinelake" / "journal").iterdir())  # type: ignore[operator]


def test_replace_from_keeps_the_head_and_is_atomic(tmp_path: os.PathLike[str]) -> None:
    s = LocalStore(tmp_path)
    info = s.write("raw/a.jsonl", b"row1\nrow2\n", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        s.replace_from("raw/a.jsonl", 5, [b"x\n"], info.generation + 1, None)

    def chunks() -> object:
        yield b"half"
        raise RuntimeError("crash while producing the new bytes")

    with pytest.raises(RuntimeError):
        s.replace_from("raw/a.jsonl", 5, chunks(), info.generation, None)  # type: ignore[arg-type]
    assert s.stat("raw/a.jsonl") == info
    out = s.replace_from("raw/a.jsonl", 5, [b"new2\n", b"row3\n"], info.generation, None)
    assert out.generation > info.generation
    assert s.read_range("raw/a.jsonl", 0, 100, out.generation) == b"row1\nnew2\nrow3\n"


def test_a_reader_sees_no_bytes_rewritten_under_it(tmp_path: os.PathLike[str]) -> None:
    """Readers hold no lock while reading: an in-place rewrite must stop them, not tear them."""
    import klinelake.backends.local_store as ls

    s = LocalStore(tmp_path)
    body = b"".join(b"row%06d\n" % i for i in range(300_000))  # several read chunks
    info = s.write("raw/a.jsonl", body, if_generation_match=0)
    with s.open_lines("raw/a.jsonl", info.generation) as lines:
        assert next(lines) == b"row000000\n"
        s.replace_from("raw/a.jsonl", 10, [b"new\n"], info.generation, None)
        with pytest.raises(PreconditionFailed):
            list(lines)
    assert len(body) > ls._CHUNK


def test_crash_leftovers_are_cleaned_but_not_a_live_writers(tmp_path: os.PathLike[str]) -> None:
    from klinelake.backends.local_store import clean_leftovers

    s = LocalStore(tmp_path)
    old_part = s.write("staging/raw/a.jsonl.1.part", b"x\n", if_generation_match=0)
    new_part = s.write("staging/raw/a.jsonl.2.part", b"y\n", if_generation_match=0)
    old_tmp = s._temp()
    old_tmp.write_bytes(b"torn")
    new_tmp = s._temp()
    new_tmp.write_bytes(b"in flight")
    hour_ago = old_part.generation - 2 * 3600 * 10**9
    os.utime(s._path(old_part.name), ns=(hour_ago, hour_ago))
    os.utime(old_tmp, ns=(hour_ago, hour_ago))
    removed = clean_leftovers(s)
    assert sorted(removed) == sorted([old_part.name, str(old_tmp.relative_to(s.root))])
    assert [p.name for p in s.list("staging/")] == [new_part.name]
    assert new_tmp.exists() and not old_tmp.exists()
