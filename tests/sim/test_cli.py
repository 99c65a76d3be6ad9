"""The command line: READY line and ready file, SIGTERM, refused data files, --no-admin."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import httpx
import pytest

from binance_sim.testing import SimProcess, SimStartError, run_simulator

from .conftest import BUNDLED


def test_ready_file_and_clean_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    sim = SimProcess(BUNDLED, "--ready-file", str(ready)).start()
    assert sim.url.startswith("http://127.0.0.1:") and ready.read_text() == sim.url + "\n"
    assert httpx.get(sim.url + "/api/v3/ping").content == b"{}"
    assert sim.stop() == 0


def test_a_zip_with_a_bad_checksum_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("BTCUSDT-1m-2022-01-01.csv", b"")
    (tmp_path / "BTCUSDT-1m-2022-01-01.zip").write_bytes(buf.getvalue())
    wrong = hashlib.sha256(b"other").hexdigest()
    (tmp_path / "BTCUSDT-1m-2022-01-01.zip.CHECKSUM").write_text(f"{wrong}  x.zip\n")
    with pytest.raises(
        SimStartError, match=r"BTCUSDT-1m-2022-01-01\.zip: sha256 .* does not match"
    ):
        SimProcess(tmp_path).start()


def test_admin_routes_can_be_switched_off() -> None:
    with run_simulator(BUNDLED, "--no-admin") as sim:
        assert httpx.get(sim.url + "/_sim/state").status_code == 404
    with run_simulator(BUNDLED) as sim:
        sim.clock(speed=100.0)
        assert sim.state()["speed"] == 100.0
