"""The checkpoint: an append-only JSONL file of finished pages, fsynced after every append.

`{state_dir}/backfill/{plan identity}.jsonl`, one `{"page": "<key>"}` line per page whose rows
the sink has made durable. A crash can at worst leave a torn last line, which `load` ignores
(that page is simply fetched again: the lake write is idempotent).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import orjson


class Checkpoint:
    def __init__(self, state_dir: str | os.PathLike[str], identity: str) -> None:
        self.path = Path(state_dir) / "backfill" / f"{identity}.jsonl"
        self._file: IO[bytes] | None = None

    def load(self) -> set[str]:
        done: set[str] = set()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return done
        for line in data.splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line from a crash mid-append
            if isinstance(entry, dict) and isinstance(entry.get("page"), str):
                done.add(entry["page"])
        return done

    def mark(self, keys: Iterable[str]) -> None:
        """Record pages as finished; durable when this returns."""
        body = b"".join(orjson.dumps({"page": k}) + b"\n" for k in keys)
        if not body:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the whole run
            # A torn line left by a crash must not swallow our first entry.
            if self._file.tell() > 0:
                with open(self.path, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        body = b"\n" + body
        self._file.write(body)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
