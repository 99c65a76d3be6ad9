"""The local backend enforces generations exactly as GCS documents them, and is atomic."""

from __future__ import annotations

import os

import pytest

from klinelake.errors import ObjectNotFound, PreconditionFailed
from klinelake.local_store import LocalStore, escape_name, unescape_name


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
        s.read_tail("raw/a.jsonl", 10, b.generation)
    assert s.read_tail("raw/a.jsonl", 2, c.generation) == b"3\n"
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
    assert s.read_tail("raw/a.jsonl", 100, info.generation) == b"row1\n"
    assert not journal.exists()


def test_failed_write_leaves_old_object(tmp_path: os.PathLike[str]) -> None:
    s = LocalStore(tmp_path)
    info = s.write("raw/a.jsonl", b"old\n", if_generation_match=0)

    def chunks() -> object:
        yield b"new-partial"
        raise RuntimeError("crash mid-upload")

    with pytest.raises(RuntimeError):
        s.write("raw/a.jsonl", chunks(), if_generation_match=info.generation)  # type: ignore[arg-type]
    assert s.stat("raw/a.jsonl") == info
    assert s.read_tail("raw/a.jsonl", 100, info.generation) == b"old\n"
    assert not list((tmp_path / ".klinelake" / "tmp").iterdir())  # type: ignore[operator]
