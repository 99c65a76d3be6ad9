"""Write the log-based metric and the alert policies that watch the pipeline from outside the VM.

usage: python infra/monitoring_policies.py OUT_DIR --function NAME --dead-letter-subscription SUB
           --intervals 1m,1h --behind N [--channels CH1,CH2] [--metric NAME]

OUT_DIR/metric.json      the log-based counter `klines_written`: one point per write line of the
                         function (ingest_function/handler.py logs `stream`, `interval` and
                         `newest_open_time` for every batch it writes), labelled by stream and
                         interval (https://cloud.google.com/logging/docs/logs-based-metrics)
OUT_DIR/policy-*.json    alert policies (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/
                         projects.alertPolicies):
                         * freshness-<interval>: a stream of that interval wrote nothing for
                           `behind` intervals (metric absence, per stream time series);
                         * dead-letter: the dead-letter inspection subscription holds messages.
OUT_DIR/policies.tsv     one line per policy: display name, file, fingerprint (a hash of the
                         policy, also stored as its user label `klines-fingerprint`)

Printed on stderr: the intervals the freshness alert cannot cover (absence conditions allow at
most 23 h 30 min; a `1d` stream with behind=3 needs 72 h) - `klinelake status` covers those.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from klinelake.core.intervals import NOMINAL_MS, check_interval

METRIC = "klines_written"
MAX_ABSENT_S = 23 * 3600 + 30 * 60  # the longest absence duration Cloud Monitoring accepts
MIN_ABSENT_S = 120
FINGERPRINT_LABEL = "klines-fingerprint"


def metric_config(function: str) -> dict[str, Any]:
    return {
        "description": "klines: one point per batch the ingest function wrote (newest_open_time "
        "in the log line), by stream and interval; infra/monitoring.sh",
        "filter": (
            'resource.type="cloud_run_revision" '
            f'AND resource.labels.service_name="{function}" '
            "AND jsonPayload.newest_open_time>0"
        ),
        "labelExtractors": {
            "stream": "EXTRACT(jsonPayload.stream)",
            "interval": "EXTRACT(jsonPayload.interval)",
        },
        "metricDescriptor": {
            "metricKind": "DELTA",
            "valueType": "INT64",
            "unit": "1",
            "labels": [
                {"key": "stream", "valueType": "STRING", "description": "SYMBOL@interval"},
                {"key": "interval", "valueType": "STRING", "description": "1m, 1h, ..."},
            ],
        },
    }


def absent_seconds(interval: str, behind: int) -> int | None:
    """How long a stream of `interval` may write nothing before it is `behind` intervals late;
    None when Cloud Monitoring cannot wait that long (see MAX_ABSENT_S)."""
    seconds = behind * NOMINAL_MS[check_interval(interval)] // 1000
    if seconds > MAX_ABSENT_S:
        return None
    return max(MIN_ABSENT_S, seconds)


def freshness_policy(
    interval: str, behind: int, metric: str, channels: list[str]
) -> dict[str, Any] | None:
    seconds = absent_seconds(interval, behind)
    if seconds is None:
        return None
    return {
        "displayName": f"klines: a {interval} stream is behind",  # stable: found by it
        "combiner": "OR",
        "conditions": [
            {
                "displayName": f"no {interval} batch written for {behind} intervals ({seconds} s)",
                "conditionAbsent": {
                    "filter": (
                        f'metric.type="logging.googleapis.com/user/{metric}" '
                        'AND resource.type="cloud_run_revision" '
                        f'AND metric.labels.interval="{interval}"'
                    ),
                    "duration": f"{seconds}s",
                    "aggregations": [
                        {
                            "alignmentPeriod": "60s",
                            "perSeriesAligner": "ALIGN_SUM",
                            "crossSeriesReducer": "REDUCE_SUM",
                            "groupByFields": ["metric.label.stream"],
                        }
                    ],
                    "trigger": {"count": 1},
                },
            }
        ],
        "documentation": {
            "mimeType": "text/markdown",
            "content": "The lake has received nothing for this stream for "
            f"{behind} x {interval}. docs/runbook.md, 'Alert: a stream is behind'.",
        },
        "notificationChannels": channels,
    }


def dead_letter_policy(subscription: str, channels: list[str]) -> dict[str, Any]:
    return {
        "displayName": "klines: messages in the dead-letter subscription",
        "combiner": "OR",
        "conditions": [
            {
                "displayName": f"{subscription} holds undelivered messages",
                "conditionThreshold": {
                    "filter": (
                        'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" '
                        'AND resource.type="pubsub_subscription" '
                        f'AND resource.labels.subscription_id="{subscription}"'
                    ),
                    "comparison": "COMPARISON_GT",
                    "thresholdValue": 0,
                    "duration": "60s",
                    "aggregations": [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_MAX"}],
                    "trigger": {"count": 1},
                },
            }
        ],
        "documentation": {
            "mimeType": "text/markdown",
            "content": "A message was dead-lettered (poison, or failed every delivery "
            "attempt). docs/runbook.md, 'Alert: dead letters'.",
        },
        "notificationChannels": channels,
    }


def with_fingerprint(policy: dict[str, Any]) -> tuple[dict[str, Any], str]:
    fp = hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:40]
    return {**policy, "userLabels": {FINGERPRINT_LABEL: fp}}, fp


def write_all(
    out: Path,
    *,
    function: str,
    subscription: str,
    intervals: list[str],
    behind: int,
    channels: list[str],
    metric: str = METRIC,
) -> list[str]:
    """Write the files; return the intervals the freshness alert cannot cover."""
    if behind < 1:
        raise ValueError("--behind must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metric.json").write_text(json.dumps(metric_config(function), indent=2) + "\n")
    rows: list[str] = []
    uncovered: list[str] = []
    policies: list[tuple[str, dict[str, Any] | None]] = [
        (f"freshness-{i}", freshness_policy(i, behind, metric, channels)) for i in intervals
    ]
    policies.append(("dead-letter", dead_letter_policy(subscription, channels)))
    for name, policy in policies:
        if policy is None:
            uncovered.append(name.removeprefix("freshness-"))
            continue
        labelled, fp = with_fingerprint(policy)
        path = out / f"policy-{name}.json"
        path.write_text(json.dumps(labelled, indent=2) + "\n")
        rows.append(f"{policy['displayName']}\t{path}\t{fp}")
    (out / "policies.tsv").write_text("".join(r + "\n" for r in rows))
    return uncovered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--function", required=True)
    parser.add_argument("--dead-letter-subscription", required=True)
    parser.add_argument("--intervals", required=True, help="comma-separated, e.g. 1m,1h")
    parser.add_argument("--behind", type=int, default=3)
    parser.add_argument("--channels", default="", help="notification channel names, comma list")
    parser.add_argument("--metric", default=METRIC)
    args = parser.parse_args(argv)
    intervals = list(dict.fromkeys(i for i in args.intervals.split(",") if i))
    try:
        uncovered = write_all(
            args.out,
            function=args.function,
            subscription=args.dead_letter_subscription,
            intervals=intervals,
            behind=args.behind,
            channels=[c for c in args.channels.split(",") if c],
            metric=args.metric,
        )
    except Exception as exc:
        print(f"monitoring_policies.py: {exc}", file=sys.stderr)
        return 2
    for interval in uncovered:
        print(
            f"note: no freshness alert for {interval} streams ({args.behind} x {interval} is "
            "longer than Cloud Monitoring's 23h30m absence limit); watch them with "
            "`klinelake status`",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
