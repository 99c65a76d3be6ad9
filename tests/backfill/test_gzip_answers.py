"""Compressed answers: the client asks Binance for none (`Accept-Encoding: identity`, as
inflating a klines page costs ~0.7 µs of CPU per row), and still reads a server that gzips
whatever it was asked. The simulator compresses like an HTTP server (`--gzip accepted`: when the
request accepts gzip) or always (`--gzip always`); without it, no test could tell what we ask.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from binance_sim.testing import run_simulator
from klinelake.core.intervals import count_between
from tests.backfill.conftest import SIM_ARGS, backfill, lake_bytes

FIRST, LAST = 1_672_531_200_000, 1_675_209_600_000 - 1  # January 2023, 1h: 744 klines
OBJECT = "binance_btcusdc_1h.jsonl"


async def run(mode: str, tmp: Path) -> tuple[bytes, dict[str, int]]:
    with run_simulator(None, *SIM_ARGS, "--gzip", mode) as sim:
        await backfill(sim, tmp, start_ms=FIRST, end_ms=LAST)
        counters = sim.state()["counters"]
        # the stand-in compresses for a client that accepts gzip (aiohttp's default headers)
        url = f"{sim.url}/api/v3/klines?symbol=BTCUSDC&interval=1h&startTime={FIRST}&limit=5"
        async with aiohttp.ClientSession() as http, http.get(url) as answer:
            assert answer.status == 200 and len(await answer.json()) == 5
            compressed = answer.headers.get("Content-Encoding") == "gzip"
        assert compressed == (mode != "off"), mode
    return lake_bytes(tmp / "lake", OBJECT), counters


@pytest.mark.parametrize("mode", ["accepted", "always"])
async def test_the_client_asks_for_no_compression_and_reads_it_anyway(
    mode: str, tmp_path: Path
) -> None:
    plain, plain_counters = await run("off", tmp_path / "off")
    got, counters = await run(mode, tmp_path / mode)
    assert plain.count(b"\n") == count_between(FIRST, LAST - 3_599_999, "1h") == 744
    assert got == plain  # the same lake, byte for byte
    if mode == "accepted":  # asked for identity: Binance (like any HTTP server) sends it plain
        assert counters["responses_gzipped"] == 0
    else:  # compressed unasked: every answer (exchangeInfo, klines) was inflated by the client
        assert counters["responses_gzipped"] == counters["requests"] == plain_counters["requests"]
