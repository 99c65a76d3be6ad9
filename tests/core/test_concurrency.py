"""Several processes append and merge into one object at once: nothing lost, nothing twice."""

from __future__ import annotations

import multiprocessing as mp
import random

from klinelake.backends.lake import read_object
from klinelake.backends.local_store import LocalStore
from klinelake.core.writer import LakeWriter

from .test_merge_property import NAME, row

WORKERS = 4
BATCHES = 30


def _worker(root: str, seed: int, start: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    rnd = random.Random(seed)
    w = LakeWriter(LocalStore(root), backoff_s=0.001)
    start.wait()
    actions: dict[str, int] = {}
    for i in range(BATCHES):
        if i % 3 == 0:  # a backfill-style batch somewhere in the past: merge
            lo = rnd.randrange(0, 400)
            keys = list(range(lo, lo + rnd.randrange(1, 30)))
        else:  # a live-style batch: this worker's own keys, ascending: usually an append
            keys = [1000 + (i * WORKERS + seed) * 2 + j for j in range(2)]
        r = w.write_rows("ETHUSDT", "1m", [row(k) for k in keys])
        actions[r.action] = actions.get(r.action, 0) + 1
        for k in keys:
            out.put(("key", k))
    out.put(("retries", w.precondition_retries))
    out.put(("actions", actions))


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path: object) -> None:
    ctx = mp.get_context("fork")
    start = ctx.Event()
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path), s, start, out)) for s in range(WORKERS)
    ]
    for p in procs:
        p.start()
    start.set()
    keys: set[int] = set()
    retries = 0
    actions: dict[str, int] = {}
    done = 0
    while done < WORKERS:
        kind, value = out.get(timeout=120)
        if kind == "key":
            keys.add(value)
        elif kind == "retries":
            retries += value
        else:
            done += 1
            for a, n in value.items():
                actions[a] = actions.get(a, 0) + n
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    got = read_object(LocalStore(str(tmp_path)), NAME)
    assert got == b"".join(row(k).to_line() for k in sorted(keys))
    print(f"precondition retries: {retries}, actions: {actions}")
    assert retries > 0, "the test must exercise 412 retries"
    assert actions.get("append", 0) > 0 and actions.get("merge", 0) > 0
