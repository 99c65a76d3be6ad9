"""`python -m backfill`: parse the configuration, hand typed settings to `backfill.run`.

Exit codes: 0 done, 1 failed, 2 bad input, 3 IP banned by Binance, 4 blocked (Binance answered
HTTP 451 restricted location or 403 WAF, or exchangeInfo never answered: see docs/runbook.md,
"Blocked"), 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import click

from backfill.run import run_backfill
from backfill.settings import DEFAULT_DAYS, BadInput, Settings, iso
from klinelake import config as cfg
from klinelake.binance.rest import Blocked, IPBanned, NoAnswer
from klinelake.config import EXIT_BAD_CONFIG, EXIT_BLOCKED, split_csv
from klinelake.core.contract import check_source
from klinelake.core.errors import KlineLakeError
from klinelake.core.markets import Market, spec
from klinelake.runtime import tune_gc_for_bulk_rows

EXIT_BAD_INPUT = EXIT_BAD_CONFIG
EXIT_BANNED = 3
EXIT_INTERRUPTED = 130
EPILOG = (
    cfg.env_help(*cfg.EMULATORS)
    + "\n\n\bExit codes: 0 done, 1 failed, 2 bad input, 3 IP banned by Binance (418),"
    + "\n4 blocked: Binance answered HTTP 451/403 or exchangeInfo never answered,"
    + "\n130 interrupted (the checkpoint is kept)."
    + "\n\n\bBlocked? Binance refuses some regions (451): run from another region, or use"
    + f"\nthe market-data-only hosts: {cfg.REST_URL.env}={cfg.MARKET_DATA_REST_URL}"
    + f"\n(the streamer's {cfg.WS_URL.env}={cfg.MARKET_DATA_WS_URL}); docs/deploy.md."
)


def parse_time(text: str, *, end: bool = False) -> int:
    """Epoch ms, an ISO date (UTC; as an end: the whole day) or an ISO datetime (UTC if naive)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        return ms + 86_400_000 - 1 if end else ms
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected epoch ms, YYYY-MM-DD or an ISO datetime (UTC)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@click.command(context_settings=cfg.CONTEXT_SETTINGS, epilog=EPILOG)
@cfg.version_option("backfill")
@cfg.market_option()
@cfg.option(cfg.SYMBOLS)
@cfg.option(cfg.INTERVALS)
@click.option(
    "--start", default=None, help="ISO date/datetime (UTC) or epoch ms [default: end - days]"
)
@click.option("--end", default=None, help="inclusive [default: the last closed kline]")
@click.option(
    "--days", default=None, type=int, help=f"length of the range [default: {DEFAULT_DAYS}]"
)
@cfg.option(cfg.TOPIC)
@cfg.option(cfg.LAKE)
@cfg.option(cfg.REST_URL)
@click.option("--state-dir", default=Settings.state_dir, type=click.Path(path_type=Path))
@click.option(
    "--budget-share",
    default=Settings.budget_share,
    type=float,
    help="share of the weight (6000/min; futures 2400)",
)
@click.option(
    "--concurrency", default=Settings.concurrency, type=int, help="requests in flight at most"
)
@click.option("--missing-only", is_flag=True, help="fetch only the gaps found in the lake")
@click.option("--dry-run", is_flag=True, help="print the plan, fetch nothing")
@click.option(
    "--source",
    type=click.Choice(["rest", "vision"]),
    default=Settings.source,
    help="vision: whole months and days from the data.binance.vision archives, edges over REST",
)
@cfg.option(cfg.VISION_URL)
@click.option("--page-limit", default=None, type=int, hidden=True)
@click.option("--batch-rows", default=Settings.batch_rows, type=int, hidden=True)
def main(  # noqa: PLR0917 - click passes every option
    market: str,
    symbols: str,
    intervals: str,
    start: str | None,
    end: str | None,
    days: int | None,
    topic: str | None,
    lake: str,
    rest_url: str,
    state_dir: Path,
    budget_share: float,
    concurrency: int,
    missing_only: bool,
    dry_run: bool,
    source: str,
    vision_url: str,
    page_limit: int | None,
    batch_rows: int,
) -> None:
    """Fill the lake with history from Binance REST, as fast as the weight budget allows."""
    try:
        if market != "spot" and rest_url == cfg.DEFAULT_REST_URL:
            rest_url = spec(market).rest_url  # the spot default does not serve futures
        settings = Settings(
            market=Market(market),
            symbols=split_csv(symbols),
            intervals=split_csv(intervals),
            start_ms=parse_time(start) if start else None,
            end_ms=parse_time(end, end=True) if end else None,
            days=days,
            topic=topic or None,
            lake=lake,
            rest_url=rest_url,
            state_dir=state_dir,
            budget_share=budget_share,
            concurrency=concurrency,
            missing_only=missing_only,
            dry_run=dry_run,
            source=check_source(source),
            vision_url=vision_url,
            page_limit=page_limit,
            batch_rows=batch_rows,
        )
    except click.BadParameter as exc:
        _fail(EXIT_BAD_INPUT, str(exc.message))
    except BadInput as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    from backfill.progress import make_reporter

    reporter = make_reporter()
    tune_gc_for_bulk_rows()  # tens of thousands of acyclic rows in flight (klinelake.runtime)
    try:
        asyncio.run(run_backfill(settings, reporter))
    except BadInput as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
    except (Blocked, NoAnswer) as exc:
        _fail(EXIT_BLOCKED, str(exc))
    except IPBanned as exc:
        _fail(
            EXIT_BANNED,
            f"IP banned by Binance for {exc.retry_after_s:.0f} s (until {iso(exc.until_ms)}); "
            "no request was sent after the ban",
        )
    except KeyboardInterrupt:
        _fail(EXIT_INTERRUPTED, "interrupted; the checkpoint is kept: run the same command again")
    except KlineLakeError as exc:
        _fail(1, f"{type(exc).__name__}: {exc}")
    finally:
        reporter.close()


def _fail(code: int, message: str) -> None:
    click.echo(f"backfill: error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
