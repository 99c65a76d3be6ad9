"""Progress: a rich progress bar on a terminal (rows, pages, weight used, ETA), structured JSON
log lines (klinelake.logs) otherwise."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from backfill.plan import Page, Plan
from backfill.result import RunResult
from backfill.settings import Settings, iso
from klinelake.core.intervals import Gap
from klinelake.core.row import ROW_PATH
from klinelake.logs import log_event, setup_logging

logger = logging.getLogger("backfill")


def plan_summary(plan: Plan, skipped: int, budget: int) -> dict[str, Any]:
    todo = plan.page_count - skipped
    weight = todo * 2
    return {
        "streams": [
            {
                "stream": s.stream,
                "first": iso(s.first) if s.pages else None,
                "last": iso(s.last) if s.pages else None,
                "pages": len(s.pages),
                "rows_expected": s.rows_expected,
            }
            for s in plan.streams
        ],
        "pages": plan.page_count,
        "pages_done_before": skipped,
        "pages_to_fetch": todo,
        "weight": weight,
        "budget_per_minute": budget,
        # The weight budget is the hard bound; latency and concurrency may make it slower.
        "expected_s_at_budget": round(60.0 * weight / budget, 1) if weight > budget else 0.0,
    }


def result_summary(result: RunResult) -> dict[str, Any]:
    return {
        "pages_fetched": result.pages_fetched,
        "pages_skipped": result.pages_skipped,
        "rows_sent": result.rows_sent,
        "batches_sent": result.batches_sent,
        "empty_ranges": [[s, a, b] for s, (a, b) in result.empty_ranges],
        "requests": result.requests,
        "retries": result.retries,
        "weight_charged": result.weight_charged,
        "max_used_weight_1m": result.max_used_weight,
        "budget_per_minute": result.budget,
        "elapsed_s": round(result.elapsed_s, 2),
        # the compiled REST page parser, or the pure Python path at ~3x the CPU (setup.py)
        "row_path": ROW_PATH,
    }


class LogReporter:
    """Plain JSON lines on stderr (not a terminal)."""

    def __init__(self, stream: IO[str] | None = None, every: int = 50) -> None:
        setup_logging("INFO", stream)
        self.every = every
        self.pages = 0
        self.rows = 0
        self.total = 0

    def planned(self, plan: Plan, skipped: int, budget: int, settings: Settings) -> None:
        self.total = plan.page_count - skipped
        log_event(
            logger, "INFO", "dry run: plan" if settings.dry_run else "plan",
            **plan_summary(plan, skipped, budget),
        )  # fmt: skip

    def page_done(self, page: Page, rows: int, used_weight: int) -> None:
        self.pages += 1
        self.rows += rows
        if self.pages % self.every == 0 or self.pages == self.total:
            log_event(
                logger, "INFO", "progress", pages=self.pages, pages_total=self.total,
                rows=self.rows, used_weight_1m=used_weight,
            )  # fmt: skip

    def empty(self, stream: str, gap: Gap) -> None:
        log_event(
            logger, "INFO", "confirmed empty (no klines at Binance)", stream=stream,
            first=gap[0], last=gap[1], first_iso=iso(gap[0]), last_iso=iso(gap[1]),
        )  # fmt: skip

    def finished(self, result: RunResult) -> None:
        log_event(logger, "INFO", "done", **result_summary(result))

    def close(self) -> None:
        """Leave the terminal clean, also after an error."""


class BarReporter(LogReporter):
    """A rich progress bar on a terminal."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]backfill"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pages · {task.fields[rows]:,} rows · weight {task.fields[weight]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task: Any = None

    def planned(self, plan: Plan, skipped: int, budget: int, settings: Settings) -> None:
        summary = plan_summary(plan, skipped, budget)
        for s in summary["streams"]:
            self.console.print(
                f"{s['stream']}: {s['first']} .. {s['last']}  {s['pages']} pages, "
                f"{s['rows_expected']:,} rows"
            )
        self.console.print(
            f"{summary['pages_to_fetch']} pages to fetch ({skipped} done before), weight "
            f"{summary['weight']}, budget {budget}/min, at least "
            f"{summary['expected_s_at_budget']} s at the budget"
        )
        if settings.dry_run:
            return
        self.total = summary["pages_to_fetch"]
        self.progress.start()
        self.task = self.progress.add_task("backfill", total=self.total, rows=0, weight=0)

    def page_done(self, page: Page, rows: int, used_weight: int) -> None:
        self.pages += 1
        self.rows += rows
        if self.task is not None:
            self.progress.update(self.task, advance=1, rows=self.rows, weight=used_weight)

    def empty(self, stream: str, gap: Gap) -> None:
        self.progress.console.print(
            f"{stream}: no klines at Binance {iso(gap[0])} .. {iso(gap[1])} (confirmed empty)"
        )

    def finished(self, result: RunResult) -> None:
        self.close()
        s = result_summary(result)
        self.console.print(
            f"done: {s['pages_fetched']} pages, {s['rows_sent']:,} rows in {s['elapsed_s']} s; "
            f"{s['requests']} requests, {s['retries']} retries, weight {s['weight_charged']} "
            f"(max used {s['max_used_weight_1m']}/{s['budget_per_minute']})"
        )

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def make_reporter() -> LogReporter:
    return BarReporter() if sys.stderr.isatty() else LogReporter()
