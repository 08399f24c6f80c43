"""Monitoring at scale: 10 million logged predictions on PostgreSQL.

Loads 10M prediction rows over 7 days for 5 models (the busiest has 40%), with the
per-minute rollups the log writer keeps for them (built by the real rollup code from
synthetic predictions), then measures through the running service (gunicorn 2x8,
PostgreSQL, a real `mlflow server`):

- GET /models/{m}/monitoring for the busiest model: a 24-hour and a 7-day window, and
  the 24-hour window as an hourly series;
- GET /models/{m}/drift over a day for one version with a reference;
- the write rate the prediction log sustains with 8 predicting clients, and predict p95
  with the log on against the same service with the log off (REGISTRY_PREDICTION_LOG=0).

    python bench/monitoring_scale.py [--rows 10000000] [--seconds 20] [--clients 8]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving_latency import (  # noqa: E402
    BODY,
    FEATURES,
    cli,
    issue_tokens,
    promote,
    save_pipeline,
)
from bench.version_latency import percentile, start_service, stop  # noqa: E402
from tests.rig import MlflowServer, Postgres, create_database, free_port  # noqa: E402

MODELS = ["m0", "m1", "m2", "m3", "m4"]
SHARES = [0.40, 0.15, 0.15, 0.15, 0.15]
DAYS = 7
MINUTES = DAYS * 24 * 60
GROUPS = [(1, "champion"), (2, "challenger")]


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def load_predictions(pg_url: str, rows: int, now: datetime) -> None:
    """Raw rows, generated inside PostgreSQL (the table the writer appends to)."""
    import psycopg2

    start = now - timedelta(days=DAYS)
    cuts = []
    edge = 0.0
    for share in SHARES:
        edge += share
        cuts.append(edge)
    case = " ".join(
        f"WHEN mod(i, 1000) < {int(c * 1000)} THEN '{m}'" for m, c in zip(MODELS, cuts, strict=True)
    )
    with psycopg2.connect(_dsn(pg_url)) as conn, conn.cursor() as cur:
        cur.execute(
            f"""
            INSERT INTO predictions (request_id, model_name, model_version, variant,
                subject_hash, principal, status, fallback, latency_ms, inputs, outputs,
                created_at)
            SELECT md5(i::text), CASE {case} ELSE 'm4' END, 1 + mod(i, 2),
                CASE WHEN mod(i, 2) = 0 THEN 'challenger' ELSE 'champion' END, NULL,
                'bench', CASE WHEN mod(i, 97) = 0 THEN 'error' ELSE 'ok' END, false,
                5 + mod(i, 23), '{{"dataframe_split": {{"columns": ["f0"], "data": [[0.5]]}}}}',
                (CASE WHEN mod(i, 3) = 0 THEN '[1]' ELSE '[0]' END)::json,
                %s::timestamptz + ((i::float / %s) * interval '{DAYS} days')
            FROM generate_series(1, %s) AS i
            """,
            (start, rows, rows),
        )


def rollup_templates(per_group_minute: int, count: int, sample_size: int):
    """(served, feedback, sample) documents made by the real rollup code."""
    from registry_service.monitoring.rollup import (
        ServedBatch,
        empty_feedback,
        feedback_delta,
        merge_feedback,
    )

    rng = random.Random(1)
    out = []
    for _ in range(count):
        batch = ServedBatch(sample_size, rng)
        feedback = empty_feedback()
        for i in range(per_group_minute):
            row = {f: round(rng.random(), 4) for f in FEATURES}
            answer = [int(row["f0"] + row["f3"] > 1.0)]
            status = "error" if rng.random() < 0.01 else "ok"
            batch.add(status, False, rng.lognormvariate(2.0, 0.4), [row], answer)
            if status == "ok" and i % 4 == 0:
                truth = answer[0] if rng.random() < 0.9 else 1 - answer[0]
                feedback = merge_feedback(feedback, feedback_delta(answer, truth))
        out.append((batch.document(), feedback, batch.sample))
    return out


def load_rollups(pg_url: str, rows: int, now: datetime, sample_size: int) -> int:
    """Minute rows from the templates, and the hour rows the writer would have folded
    from them."""
    import psycopg2

    from registry_service.monitoring.rollup import (
        empty_feedback,
        empty_served,
        merge_feedback,
        merge_served,
    )

    start = (now - timedelta(days=DAYS)).replace(minute=0, second=0, microsecond=0)
    per_model = [int(rows * s) for s in SHARES]
    written = 0
    with psycopg2.connect(_dsn(pg_url)) as conn, conn.cursor() as cur:
        for model, total in zip(MODELS, per_model, strict=True):
            per_group_minute = max(1, round(total / MINUTES / len(GROUPS)))
            templates = rollup_templates(per_group_minute, 48, sample_size)
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            hours: dict[tuple[datetime, int], tuple[dict, dict]] = {}
            for minute in range(MINUTES):
                at = start + timedelta(minutes=minute)
                for g, (version, variant) in enumerate(GROUPS):
                    served, feedback, sample = templates[(minute * 2 + g) % len(templates)]
                    writer.writerow(
                        [
                            model,
                            1,
                            at.isoformat(),
                            version,
                            variant,
                            json.dumps(served),
                            json.dumps(feedback),
                            json.dumps(sample),
                        ]
                    )
                    hour = (at.replace(minute=0), g)
                    h_served, h_feedback = hours.get(hour, (empty_served(), empty_feedback()))
                    hours[hour] = (
                        merge_served(h_served, served),
                        merge_feedback(h_feedback, _delta(feedback)),
                    )
                    written += 1
            for (at, g), (served, feedback) in hours.items():
                version, variant = GROUPS[g]
                writer.writerow(
                    [
                        model,
                        60,
                        at.isoformat(),
                        version,
                        variant,
                        json.dumps(served),
                        json.dumps(feedback),
                        "[]",
                    ]
                )
                written += 1
            buffer.seek(0)
            cur.copy_expert(
                "COPY prediction_rollups (model_name, span, minute, model_version, variant, "
                "served, feedback, sample) FROM STDIN WITH (FORMAT csv)",
                buffer,
            )
    return written


def _delta(feedback: dict) -> dict:
    return {"confusion": {}, "requests": 0, "reg_n": 0, "abs": 0.0, "sq": 0.0} | feedback


def timed_get(url: str, headers: dict, n: int) -> list[float]:
    latencies = []
    with requests.Session() as session:
        session.get(url, headers=headers, timeout=60).raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            session.get(url, headers=headers, timeout=60).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def predict_load(url: str, headers: dict, seconds: float, clients: int) -> tuple[list[float], int]:
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def worker(i: int) -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                session.post(url, headers=headers, json=BODY, timeout=30).raise_for_status()
                latencies[i].append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged = [x for part in latencies for x in part]
    return merged, len(merged)


def cpu_seconds(comm: str | None = None, pgid: int | None = None) -> float:
    """CPU time used so far by processes named ``comm`` or in process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        if (comm is not None and name == comm) or (pgid is not None and int(fields[2]) == pgid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def count_logged(pg_url: str, model: str) -> int:
    import psycopg2

    with psycopg2.connect(_dsn(pg_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM predictions WHERE model_name = %s", (model,))
        return cur.fetchone()[0]


def summary(label: str, samples: list[float]) -> str:
    return (
        f"{label:<46} p50 {percentile(samples, 50):8.1f} ms  p95 {percentile(samples, 95):8.1f} ms"
        f"  (n={len(samples)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    work = Path(tempfile.mkdtemp(prefix="monitoring-bench-"))
    pg = Postgres.start()
    mlflow_server = None
    processes = []
    try:
        mlflow_server = MlflowServer.start(create_database(pg.url, "mlflow"))
        registry_url = create_database(pg.url, "registry")
        env = {
            **os.environ,
            "REGISTRY_DATA_DIR": str(work / "registry"),
            "REGISTRY_DATABASE_URL": registry_url,
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
        }
        cli(env, "db", "upgrade")
        roles = {
            "requester": "requester",
            "approver": "approver",
            "approver2": "approver",
            "predictor": "predictor",
            "viewer": "viewer",
        }
        tokens = issue_tokens(env, roles)
        save_pipeline(work / "model", seed=1)
        client = MlflowClient(mlflow_server.uri)
        experiment = client.create_experiment("monitoring-bench")
        run_id = client.create_run(experiment).info.run_id
        client.log_artifacts(run_id, str(work / "model"), "model")
        client.set_terminated(run_id)

        port = free_port()
        service = start_service(env, port)
        processes.append(service)
        base = f"http://127.0.0.1:{port}"
        requester = {"Authorization": f"Bearer {tokens['requester']}"}
        viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
        for model in [*MODELS, "live"]:
            requests.post(
                f"{base}/api/v1/models", headers=requester, json={"name": model}
            ).raise_for_status()
            for _ in GROUPS:
                requests.post(
                    f"{base}/api/v1/models/{model}/versions",
                    headers=requester,
                    json={"run_id": run_id},
                ).raise_for_status()
        promote(base, tokens, "live", 1)

        now = datetime.now(UTC)
        started = time.perf_counter()
        load_predictions(registry_url, args.rows, now)
        raw_seconds = time.perf_counter() - started
        started = time.perf_counter()
        rollups = load_rollups(registry_url, args.rows, now, 50)
        rollup_seconds = time.perf_counter() - started
        print(
            f"loaded {args.rows:,} predictions in {raw_seconds:.0f} s and {rollups:,} rollup rows "
            f"(minute and hour) in {rollup_seconds:.0f} s (5 models, 7 days; m0 has 40%)"
        )
        # A reference for m0 version 1, so that drift has something to compare with.
        import numpy as np

        rng = np.random.default_rng(2)
        records = [
            {f: float(v) for f, v in zip(FEATURES, r, strict=True)}
            for r in rng.random((2000, len(FEATURES)))
        ]
        requests.put(
            f"{base}/api/v1/models/m0/versions/1/reference",
            headers={"Authorization": f"Bearer {tokens['approver']}"},
            json={"records": records},
        ).raise_for_status()

        q = args.queries
        print(f"\nqueries through the service, one kept-alive client, {q} each after warm-up")
        day = timed_get(f"{base}/api/v1/models/m0/monitoring?since=24h", viewer, q)
        week = timed_get(f"{base}/api/v1/models/m0/monitoring?since=7d", viewer, max(5, q // 4))
        hourly = timed_get(
            f"{base}/api/v1/models/m0/monitoring?since=24h&interval=1h", viewer, max(5, q // 2)
        )
        drift = timed_get(
            f"{base}/api/v1/models/m0/drift?since=24h&version=1", viewer, max(5, q // 4)
        )
        print(summary("monitoring, m0, 24-hour window", day))
        print(summary("monitoring, m0, 7-day window", week))
        print(summary("monitoring, m0, 24 hours as an hourly series", hourly))
        print(summary("drift, m0 version 1, one day", drift))

        # Log on and log off side by side, in alternating rounds, so that neither
        # gets the warmer machine.
        off_port = free_port()
        off_service = start_service({**env, "REGISTRY_PREDICTION_LOG": "0"}, off_port)
        processes.append(off_service)
        predictor = {"Authorization": f"Bearer {tokens['predictor']}"}
        urls = {
            "on": (f"{base}/api/v1/models/live/predict", service.pid),
            "off": (f"http://127.0.0.1:{off_port}/api/v1/models/live/predict", off_service.pid),
        }
        for url, _ in urls.values():
            for _ in range(30):
                requests.post(url, headers=predictor, json=BODY, timeout=60).raise_for_status()
        latencies: dict[str, list[float]] = {"on": [], "off": []}
        cpu = {"on": [0.0, 0.0], "off": [0.0, 0.0]}
        before = count_logged(registry_url, "live")
        rounds = 4
        for _ in range(rounds):
            for mode, (url, pgid) in urls.items():
                at = (cpu_seconds(comm="postgres"), cpu_seconds(pgid=pgid))
                samples, _n = predict_load(url, predictor, args.seconds / rounds, args.clients)
                latencies[mode] += samples
                time.sleep(1.5)  # the writer's last batches land in this round
                cpu[mode][0] += cpu_seconds(comm="postgres") - at[0]
                cpu[mode][1] += cpu_seconds(pgid=pgid) - at[1]
        logged = count_logged(registry_url, "live") - before
        dropped = [
            line
            for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines()
            if line.startswith("registry_prediction_log_dropped_total")
        ]
        on, off = latencies["on"], latencies["off"]
        print(
            f"\npredict with {args.clients} kept-alive clients, {args.seconds:.0f} s each way in "
            f"{rounds} alternating rounds"
        )
        print(summary(f"log on  ({len(on) / args.seconds:.0f} req/s)", on))
        print(summary(f"log off ({len(off) / args.seconds:.0f} req/s)", off))
        print(
            f"log on / off p95: {percentile(on, 95) / percentile(off, 95):.2f}x; "
            f"records written {logged} of {len(on)} answered "
            f"({logged / args.seconds:.0f} records/s); {dropped or 'none dropped'}"
        )
        per = {m: [1000 * c / len(latencies[m]) for c in cpu[m]] for m in cpu}
        print(
            f"CPU ms per answered prediction, log on: service {per['on'][1]:.2f}, PostgreSQL "
            f"{per['on'][0]:.2f}; log off: service {per['off'][1]:.2f}, PostgreSQL "
            f"{per['off'][0]:.2f}"
        )
    finally:
        for process in processes:
            stop(process)
        if mlflow_server is not None:
            mlflow_server.stop()
        pg.stop()


if __name__ == "__main__":
    main()
