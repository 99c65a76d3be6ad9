"""The configuration table (klinelake/config.py, issue 14): one row per setting, names unique,
defaults as DESIGN.md's configuration table states them; settings objects refuse what cannot
run when they are built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backfill.settings import BadInput
from backfill.settings import Settings as BackfillSettings
from klinelake import config as cfg
from streamer.config import Settings as StreamerSettings
from streamer.config import StreamSpec


def test_table_names_are_unique_and_defaults_match_design() -> None:
    envs = [s.env for s in cfg.TABLE]
    flags = [s.flag for s in cfg.TABLE if s.flag]
    assert len(envs) == len(set(envs)) and len(flags) == len(set(flags))
    defaults = {s.env: s.default for s in cfg.TABLE}
    assert defaults["LAKE_URI"] == "./lake"
    # the README's configuration table is the operators' copy of DESIGN.md's: the code agrees
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for env in ("BINANCE_REST_URL", "BINANCE_WS_URL", "ACK_DEADLINE_S", "MERGE_PIECE_BYTES"):
        row = re.search(rf"^\| `{env}` \|.*\| `([^`]+)` \|$", readme, re.M)
        assert row is not None and defaults[env] == row.group(1), env
    assert defaults["KLINES_TOPIC"] is None and defaults["DEAD_LETTER_TOPIC"] is None


def test_value_reads_the_environment_and_empty_means_unset() -> None:
    assert cfg.LAKE.value({}) == "./lake"
    assert cfg.LAKE.value({"LAKE_URI": ""}) == "./lake"
    assert cfg.LAKE.value({"LAKE_URI": "gs://b"}) == "gs://b"
    assert cfg.TOPIC.value({}) is None


def test_a_setting_without_a_name_or_with_a_bad_flag_cannot_exist() -> None:
    with pytest.raises(ValueError, match="needs an environment variable or a flag"):
        cfg.Setting(None, None, "x", None)
    with pytest.raises(ValueError, match="must start with --"):
        cfg.Setting("X", "-x", "x", None)


def test_split_csv_and_check_topic() -> None:
    assert cfg.split_csv(" BTCUSDC, ETHUSDC,,1h ") == ("BTCUSDC", "ETHUSDC", "1h")
    assert cfg.check_topic("projects/p/topics/t") == "projects/p/topics/t"
    for bad in ("projects/p/topics/", "p/t", "projects/p/topics/t/x", "projects/p q/topics/t"):
        with pytest.raises(ValueError, match="KLINES_TOPIC"):
            cfg.check_topic(bad)


STREAMS = (StreamSpec("BTCUSDC", "1h"),)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"streams": ()}, "at least one symbol"),
        ({"topic": "klines"}, "projects/PROJECT/topics/TOPIC"),
        ({"rest_url": "rest.example.com"}, "rest_url"),
        ({"ws_url": "https://ws.example.com"}, "ws_url"),
        ({"ws_url": "wss://"}, "ws_url"),
        ({"streams_per_connection": 0}, "streams_per_connection"),
        ({"clock_speed": 0.0}, "clock_speed"),
        ({"exchange_info_deadline_s": -1.0}, "exchange_info_deadline_s"),
        ({"health_port": 70000}, "health_port"),
    ],
)
def test_streamer_settings_validate_when_built(changes: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {"streams": STREAMS, **changes}
    with pytest.raises(ValueError, match=message):
        StreamerSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"symbols": ()}, "no symbols"),
        ({"intervals": ("1H",)}, "1H"),
        ({"days": 0}, "--days must be positive"),
        ({"concurrency": 0}, "--concurrency"),
        ({"budget_share": 1.5}, "--budget-share"),
        ({"source": "ftp"}, "source 'ftp'"),
    ],
)
def test_backfill_settings_validate_when_built(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        BackfillSettings(**changes)  # type: ignore[arg-type]


def test_defaults_build() -> None:
    assert StreamerSettings(streams=STREAMS).rest_url == cfg.DEFAULT_REST_URL
    assert BackfillSettings().lake == cfg.DEFAULT_LAKE_URI
