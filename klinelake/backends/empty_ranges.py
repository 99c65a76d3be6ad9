"""The publisher's local cache of confirmed-empty ranges (exchange halts, outages).

Binance leaves true gaps where the exchange was down (binance-spot-api.md §6 [obs],
binance-public-data#84). The record that counts is in the lake (the meta object, contract 4,
`klinelake.core.halts_writer`): publishers send the ranges they confirm with their batches. This
cache only spares gap repair and `backfill --missing-only` a REST request for a range already
known empty; losing it costs one request per range and nothing else. The range algebra lives
in `klinelake.core.halts`.

File: `{state_dir}/confirmed_empty.json`, written atomically (temp file + fsync + rename) under
an advisory lock, so a reader never sees half a file and two writers do not lose each other's
ranges:

    {"BTCUSDC@1h": [[1640995200000, 1641002400000]], ...}   # inclusive [first, last] open times
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from klinelake.core.halts import coalesce
from klinelake.core.intervals import Gap
from klinelake.core.markets import Market
from klinelake.core.symbols import stream_id

FILE_NAME = "confirmed_empty.json"


class EmptyRanges:
    """The confirmed-empty store of one state directory (no I/O until a method is called)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE_NAME

    def load(self) -> dict[str, list[Gap]]:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        if not isinstance(raw, dict):
            raise ValueError(f"{self.path}: expected a JSON object")
        return {
            str(stream): [(int(a), int(b)) for a, b in ranges] for stream, ranges in raw.items()
        }

    def all(self) -> dict[str, list[Gap]]:
        """Every stream's ranges, keyed `SYMBOL@interval` (what `klinelake status` reads)."""
        return self.load()

    def get(self, symbol: str, interval: str, market: Market = Market.SPOT) -> list[Gap]:
        return self.load().get(stream_id(symbol, interval, market), [])

    def add(
        self, symbol: str, interval: str, ranges: Iterable[Gap], market: Market = Market.SPOT
    ) -> None:
        new = list(ranges)
        if not new:
            return
        key = stream_id(symbol, interval, market)
        with self._locked():
            data = self.load()
            data[key] = coalesce([*data.get(key, []), *new], interval)
            self._write(data)

    def _write(self, data: dict[str, list[Gap]]) -> None:
        body = orjson.dumps(
            {k: [list(r) for r in v] for k, v in sorted(data.items())}, option=orjson.OPT_INDENT_2
        )
        fd, tmp = tempfile.mkstemp(prefix=".confirmed_empty.", dir=self.state_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / (FILE_NAME + ".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
