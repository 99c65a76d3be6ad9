"""`python -m klinelake status|verify --lake URI`: what is in the lake, and is it sound."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from klinelake import config as cfg
from klinelake.backends.lake import open_store
from klinelake.commands.verify_vision import verify_vision
from klinelake.core.errors import KlineLakeError, LakeUnavailable, ObjectNotFound
from klinelake.core.intervals import Gap
from klinelake.core.status import StreamReport, inspect_lines, lake_halts
from klinelake.core.storage import ObjectStore
from klinelake.core.symbols import OBJECT_PREFIX, parse_stream_object

# Exit codes: 1 the lake violates its invariants, 2 the lake cannot be read at all.
EXIT_VIOLATIONS = 1
EXIT_UNAVAILABLE = 2


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def load_confirmed_empty(state_dir: Path | None) -> dict[str, list[Gap]]:
    """A publisher's local halts cache, keyed by lowercased `symbol@interval` (only with an
    explicit --state-dir: the lake's meta objects are the record)."""
    from klinelake.backends.empty_ranges import EmptyRanges

    if state_dir is None:
        return {}
    ranges = EmptyRanges(state_dir)
    return {k.lower(): [(a, b) for a, b in v] for k, v in ranges.load().items()}


def open_lake(uri: str) -> ObjectStore:
    """The lake's store; LakeUnavailable if the directory does not exist (a missing bucket
    shows at the first listing)."""
    if not uri.startswith("gs://") and not Path(uri).is_dir():
        raise LakeUnavailable(f"lake {uri}: no such directory")
    try:
        return open_store(uri)
    except ValueError as exc:
        raise LakeUnavailable(str(exc)) from None


def collect(
    store: ObjectStore,
    confirmed: dict[str, list[Gap]],
    now_ms: int | None,
    uri: str = "",
    streams: frozenset[str] = frozenset(),
) -> tuple[list[StreamReport], list[str]]:
    """(a report per stream object, the names under raw/ that are not stream objects); with
    `streams` (lowercased stream ids: `symbol@interval`, `um:symbol@interval`), only those, and
    no unknown objects."""
    from klinelake.backends.lake import read_lines

    try:
        listed = store.list(OBJECT_PREFIX)
    except ObjectNotFound as exc:  # GCS answers 404 for the bucket itself
        raise LakeUnavailable(f"lake {uri}: no such bucket ({exc})") from None
    except LakeUnavailable as exc:  # no credentials, no permission
        raise LakeUnavailable(f"lake {uri}: {exc}") from None
    reports, unknown = [], []
    for info in listed:
        parsed = parse_stream_object(info.name)
        if parsed is None:
            if not streams:
                unknown.append(info.name)
            continue
        market, symbol, interval = parsed
        report = StreamReport(info.name, symbol, interval, info.size, info.generation)
        report.market = market
        if streams and report.stream.lower() not in streams:
            continue
        recorded, problem = lake_halts(store, symbol, interval, market)
        halts = [*recorded, *confirmed.get(report.stream.lower(), [])]
        reports.append(inspect_lines(report, read_lines(store, info.name), halts, now_ms))
        if problem:
            report.problems.append(problem)
    return reports, unknown


def _as_json(r: StreamReport) -> dict[str, Any]:
    return {
        "object": r.object_name, "symbol": r.symbol, "interval": r.interval, "rows": r.rows,
        "first_open_time": r.first_open_time, "last_open_time": r.last_open_time,
        "collector_gaps": r.collector_gaps, "missing_klines": r.missing_klines,
        "exchange_gaps": r.exchange_gaps, "duplicates": r.duplicates,
        "ordering_violations": r.ordering_violations, "invalid_rows": r.invalid_rows,
        "foreign_rows": r.foreign_rows,
        "freshness_lag_ms": r.freshness_lag_ms, "size": r.size, "generation": r.generation,
        "ok": r.ok, "problems": r.problems, "market": str(r.market),
    }  # fmt: skip


