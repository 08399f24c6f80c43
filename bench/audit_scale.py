"""The audit log at scale on PostgreSQL: filtered reads, full verification, appends.

Loads N events (default 1,000,000) with a valid hash chain through COPY, over 100
models and 20 actors, then measures:
- filtered query p95: the newest page of 50 for a model, an actor, an action in a
  time window, and one request's trail (what the API runs);
- full chain verification time (GET /audit/verify);
- append throughput with 8 concurrent writers, as threads of one process and split
  over 2 processes as the service's 2 workers are, then verifies the chain again.

    python bench/audit_scale.py [--events 1000000] [--writers 8] [--processes 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.version_latency import percentile  # noqa: E402
from registry_service.db.base import CANONICAL_JSON  # noqa: E402
from registry_service.db.database import Database  # noqa: E402
from registry_service.db.migrate import upgrade  # noqa: E402
from registry_service.services.audit import (  # noqa: E402
    GENESIS_HASH,
    HASHED_COLUMNS,
    AuditFilter,
    AuditLog,
    event_hash,
)
from registry_service.services.context import Context  # noqa: E402
from tests.rig import Postgres, create_database  # noqa: E402

ACTIONS = ["version.updated", "promotion.approved", "promotion.requested", "model.updated"]
COLUMNS = (*HASHED_COLUMNS, "prev_hash", "hash")
JSON_COLUMNS = ("before", "after")


def copy_text(value) -> str:
    if value is None:
        return "\\N"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def load(db: Database, n: int) -> tuple[datetime, datetime]:
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS_HASH
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        batch = io.StringIO()
        for seq in range(1, n + 1):
            occurred = start + timedelta(seconds=seq * 3)
            model = f"model-{rng.randrange(100)}"
            fields = {
                "seq": seq,
                "occurred_at": occurred.isoformat(timespec="microseconds"),
                "actor": f"user-{rng.randrange(20)}",
                "action": ACTIONS[seq % len(ACTIONS)],
                "model_name": model,
                "model_version": rng.randrange(1, 50),
                "request_id": f"req-{seq}",
                "before": None,
                "after": {"tags": {"k": str(seq)}, "request_id": seq // 6},
                "subject": f"promotion:{seq // 6}",
            }
            digest = event_hash(prev, fields)
            # JSON columns as the service stores them (canonical text); None is NULL.
            row = [
                *(
                    CANONICAL_JSON.encode(fields[c])
                    if c in JSON_COLUMNS and fields[c] is not None
                    else fields[c]
                    for c in HASHED_COLUMNS
                ),
                prev,
                digest,
            ]
            batch.write("\t".join(copy_text(v) for v in row) + "\n")
            prev = digest
            if seq % 100_000 == 0 or seq == n:
                batch.seek(0)
                cursor.copy_expert(f"COPY audit_events ({', '.join(COLUMNS)}) FROM STDIN", batch)
                batch = io.StringIO()
        cursor.execute("UPDATE audit_chain_head SET seq = %s, hash = %s WHERE id = 1", (n, prev))
        raw.commit()
    finally:
        raw.close()
    # Vacuumed, as a table filled over months would be: otherwise autovacuum runs over
    # the million fresh rows during the measurements.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE) audit_events")
    return start, start + timedelta(seconds=n * 3)


def timed_queries(log: AuditLog, make_filter, n: int = 200) -> list[float]:
    samples = []
    for i in range(n):
        started = time.perf_counter()
        page = log.list(make_filter(i), 50, None)
        samples.append((time.perf_counter() - started) * 1000)
        assert page.items is not None
    return samples


def append_for(url: str, threads: int, start_at: float, seconds: float) -> int:
    """One process's writers: each appends as fast as it can for ``seconds``."""
    db = Database(url, pool_size=threads + 1)
    log = AuditLog(db)
    counts = [0] * threads

    def writer(i: int, stop_at: float) -> None:
        ctx = Context(actor=f"writer-{os.getpid()}-{i}")
        while time.monotonic() < stop_at:
            log.record(ctx, "model.updated", model_name=f"model-{i}", after={"n": counts[i]})
            counts[i] += 1

    time.sleep(max(0.0, start_at - time.time()))
    stop_at = time.monotonic() + seconds
    pool = [threading.Thread(target=writer, args=(i, stop_at)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    db.dispose()
    return sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument(
        "--processes", type=int, default=2, help="writers split as the service's workers are"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    pg = Postgres.start()
    try:
        url = create_database(pg.url, "audit_bench")
        upgrade(url)
        db = Database(url, pool_size=args.writers + 2)
        log = AuditLog(db)

        started = time.perf_counter()
        first, last = load(db, args.events)
        print(f"loaded {args.events:,} chained events in {time.perf_counter() - started:.1f} s")

        rng = random.Random(1)
        span = (last - first).total_seconds()

        def window(_):
            since = first + timedelta(seconds=rng.uniform(0, span - 86400))
            return AuditFilter(action="promotion.approved", since=since, until=since + timedelta(1))

        def model_window(i):
            since = first + timedelta(seconds=rng.uniform(0, span - 86400))
            return AuditFilter(
                model_name=f"model-{i % 100}", since=since, until=since + timedelta(1)
            )

        rows = {
            "newest 50 of one model": timed_queries(
                log, lambda i: AuditFilter(model_name=f"model-{i % 100}")
            ),
            "newest 50 of one actor": timed_queries(
                log, lambda i: AuditFilter(actor=f"user-{i % 20}")
            ),
            "one action in a 1-day window": timed_queries(log, window),
            "one model in a 1-day window": timed_queries(log, model_window),
            "one promotion's trail (subject)": timed_queries(
                log, lambda i: AuditFilter(subject=f"promotion:{rng.randrange(args.events // 6)}")
            ),
        }
        for label, samples in rows.items():
            print(
                f"query {label:<34} p50 {percentile(samples, 50):6.2f}  "
                f"p95 {percentile(samples, 95):6.2f} ms"
            )

        serial = log.verify(workers=1)
        print(
            f"verify, one process: ok={serial.ok} events={serial.events_checked:,} in "
            f"{serial.seconds:.1f} s ({serial.events_checked / serial.seconds:,.0f} events/s)"
        )
        result = log.verify()
        print(
            f"verify: ok={result.ok} events={result.events_checked:,} in {result.seconds:.1f} s "
            f"({result.events_checked / result.seconds:,.0f} events/s, "
            f"{serial.seconds / result.seconds:.2f}x one process)"
        )

        checkpoint = (result.head_seq, result.head_hash)
        for processes in (1, args.processes):
            threads = args.writers // processes
            started = time.time() + 2  # every process connected before the clock starts
            with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
                counts = list(
                    pool.map(
                        append_for,
                        [url] * processes,
                        [threads] * processes,
                        [started] * processes,
                        [args.seconds] * processes,
                    )
                )
            total = sum(counts)
            print(
                f"append: {processes * threads} writers ({processes} process(es) x {threads} "
                f"threads), {total:,} events in {args.seconds:.0f} s = "
                f"{total / args.seconds:,.0f} events/s"
            )
        after = log.verify()
        print(
            f"verify after appends: ok={after.ok} events={after.events_checked:,} "
            f"head={after.head_seq:,} in {after.seconds:.1f} s"
        )
        tail = log.verify(*checkpoint)
        print(
            f"verify from the pre-append checkpoint: ok={tail.ok} "
            f"events={tail.events_checked:,} in {tail.seconds:.2f} s"
        )
        db.dispose()
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
