"""Bad streamer input gets one clear error and exit code 2, before any connection is made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--symbols", "../x"], "contains '..'"),
        (["--symbols", "BTC/USDT"], "contains '/'"),
        (["--intervals", "1H"], "invalid interval '1H'"),
        (["--symbols", ","], "at least one symbol"),
    ],
)
def test_bad_streams_exit_2_with_one_clear_error(
    args: list[str], message: str, tmp_path: object
) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamer", *args, "--lake", str(tmp_path),
         "--rest-url", "http://127.0.0.1:9", "--ws-url", "ws://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_symbol_exits_2_naming_it(tmp_path: Path) -> None:
    from binance_sim.testing import run_simulator

    with run_simulator(None, "--synthetic", "KNOWNUSDT:1h:2024-01-01") as sim:
        out = subprocess.run(
            [sys.executable, "-m", "streamer", "--symbols", "KNOWNUSDT,NOPEUSDT", "--intervals",
             "1h", "--lake", str(tmp_path / "lake"), "--state-dir", str(tmp_path / "state"),
             "--rest-url", sim.url, "--ws-url", sim.ws_url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sim.state()["counters"]["ws_opened"] == 0  # refused before connecting
    assert out.returncode == 2
    assert 'does not list these symbols (-1121): NOPEUSDT"' in out.stderr  # the unknown only
    assert not (tmp_path / "lake").exists()
