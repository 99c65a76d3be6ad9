"""The live streamer: Binance closed klines → the lake or Pub/Sub, gap-free, once each (issue 7).

    python -m streamer --symbols BTCUSDC,ETHUSDC --intervals 1m,1h          # local ./lake
    KLINES_TOPIC=projects/P/topics/klines python -m streamer                  # Pub/Sub

Modules, by role (pure ones import no network client):

    config.py      typed settings; the stream list                        (pure)
    shards.py      streams → connections of ≤1024; paced SUBSCRIBE frames  (pure)
    stall.py       a dead connection vs one silent stream (halted, or lost)  (pure)
    slot_policy.py what a connection slot does next (reconnect, replace, ask REST) (pure)
    backoff.py     capped exponential + full jitter; 300 attempts / 5 min   (pure)
    clock.py       the server's clock (REST time, event times, speed)      (pure)
    repair.py      which open times are missing; fetching them over REST
    spool.py       sqlite WAL spool: insert before publish, delete after ack; holds in
                   memory what a full/read-only disk refuses, never drops it
    sender.py      one ordered sender per stream: repair, batch, send, ack
    connection.py  one combined-stream WebSocket connection
    listing.py     which streams to add and retire; when to look again     (pure)
    health.py      state/health.json, the HTTP endpoint, sd_notify
    service.py     the supervisor: start, senders, ingest into the spool, drain on SIGTERM
    slots.py       one live connection per slot, doing what slot_policy decides
    listing_watch.py  listings, delistings, deliveries while streaming
    health_report.py  the health document and the watchdog ping
    preflight.py   `--check`: exchangeInfo answers, a frame arrives per stream
    cli.py         flags and environment → Settings

Health: `{state_dir}/health.json`, rewritten every 2 s (per stream: ws_state live|silent|halted,
last_closed_open_time, lag_ms, reconnects, spool_depth, published/repaired rows, send failures;
totals: connections, malformed_frames, spool ok|degraded: ..., spool_held_in_memory); the same
JSON on `--health-port` (127.0.0.1); READY=1/WATCHDOG=1 to $NOTIFY_SOCKET (systemd Type=notify,
WatchdogSec=30 or more). Exit code 0 after SIGTERM, 1 if a supervised task died or klines that
a full disk refused could not be sent before the drain ended (systemd Restart=on-failure starts
it again; the spool is re-sent first), 2 if the state directory cannot hold the spool.
"""
