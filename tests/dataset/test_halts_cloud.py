"""Exchange halts recorded in the lake on the local cloud (DESIGN.md, contract 4).

The streamer publishes through Pub/Sub → function → fake-gcs while the simulator halts a stream:
the halt lands in the stream's meta object in fake-gcs, and `klinelake verify --lake gs://...`,
run from an empty directory (no publisher state anywhere near), passes on that lake, and fails
on a stream with a real hole."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from binance_sim.testing import run_simulator
from klinelake.core.contract import KlineBatch, encode_batch
from klinelake.core.halts import decode_meta, meta_object_name
from klinelake.core.intervals import MINUTE, align_down
from klinelake.core.row import parse_lake_line
from localcloud import Stack, wait_for
from tests.streamer.helpers import assert_lake_matches_truth, lake_last_open, streamer

pytestmark = pytest.mark.stack
SPEED = 240.0  # a 1m kline closes every 0.25 real seconds
SYMBOL, HOLED = "HALTUSDC", "HOLEUSDC"  # streams of their own: the session's stack is shared
ROOT = Path(__file__).resolve().parents[2]


def verify(stack: Stack, cwd: Path, stream: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "klinelake", "verify", "--lake", stack.lake_uri, "--stream",
         stream, "--json"],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=60,
    )  # fmt: skip


def test_a_streamer_halt_is_in_fake_gcs_and_verify_tells_it_from_a_hole(
    stack: Stack, tmp_path: Path
) -> None:
    args = ["--start", "2024-03-01T00:50:00", "--speed", str(SPEED), "--synthetic",
            f"{SYMBOL}:1m:2024-02-01"]  # fmt: skip
    env = {**os.environ, **stack.env()}
    meta_name = meta_object_name("binance", SYMBOL, "1m")
    with run_simulator(None, *args) as sim:
        with streamer(sim, tmp_path / "state", SYMBOL, "1m", SPEED, env=env) as st:
            wait_for(lambda: lake_last_open(stack, SYMBOL, "1m"), 60, 0.1, "first rows")
            t = align_down(sim.state()["now"], "1m") + 4 * MINUTE
            halt = (t, t + 5 * MINUTE)  # six 1m open times without klines
            sim.admin({"halt": {"symbol": SYMBOL, "interval": "1m", "start": halt[0],
                                "end": halt[1] + MINUTE - 1}})  # fmt: skip
            wait_for(lambda: (lake_last_open(stack, SYMBOL, "1m") or 0) > halt[1] + 3 * MINUTE,
                     60, 0.1, "rows after the halt")  # fmt: skip
            meta = wait_for(lambda: stack.read_object(meta_name), 60, 0.1, "the meta object")
            assert st.terminate() == 0
        assert decode_meta(meta, "1m") == [halt]
        assert meta == b'{"from":%d,"to":%d}\n' % halt
        data = stack.read_object(f"raw/binance_{SYMBOL.lower()}_1m.jsonl") or b""
        head = parse_lake_line(data.split(b"\n", 1)[0]).open_time
        # byte-identical to the truth across the halt: the halt is no row in the lake
        assert_lake_matches_truth(stack, sim, SYMBOL, "1m", first=head, last=halt[1] + MINUTE)

    empty_dir = tmp_path / "elsewhere"
    empty_dir.mkdir()
    out = verify(stack, empty_dir, f"{SYMBOL}@1m")
    assert out.returncode == 0, out.stdout + out.stderr
    (report,) = json.loads(out.stdout)
    assert report["exchange_gaps"] == [list(halt)] and report["collector_gaps"] == []
    assert not any(empty_dir.iterdir())  # verify needed and left no local state

    # a real hole: two batches of another stream with 3 open times missing between them
    data = stack.read_object(f"raw/binance_{SYMBOL.lower()}_1m.jsonl") or b""
    first = parse_lake_line(data.split(b"\n", 1)[0])
    holed = [
        dataclasses.replace(first, symbol=HOLED, open_time=first.open_time + i * MINUTE,
                            close_time=first.close_time + i * MINUTE)
        for i in range(10)
    ]  # fmt: skip
    for part in (holed[:3], holed[6:]):
        msg = encode_batch(KlineBatch(HOLED, "1m", tuple(part)), "replay")
        stack.publish(msg.data, msg.attributes, msg.ordering_key)
    wait_for(lambda: (lake_last_open(stack, HOLED, "1m") or 0) == holed[-1].open_time, 60, 0.1,
             "the holed stream landed")  # fmt: skip
    out = verify(stack, empty_dir, f"{HOLED}@1m")
    assert out.returncode == 1, out.stdout + out.stderr
    (report,) = json.loads(out.stdout)
    assert report["collector_gaps"] == [[holed[3].open_time, holed[5].open_time]]
    assert orjson.loads(out.stdout)[0]["missing_klines"] == 3
