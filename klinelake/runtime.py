"""Process-wide settings of the interpreter, chosen once for every entry point that handles
rows in bulk (`python -m backfill`, the ingest function)."""

from __future__ import annotations

import gc

# A first generation this large: a 5,000-row batch allocates ~100,000 objects (decoded dicts,
# Klines, lines), all acyclic and freed by reference counting; with the default threshold (700)
# the cyclic GC traversed them again and again: 18 % of a backfill's CPU, and ~30 % of the
# function's per backfill message (docs/BENCHMARKS.md). The older generations keep their
# defaults' spirit (collected every 20 younger collections).
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc_for_bulk_rows() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    # What is alive now (modules, classes, functions: ~100,000 objects) lives until the process
    # ends: moved out of the collector's reach, they are not traversed again by the older
    # generations' collections nor by the one at interpreter exit (~4 % of a backfill's CPU).
    gc.freeze()
