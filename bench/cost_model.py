"""The monthly cost model of docs/cost.md (run by hand; prints the tables there).

    .venv/bin/python bench/cost_model.py

List prices (USD, us-central1, tier 1), each from the provider's page:
- Cloud Storage: Class A $0.005 / 1,000 ops, Class B $0.0004 / 1,000 ops, Standard storage
  $0.020 / GB-month; deletes are free (cloud.google.com/storage/pricing-examples,
  cloud.google.com/storage/pricing#operations-by-class).
- Pub/Sub: $40 / TiB of throughput, publish and delivery each counted, at least 1,000 bytes per
  request; first 10 GiB a month free (cloud.google.com/pubsub/pricing).
- Cloud Run functions (gen2 bills as Cloud Run, request-based): $0.000024 / vCPU-second,
  $0.0000025 / GiB-second, $0.40 / million requests, each request rounded up to 100 ms; free:
  180,000 vCPU-s, 360,000 GiB-s, 2 M requests a month (cloud.google.com/run/pricing).
- Compute Engine e2-micro: about $0.0084 / hour (~$6.13 a month); one is free a month in
  us-west1, us-central1 or us-east1 (cloud.google.com/free/docs/free-cloud-features).

Operation counts per message are the measured ones (bench/bench_function.py --cpu, this tree):
a live message is 2 Class A ops (the part's upload, the compose) and a free delete, plus one
Class B stat when the function instance has not seen the object yet (counted here: the worst
case); the function is deployed with 512 MiB (0.333 vCPU), concurrency 1, and a live message
takes under 200 ms of wall time (two billing units).
"""

from __future__ import annotations

MONTH_S = 30 * 86_400
CLASS_A, CLASS_B = 0.005 / 1000, 0.0004 / 1000
PUBSUB_PER_BYTE = 40 / 2**40
PUBSUB_MIN_BYTES = 1000
PUBSUB_FREE_BYTES = 10 * 2**30
VCPU_S, GIB_S, REQUEST = 0.000024, 0.0000025, 0.40 / 1e6
FREE_VCPU_S, FREE_GIB_S, FREE_REQUESTS = 180_000, 360_000, 2_000_000
FUNCTION_VCPU, FUNCTION_GIB, BILLED_S = 0.333, 0.5, 0.2
VM_MONTH = 0.0084 * 730
ROW_BYTES = 300  # one row in a message (JSON), about the same in the lake

INTERVAL_S = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14_400, "6h": 21_600, "8h": 28_800, "12h": 43_200, "1d": 86_400, "3d": 259_200,
    "1w": 604_800, "1M": 2_592_000,
}  # fmt: skip


def messages(interval: str, flush_s: int) -> float:
    """Live messages a stream sends in a month: one per close, or one per flush window."""
    closes = MONTH_S / INTERVAL_S[interval]
    return min(closes, MONTH_S / flush_s) if flush_s else closes


def month_cost(streams: dict[str, int], flush_s: int, vm: bool = True) -> dict[str, float]:
    msgs = rows = 0.0
    for interval, count in streams.items():
        msgs += count * messages(interval, flush_s)
        rows += count * MONTH_S / INTERVAL_S[interval]
    per_msg_bytes = max(PUBSUB_MIN_BYTES, ROW_BYTES * rows / max(msgs, 1) + 200)
    pubsub_bytes = 2 * msgs * per_msg_bytes  # publish + push delivery
    out = {
        "messages": msgs,
        "gcs_ops": msgs * (2 * CLASS_A + CLASS_B),
        "gcs_storage": rows * ROW_BYTES / 1e9 * 0.020,  # one month's new rows, for a month
        "pubsub": max(0.0, pubsub_bytes - PUBSUB_FREE_BYTES) * PUBSUB_PER_BYTE,
        "function": max(0.0, msgs - FREE_REQUESTS) * REQUEST
        + max(0.0, msgs * BILLED_S * FUNCTION_VCPU - FREE_VCPU_S) * VCPU_S
        + max(0.0, msgs * BILLED_S * FUNCTION_GIB - FREE_GIB_S) * GIB_S,
        "vm": VM_MONTH if vm else 0.0,
    }
    out["total"] = sum(v for k, v in out.items() if k != "messages")
    return out


def main() -> None:
    symbols = 1_500
    scenarios = {
        "1 stream (BTCUSDC 1h)": {"1h": 1},
        "100 streams of 1m": {"1m": 100},
        "spot market without 1s (1,500 x 15)": {i: symbols for i in INTERVAL_S if i != "1s"},
        "spot market, every interval (1,500 x 16 = 24,000)": {i: symbols for i in INTERVAL_S},
    }
    print(f"GCS operations per live message: ${2 * CLASS_A + CLASS_B:.7f}")
    print("| scenario | flush window | messages/month | GCS ops | GCS storage | Pub/Sub | "
          "function | VM | total/month |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, streams in scenarios.items():
        for flush in (0, 60, 300):
            c = month_cost(streams, flush)
            window = "none (today)" if not flush else f"{flush} s"
            print(f"| {name} | {window} | {c['messages']:,.0f} | ${c['gcs_ops']:,.2f} | "
                  f"${c['gcs_storage']:,.2f} | ${c['pubsub']:,.2f} | ${c['function']:,.2f} | "
                  f"${c['vm']:,.2f} | **${c['total']:,.2f}** |")  # fmt: skip


if __name__ == "__main__":
    main()
