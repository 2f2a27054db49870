#!/usr/bin/env python3
"""Prints the benchmark table: medians over the runs of bench/run.sh and the ratios between
them (each ratio is computed from the medians of figures measured in the same invocation)."""

import argparse
import statistics
import sys
from collections import defaultdict


def load(path):
    values = defaultdict(list)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                continue
            key, _run, value = parts
            try:
                values[key].append(float(value))
            except ValueError:
                pass
    return values


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--sizes", default="")
    args = ap.parse_args()
    values = load(args.results)

    def med(key):
        v = values.get(key)
        return statistics.median(v) if v else None

    def ratio(a, b):
        x, y = med(a), med(b)
        if x is None or y is None or y == 0:
            return None
        return x / y

    rows = []  # (section, metric, value, unit, target, ok, per-run values)

    def row(section, metric, value, unit, target="", ok=None, runs=()):
        rows.append((section, metric, value, unit, target, ok, runs))

    def fig(section, metric, key, unit, target="", check=None):
        v = med(key)
        row(section, metric, v, unit, target, None if v is None or check is None else check(v),
            values.get(key, ()))

    def rat(section, metric, a, b, target="", check=None):
        v = ratio(a, b)
        row(section, metric, v, "×", target, None if v is None or check is None else check(v))

    s = "a apply"
    fig(s, "brewlytics replicate catch-up", "a_brewlytics_cps", "changes/s")
    fig(s, "native subscription catch-up", "a_subscription_cps", "changes/s")
    fig(s, "pg_recvlogical decode only", "a_recvlogical_cps", "changes/s")
    rat(s, "brewlytics / subscription", "a_brewlytics_cps", "a_subscription_cps", "≥ 1.3", lambda v: v >= 1.3)
    rat(s, "brewlytics / pg_recvlogical", "a_brewlytics_cps", "a_recvlogical_cps")
    fig(s, "journal bytes per change (catch-up, indexes included)", "a_journal_bytes_per_change", "bytes")
    fig(s, "replay --from-lsn 0/0 of the same journal", "a_replay_cps", "changes/s")
    rat(s, "replay / subscription", "a_replay_cps", "a_subscription_cps", "≥ 1.0", lambda v: v >= 1.0)

    s = "b freshness"
    fig(s, "brewlytics p50 (201 → fact)", "b_ours_p50_ms", "ms", "< 100", lambda v: v < 100)
    fig(s, "brewlytics p99", "b_ours_p99_ms", "ms", "< 300", lambda v: v < 300)
    fig(s, "brewlytics missing orders", "b_ours_missing", "orders", "0", lambda v: v == 0)
    fig(s, "POST /orders p99 under that load", "b_ours_post_p99_ms", "ms")
    fig(s, "API errors", "b_ours_errors", "requests")
    fig(s, "seed trigger + 5 s poll p50", "b_seed_p50_ms", "ms")
    fig(s, "seed trigger + 5 s poll p99", "b_seed_p99_ms", "ms")
    fig(s, "seed design missing orders", "b_seed_missing", "orders")
    rat(s, "seed p50 / brewlytics p50", "b_seed_p50_ms", "b_ours_p50_ms")

    s = "c write cost"
    fig(s, "order tx, plain tables", "c_plain_tps", "tps")
    fig(s, "order tx, seed trigger", "c_trigger_tps", "tps")
    fig(s, "order tx, our slot consumed", "c_slot_tps", "tps")
    rat(s, "trigger / plain", "c_trigger_tps", "c_plain_tps")
    trig = ratio("c_trigger_tps", "c_plain_tps")
    rat(s, "slot consumed / plain", "c_slot_tps", "c_plain_tps", "> trigger/plain",
        (lambda v: v > trig) if trig is not None else None)
    fig(s, "WAL per order, plain", "c_plain_wal_per_order", "bytes")
    fig(s, "WAL per order, seed trigger", "c_trigger_wal_per_order", "bytes")
    fig(s, "WAL per order, slot consumed", "c_slot_wal_per_order", "bytes")
    rat(s, "WAL trigger / plain", "c_trigger_wal_per_order", "c_plain_wal_per_order")
    wtrig = ratio("c_trigger_wal_per_order", "c_plain_wal_per_order")
    rat(s, "WAL slot / plain", "c_slot_wal_per_order", "c_plain_wal_per_order", "< trigger's",
        (lambda v: v < wtrig) if wtrig is not None else None)
    fig(s, "POST /orders, 8 users (slot consumed)", "c_api_tps", "orders/s")
    fig(s, "API errors", "c_api_errors", "requests")
    rat(s, "POST /orders / pgbench (slot consumed)", "c_api_tps", "c_slot_tps", "≥ 0.8", lambda v: v >= 0.8)

    s = "d initial copy"
    fig(s, "brewlytics first start", "d_brewlytics_rows_s", "rows/s")
    fig(s, "journal bytes per copied row (indexes included)", "d_journal_bytes_per_row", "bytes")
    fig(s, "pg_dump | psql", "d_pgdump_rows_s", "rows/s")
    rat(s, "brewlytics / pg_dump|psql", "d_brewlytics_rows_s", "d_pgdump_rows_s", "≥ 1.0", lambda v: v >= 1.0)

    s = "e memory"
    fig(s, "peak RSS, catch-up (a)", "e_rss_catchup_mb", "MB", "< 150", lambda v: v < 150)
    fig(s, "peak RSS, one large transaction", "e_rss_big_tx_mb", "MB", "< 150", lambda v: v < 150)
    fig(s, "large transaction apply rate", "e_big_tx_cps", "changes/s")
    rat(s, "large transaction / catch-up (a)", "e_big_tx_cps", "a_brewlytics_cps", "≥ 1.0", lambda v: v >= 1.0)
    fig(s, "large transaction, commit → visible", "e_big_tx_visible_ms", "ms", "≤ 1000", lambda v: v <= 1000)
    fig(s, "large transaction, spilled to the source's disk", "e_source_spill_mb", "MB")
    fig(s, "large transaction, streamed while it ran", "e_source_stream_mb", "MB")
    fig(s, "peak RSS, initial copy (d)", "e_rss_initial_copy_mb", "MB")

    s = "f clickstream"
    fig(s, "events through API → facts", "f_events_s", "events/s")
    fig(s, "freshness p50 (API receive → OLAP)", "f_p50_ms", "ms", "< 1000", lambda v: v < 1000)
    fig(s, "freshness p99", "f_p99_ms", "ms")
    fig(s, "API errors", "f_errors", "requests")

    rows = [r for r in rows if r[2] is not None]
    if not rows:
        print("no results")
        return 1
    mode = "quick, 1 run" if args.quick else f"medians of {args.runs} runs"
    print(f"\nBrewlytics benchmarks ({mode}); {args.sizes}")
    header = f"{'':<14} {'metric':<40} {'value':>12} {'unit':<10} {'target':<15} {'':<7}{'runs':<20}"
    print(header)
    print("-" * len(header))
    def show(value, unit):
        if unit == "×" or (abs(value) < 100 and value != int(value)):
            return f"{value:.2f}"
        return f"{value:,.0f}"

    for section, metric, value, unit, target, ok, runs in rows:
        mark = "" if ok is None else ("ok" if ok else "MISSED")
        each = " / ".join(show(v, unit) for v in runs) if len(runs) > 1 else ""
        print(f"{section:<14} {metric:<40} {show(value, unit):>12} {unit:<10} {target:<15} {mark:<7}{each}")
    runs_per_key = {k: len(v) for k, v in values.items()}
    if runs_per_key and min(runs_per_key.values()) != max(runs_per_key.values()):
        print(f"(uneven run counts: {runs_per_key})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
