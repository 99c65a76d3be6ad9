"""A merge into the middle of a large object, whole-object rewrite vs staged in pieces
(issue 12 item 6), on the local stack's GCS (run by hand; prints figures).

    .venv/bin/python bench/bench_staged_merge.py [--rows 400000] [--deadline 60] [--piece-mib 8]

Uploads a --rows 1m object to fake-gcs-server (behind the stack's enforcing proxy), then merges
the same 1,000 corrected rows into its middle twice, side by side:
1. the whole-object rewrite (the writer without a budget: what the function did before);
2. the function's handler with `MergeBudget.for_ack_deadline(--deadline, --piece-mib)`,
   delivered again after every MergeInProgress exactly as Pub/Sub would (minus its backoff).
Prints the object's size, each delivery's wall time (the figure that must stay under the
deadline whatever the size), the total, the rewrite's throughput and from it the largest
object one rewrite fits in 300 s. Then the no-op check of a sparse batch (the object's first
and last rows sent again): in one delivery over the whole span vs paced piece by piece.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_function import big_lines, big_row  # noqa: E402
from ingest_function.handler import IngestHandler  # noqa: E402
from klinelake.core.contract import KlineBatch  # noqa: E402
from klinelake.core.errors import MergeInProgress  # noqa: E402
from klinelake.core.staged_merge import MergeBudget  # noqa: E402
from klinelake.core.symbols import object_name  # noqa: E402
from klinelake.core.writer import LakeWriter  # noqa: E402
from localcloud import Stack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--deadline", type=float, default=60.0, help="ack deadline, seconds")
    ap.add_argument("--piece-mib", type=float, default=8.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-staged-") as tmp, Stack(tmp) as stack:
        store = stack.store()
        figures = {}
        for how, symbol in (("rewrite", "BENCHREWRITE"), ("staged", "BENCHSTAGED")):
            name = object_name(symbol, "1m")
            store.write(name, big_lines(args.rows, symbol), if_generation_match=0)
            size = store.stat(name).size  # type: ignore[union-attr]
            mid = args.rows // 2
            rows = tuple(big_row(i, symbol, "2.00000000") for i in range(mid, mid + 1000))
            batch = KlineBatch(symbol, "1m", rows)
            times: list[float] = []
            if how == "rewrite":
                t0 = time.perf_counter()
                result = LakeWriter(store).write_batch(batch)
                times.append(time.perf_counter() - t0)
            else:
                budget = MergeBudget.for_ack_deadline(args.deadline, int(args.piece_mib * 2**20))
                handler = IngestHandler(store, None, merge_budget=budget)
                while True:
                    t0 = time.perf_counter()
                    try:
                        result = handler.writer.write_batch(batch)
                        times.append(time.perf_counter() - t0)
                        break
                    except MergeInProgress:
                        times.append(time.perf_counter() - t0)
            assert result.action == "merge" and result.rows_replaced == 1000, result
            figures[how] = (size, times)
            print(
                f"{how}: object {size / 1e6:.1f} MB, {len(times)} deliveries, longest "
                f"{max(times):.1f} s, total {sum(times):.1f} s "
                f"(each: {', '.join(f'{t:.1f}' for t in times)})",
                flush=True,
            )
        size, (rewrite_s,) = figures["rewrite"]
        pace = size / rewrite_s
        print(
            f"rewrite pace {pace / 1e6:.1f} MB/s: the largest object one rewrite fits in 300 s "
            f"is ~{pace * 300 / 1e9:.2f} GB, in {args.deadline:.0f} s "
            f"~{pace * args.deadline / 1e9:.2f} GB; staged: every delivery within "
            f"{max(figures['staged'][1]):.1f} s "
            f"(budget {args.deadline / 3:.0f} s of work + one piece) whatever the size"
        )
        # The no-op check of a sparse batch: the object's first and last rows sent again (a
        # hand-made replay of two rows far apart). One delivery over the whole span (the
        # writer without a budget: what the check did before staging) vs the paced check.
        symbol = "BENCHSTAGED"
        ends = KlineBatch(symbol, "1m", (big_row(0, symbol), big_row(args.rows - 1, symbol)))
        for how in ("one delivery", "paced"):
            budget = MergeBudget.for_ack_deadline(args.deadline, int(args.piece_mib * 2**20))
            writer = LakeWriter(store, merge_budget=None if how == "one delivery" else budget)
            times = []
            while True:
                t0 = time.perf_counter()
                try:
                    result = writer.write_batch(ends)
                    times.append(time.perf_counter() - t0)
                    break
                except MergeInProgress:
                    times.append(time.perf_counter() - t0)
            assert result.action == "noop", result
            print(
                f"sparse no-op check, {how}: {len(times)} deliveries, longest "
                f"{max(times):.2f} s, total {sum(times):.2f} s",
                flush=True,
            )
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine)")


if __name__ == "__main__":
    main()
