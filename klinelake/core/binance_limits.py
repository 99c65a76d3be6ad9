"""Binance's limits that hold on every market, defined once (the ones that differ per market are
columns of klinelake.core.markets' table: pings, messages per second, streams, request weight).
Sources: binance-spot-api.md §3, §6 and binance-futures-api.md §3."""

from __future__ import annotations

from klinelake.core.markets import SPECS

# 1024 on all three markets today; the table says so per market, this is the bound for all
MAX_STREAMS_PER_CONNECTION = min(s.max_streams_per_connection for s in SPECS.values())
MAX_CONNECTION_AGE_S = 24 * 3600.0  # the server cuts a connection this long after it opened
# New WS connections per IP per window: documented for spot; unconfirmed on futures (FS §3),
# where clients apply spot's limit as the safe assumption.
WS_CONNECTIONS_PER_WINDOW = 300
WS_CONNECTION_WINDOW_S = 300.0
WEIGHT_WINDOW_S = 60.0  # the request-weight counter's window (X-MBX-USED-WEIGHT-1M)
