"""`python -m backfill`: parse the configuration, hand typed settings to `backfill.run`.

Exit codes: 0 done, 1 failed, 2 bad input, 3 IP banned by Binance, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import click

from backfill.run import BadInput, Settings, iso, run_backfill
from klinelake.binance_rest import IPBanned
from klinelake.errors import KlineLakeError
from klinelake.markets import Market, spec

EXIT_BAD_INPUT = 2
EXIT_BANNED = 3
EXIT_INTERRUPTED = 130


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


def _csv(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


@click.command(
    context_settings={
        "show_default": True,
        "help_option_names": ["-h", "--help"],
    }
)
@click.option(
    "--market",
    type=click.Choice([m.value for m in Market]),
    default="spot",
    help="spot, um (USD-M futures, /fapi) or cm (COIN-M futures, /dapi); see docs/markets.md",
)
@click.option("--symbols", default="BTCUSDC", help="comma-separated, e.g. BTCUSDC,ETHUSDT")
@click.option("--intervals", default="1h", help="comma-separated, e.g. 1h,1m (case-sensitive)")
@click.option(
    "--start", default=None, help="ISO date/datetime (UTC) or epoch ms [default: end - days]"
)
@click.option("--end", default=None, help="inclusive [default: the last closed kline]")
@click.option("--days", default=None, type=int, help="length of the range [default: 30]")
@click.option(
    "--topic",
    envvar="KLINES_TOPIC",
    show_envvar=True,
    default=None,
    help="publish to this Pub/Sub topic",
)
@click.option(
    "--lake",
    envvar="LAKE_URI",
    show_envvar=True,
    default="./lake",
    help="gs://BUCKET or a directory",
)
@click.option(
    "--rest-url",
    envvar="BINANCE_REST_URL",
    show_envvar=True,
    default=None,
    help="REST base [default: the market's: api.binance.com, fapi.binance.com, dapi.binance.com]",
)
@click.option("--state-dir", default="./state", type=click.Path(path_type=Path))
@click.option(
    "--budget-share",
    default=0.8,
    type=float,
    help="share of the weight (6000/min spot, 2400 futures)",
)
@click.option("--concurrency", default=10, type=int, help="requests in flight at most")
@click.option("--missing-only", is_flag=True, help="fetch only the gaps found in the lake")
@click.option("--dry-run", is_flag=True, help="print the plan, fetch nothing")
@click.option(
    "--source",
    type=click.Choice(["rest", "vision"]),
    default="rest",
    help="vision: whole months from the data.binance.vision dumps, the edges over REST",
)
@click.option(
    "--vision-url", default="https://data.binance.vision", help="base URL of the monthly dumps"
)
@click.option("--page-limit", default=None, type=int, hidden=True)
@click.option("--batch-rows", default=5000, type=int, hidden=True)
def main(**o: object) -> None:
    """Fill the lake with history from Binance REST, as fast as the weight budget allows."""
    market = Market(str(o["market"]))
    try:
        settings = Settings(
            market=market,
            symbols=_csv(str(o["symbols"])),
            intervals=_csv(str(o["intervals"])),
            start_ms=parse_time(str(o["start"])) if o["start"] else None,
            end_ms=parse_time(str(o["end"]), end=True) if o["end"] else None,
            days=o["days"],  # type: ignore[arg-type]
            topic=o["topic"] or None,  # type: ignore[arg-type]
            lake=str(o["lake"]),
            rest_url=str(o["rest_url"] or spec(market).rest_url),
            state_dir=o["state_dir"],  # type: ignore[arg-type]
            budget_share=o["budget_share"],  # type: ignore[arg-type]
            concurrency=o["concurrency"],  # type: ignore[arg-type]
            missing_only=bool(o["missing_only"]),
            dry_run=bool(o["dry_run"]),
            source=str(o["source"]),
            vision_url=str(o["vision_url"]),
            page_limit=o["page_limit"],  # type: ignore[arg-type]
            batch_rows=o["batch_rows"],  # type: ignore[arg-type]
        )
    except click.BadParameter as exc:
        _fail(EXIT_BAD_INPUT, str(exc.message))
    from backfill.progress import make_reporter

    reporter = make_reporter()
    # A backfill holds tens of thousands of rows in flight, all acyclic; with the default
    # threshold (700) the cyclic GC traverses them again and again: 18% of the run's CPU.
    gc.set_threshold(50_000, 20, 20)
    try:
        asyncio.run(run_backfill(settings, reporter))
    except BadInput as exc:
        _fail(EXIT_BAD_INPUT, str(exc))
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