def _print_table(reports: Sequence[StreamReport]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lake status")
    for col in ("stream", "rows", "first", "last", "gaps", "halts", "dups", "order", "lag",
                "size", "generation", "ok"):  # fmt: skip
        table.add_column(col)
    for r in reports:
        lag = "-" if r.freshness_lag_ms is None else f"{r.freshness_lag_ms / 60000:.0f} min"
        table.add_row(
            r.stream, str(r.rows), _iso(r.first_open_time),
            _iso(r.last_open_time), f"{len(r.collector_gaps)} ({r.missing_klines})",
            str(len(r.exchange_gaps)), str(r.duplicates), str(r.ordering_violations), lag,
            f"{r.size:,}", str(r.generation), "yes" if r.ok else "NO",
        )  # fmt: skip
    Console(width=160).print(table)
    for r in reports:
        for p in r.problems:
            click.echo(f"{r.stream}: {p}")


@click.group(context_settings=cfg.CONTEXT_SETTINGS)
@cfg.version_option("klinelake")
def main() -> None:
    """Inspect the raw kline lake."""


_lake = cfg.option(cfg.LAKE)
_state = click.option(
    "--state-dir", type=click.Path(path_type=Path), default=None,
    help="also count a publisher's local halts cache (the lake's meta objects always count)",
)  # fmt: skip
_json = click.option("--json", "as_json", is_flag=True, help="machine-readable output")
_now = click.option("--now", "now_ms", type=int, default=None, help="epoch ms for the lag")
_streams = click.option("--stream", "streams", multiple=True,
                        help="only SYMBOL@interval (repeat); default every stream")  # fmt: skip


def _report_command(command: Callable[..., None]) -> click.Command:
    """status and verify: one set of options (lake, state dir, --json, --now, --stream)."""
    for option in reversed((_lake, _state, _json, _now, _streams)):
        command = option(command)
    return main.command()(command)


def _run(
    command: str,
    lake: str,
    state_dir: Path | None,
    as_json: bool,
    now_ms: int | None,
    *,
    streams: tuple[str, ...] = (),
) -> tuple[list[StreamReport], list[str]]:
    """Inspect and print; a lake that cannot be read ends the command in one line, exit 2."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    wanted = frozenset(s.lower() for s in streams)
    try:
        reports, unknown = collect(
            open_lake(lake), load_confirmed_empty(state_dir), now, lake, wanted
        )
    except KlineLakeError as exc:
        click.echo(f"{command}: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if as_json:
        click.echo(orjson.dumps([_as_json(r) for r in reports], option=orjson.OPT_INDENT_2))
    elif reports:
        _print_table(reports)
    for name in unknown:
        click.echo(f"{command}: unknown object under {OBJECT_PREFIX}: {name}", err=True)
    return reports, unknown


@_report_command
def status(
    lake: str, state_dir: Path | None, as_json: bool, now_ms: int | None, streams: tuple[str, ...]
) -> None:
    """A table per stream: rows, range, gaps, halts, duplicates, order, lag, size, generation."""
    reports, _ = _run("status", lake, state_dir, as_json, now_ms, streams=streams)
    if not reports:
        click.echo(f"status: no stream objects under {OBJECT_PREFIX} in lake {lake}", err=True)


@_report_command
def verify(
    lake: str, state_dir: Path | None, as_json: bool, now_ms: int | None, streams: tuple[str, ...]
) -> None:
    """Like status, but exit 1 naming every violation (duplicates, order, gaps, bad or foreign
    rows, unknown objects under raw/, no stream at all); exit 2 if the lake cannot be read.
    Exchange halts recorded in the lake (its meta objects) are not gaps."""
    reports, unknown = _run("verify", lake, state_dir, as_json, now_ms, streams=streams)
    bad = [r for r in reports if not r.ok]
    if not reports:
        click.echo(f"verify: no stream objects under {OBJECT_PREFIX} in lake {lake}", err=True)
        sys.exit(EXIT_VIOLATIONS)
    if bad or unknown:
        click.echo(
            f"verify: {len(bad)} of {len(reports)} stream(s) violate the lake invariants, "
            f"{len(unknown)} unknown object(s) under {OBJECT_PREFIX}",
            err=True,
        )
        sys.exit(EXIT_VIOLATIONS)
    click.echo(f"verify: {len(reports)} stream(s) OK", err=True)


@main.group()
def deadletters() -> None:
    """List and redrive dead-lettered Pub/Sub messages."""


_dl_sub = cfg.option(cfg.DEAD_LETTER_SUBSCRIPTION, required=True)


@deadletters.command("list")
@_dl_sub
@click.option("--max", "max_messages", default=100, show_default=True)
@_json
def list_dead_letters(subscription: str, max_messages: int, as_json: bool) -> None:
    """Show dead letters (id, original id, stream, size, reason); they stay dead-lettered."""
    from google.cloud import pubsub_v1

    from klinelake.backends.deadletter import pull_dead_letters, release

    client = pubsub_v1.SubscriberClient()
    letters = pull_dead_letters(subscription, max_messages, client=client)
    release(subscription, letters, client)
    if as_json:
        rows = [
            {"message_id": d.message_id, "original_message_id": d.original_message_id,
             "stream": d.stream, "size": d.size, "reason": d.reason}
            for d in letters
        ]  # fmt: skip
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
        return
    for d in letters:
        click.echo(f"{d.message_id}\toriginal={d.original_message_id or '-'}\t"
                   f"{d.stream or '-'}\t{d.size} B\t{d.reason}")  # fmt: skip
    click.echo(f"{len(letters)} dead letter(s)", err=True)


@deadletters.command("redrive")
@_dl_sub
@cfg.option(cfg.TOPIC, required=True, help="the main klines topic (projects/P/topics/T)")
@click.option("--id", "ids", multiple=True, help="message id or original message id (repeat)")
@click.option("--all", "all_", is_flag=True, help="redrive every dead letter")
@click.option("--dry-run", is_flag=True)
def redrive_dead_letters(
    subscription: str, topic: str, ids: tuple[str, ...], all_: bool, dry_run: bool
) -> None:
    """Re-publish the selected dead letters to the main topic (after fixing their cause)."""
    from klinelake.backends.deadletter import redrive

    if not ids and not all_:
        raise click.UsageError("name messages with --id, or pass --all")
    done, kept = redrive(subscription, topic, None if all_ else set(ids), dry_run=dry_run)
    verb = "would redrive" if dry_run else "redriven"
    for d in done:
        click.echo(f"{verb}: {d.message_id} ({d.stream or '-'}, was: {d.reason})")
    click.echo(f"{len(done)} {verb}, {len(kept)} kept dead-lettered", err=True)


main.add_command(verify_vision)  # `klinelake verify-vision`: the lake against Binance's archives
