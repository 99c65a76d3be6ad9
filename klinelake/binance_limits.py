"""Binance spot's published limits (binance-spot-api.md §3 WebSocket, §6 REST weight), defined
once: the clients stay under them, and the simulator enforces them by default."""

from __future__ import annotations

# WebSocket market streams (§3)
MAX_STREAMS_PER_CONNECTION = 1024
MAX_INCOMING_MSGS_PER_S = 5  # client frames (SUBSCRIBE, pongs, ...) per second per connection
WS_CONNECTIONS_PER_WINDOW = 300  # new connections per IP ...
WS_CONNECTION_WINDOW_S = 300.0  # ... per 5 minutes
MAX_CONNECTION_AGE_S = 24 * 3600.0  # the server cuts a connection this long after it opened
PING_INTERVAL_S = 20.0  # the server pings this often ...
PONG_TIMEOUT_S = 60.0  # ... and closes the connection when no pong came within this

# REST request weight (§6): a per-IP counter per minute, reported in X-MBX-USED-WEIGHT-1M
WEIGHT_LIMIT_1M = 6000
WEIGHT_WINDOW_S = 60.0
