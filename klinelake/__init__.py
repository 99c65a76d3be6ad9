"""klinelake: the shared core and its adapters.

core/      pure: row model, contract, merge, halts, lake writer, publish policy
binance/   Binance clients (REST, archives, weight pacing)
backends/  object stores (local, GCS), lake opener, sinks, dead letters, halts cache
commands/  the `klinelake` CLI
config.py  the configuration table; logs.py the log line format
"""
