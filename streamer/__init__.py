"""The live streamer: Binance closed klines → the lake or Pub/Sub, gap-free, once each (issue 7).

    python -m streamer --symbols BTCUSDC,ETHUSDC --intervals 1m,1h          # local ./lake
    KLINES_TOPIC=projects/P/topics/klines python -m streamer                  # Pub/Sub

Modules, by role (pure ones import no network client):

    config.py      typed settings; the stream list                        (pure)
    shards.py      streams → connections of ≤1024; paced SUBSCRIBE frames  (pure)
    stall.py       per-connection deadlines of the next closed kline        (pure)
    backoff.py     capped exponential + full jitter; 300 attempts / 5 min   (pure)
    clock.py       the server's clock (REST time, event times, speed)      (pure)
    repair.py      which open times are missing; fetching them over REST
    spool.py       sqlite WAL spool: insert before publish, delete after ack
    sender.py      one ordered sender per stream: repair, batch, send, ack
    connection.py  one combined-stream WebSocket connection
    health.py      state/health.json, the HTTP endpoint, sd_notify
    service.py     the supervisor (connections, senders, drain on SIGTERM)
    cli.py         flags and environment → Settings

Health: `{state_dir}/health.json`, rewritten every 2 s (per stream: last_closed_open_time, lag_ms,
reconnects, spool_depth, published/repaired rows, send failures; totals: connections,
malformed_frames); the same JSON on `--health-port` (127.0.0.1); READY=1/WATCHDOG=1 to
$NOTIFY_SOCKET (systemd Type=notify, WatchdogSec=30 or more). Exit code 0 after SIGTERM, 1 if a
supervised task died (systemd Restart=on-failure starts it again; the spool is re-sent first).
"""
