"""What a run did (`RunResult`, the summary line's figures) and who is told as it goes
(`Reporter`: backfill/progress.py prints it, tests record it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from backfill.plan import (
    Page,
    Plan,
)
from backfill.settings import Settings
from klinelake.core.intervals import (
    Gap,
)


@dataclass
class RunResult:
    plan: Plan
    pages_skipped: int = 0
    pages_fetched: int = 0
    rows_sent: int = 0
    batches_sent: int = 0
    empty_ranges: list[tuple[str, Gap]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    weight_charged: int = 0
    max_used_weight: int = 0
    budget: int = 0
    elapsed_s: float = 0.0


class Reporter(Protocol):
    def planned(self, plan: Plan, skipped: int, budget: int, settings: Settings) -> None: ...

    def page_done(self, page: Page, rows: int, used_weight: int) -> None: ...

    def empty(self, stream: str, gap: Gap) -> None: ...

    def finished(self, result: RunResult) -> None: ...
