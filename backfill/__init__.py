"""The backfill: history from Binance REST (or data.binance.vision archives) into the lake.

Modules, by role (pure ones import no network client):

    settings.py     what a run is asked to do, validated when built (BadInput: exit 2)
    span.py         the open times a stream's run covers                    (pure)
    plan.py         ranges -> pages on a fixed grid (stable checkpoint keys)  (pure)
    vision.py       whole months and days as archive pages
    exchange.py     exchangeInfo: listed symbols, the announced weight limit
    run.py          plan, then fetch and emit; fetch_pool.py holds the workers
    emitter.py      each stream's pages in order -> batches -> sink -> checkpoint
    emit_policy.py  what to send next, which pages that completes           (pure)
    checkpoint.py   the pages done; result.py RunResult; progress.py the display
"""
