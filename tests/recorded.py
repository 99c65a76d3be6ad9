"""Where the tests find recorded Binance data, relative to the repository (never a machine
path). The monthly CSVs have one copy in the tree, the simulator's bundled data
(devtools/binance_sim/data, provenance there); the other recordings are in tests/data."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV_DIR = ROOT / "devtools" / "binance_sim" / "data"
DATA = ROOT / "tests" / "data"
WS_FIXTURE = DATA / "combined_kline_1m_BTCUSDT-ETHUSDT-DOTUSDT_2021-04-04.jsonl"


def recorded_csv(name: str) -> bytes:
    """A recorded monthly CSV by file name, e.g. `BTCUSDT-1h-2022-01.csv`."""
    return (CSV_DIR / name).read_bytes()
