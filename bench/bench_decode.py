"""What the repeated-key check costs on a 5000-row message (issue 12.3). Run by hand:
`.venv/bin/python bench/bench_decode.py`.

Side by side, medians over repeated runs of the same in-memory message:
- orjson.loads alone (what decoding cost before the check);
- the fast path's extra step, orjson.dumps of the parsed object compared with the input;
- the slow path's extra step, json.loads with an object_pairs_hook (hand-typed messages only);
- decode_message end to end on a publisher's compact message and on an indented one.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_core import synth  # noqa: E402
from klinelake.core.contract import (  # noqa: E402
    KlineBatch,
    _refuse_repeated_keys,
    decode_message,
    encode_batch,
)

ROWS = 5000
REPEAT = 30


def median_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    batch = KlineBatch("BTCUSDT", "1m", tuple(synth(k) for k in range(ROWS)))
    compact = encode_batch(batch, "rest").data
    indented = json.dumps(orjson.loads(compact), indent=2).encode()
    obj = orjson.loads(compact)
    figures = {
        "orjson.loads (no check)": median_ms(lambda: orjson.loads(compact)),
        "fast path extra: orjson.dumps + compare": median_ms(lambda: orjson.dumps(obj) == compact),
        "slow path extra: json.loads + pairs hook": median_ms(
            lambda: json.loads(compact, object_pairs_hook=_refuse_repeated_keys)
        ),
        "decode_message, publisher's compact message": median_ms(lambda: decode_message(compact)),
        "decode_message, indented (hand-typed) message": median_ms(
            lambda: decode_message(indented)
        ),
    }
    print(f"{ROWS}-row message: {len(compact):,} bytes compact, {len(indented):,} indented; "
          f"medians of {REPEAT} runs")  # fmt: skip
    for name, ms in figures.items():
        print(f"  {name:48s} {ms:8.2f} ms")
    base = figures["decode_message, publisher's compact message"]
    extra = figures["fast path extra: orjson.dumps + compare"]
    print(f"  the check adds {extra / base:.1%} to decoding a publisher's message")


if __name__ == "__main__":
    main()
