"""A Binance spot market-data simulator (REST + WebSocket streams) for tests, demo and benchmarks.

    python -m binance_sim --host 127.0.0.1 --port 0 --data DIR [--start ISO|ms] [--speed X]
        [--synthetic SYMBOL:INTERVAL[:START]]... [--seed N] [--latency-ms N] ...   (see --help)

prints `READY http://127.0.0.1:PORT` once listening. Tests start it with
`binance_sim.testing.run_simulator` (the stable API other packages use).

Modules, by what they do:
    clock      simulated now = start + real elapsed * speed
    market     the truth: exact file rows, deterministic synthetic rows, halts, REST selection
    ratelimit  per-IP request weight in fixed windows, 429, escalating 418 bans
    rest       /api/v3/{klines,uiKlines,ping,time,exchangeInfo}, errors, headers
    ws         /ws/<name>, /ws, /stream; control methods; pings; limits; the kline pusher
    faults     fault state (POST /_sim/faults keys) and counters (GET /_sim/state)
    admin      /_sim/ routes: faults, state, truth, clock
    server     the aiohttp app; __main__ the CLI; testing the subprocess helper

Where Binance's behaviour is unconfirmed (fact sheet §12), the choice made is documented in
the module that makes it (rest, ws, ratelimit) and is configurable where the issue asks.
"""
