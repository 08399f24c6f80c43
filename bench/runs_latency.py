"""Run search, best run, one run and compare: our REST endpoints against MLflow's own.

Starts PostgreSQL (our tables and MLflow's backend), a real `mlflow server` and
registry-service under gunicorn (2 workers x 8 threads), loads one experiment with
--runs finished runs (3 params, 3 metrics, 2 tags each), then, for the remote (HTTP)
and the direct-store deployment in turn, times each endpoint sequentially on a
kept-alive connection next to the MLflow REST call it wraps, in the same run (with the
delayed-ACK fix of gateway/http.py, so MLflow is not slowed by the stall the README
describes). Ratios are ours / MLflow's.

    python bench/runs_latency.py [--runs 1000] [--trials 100]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.promotion_latency import migrated_service_env, summary, token  # noqa: E402
from bench.version_latency import start_service, stop, timed  # noqa: E402
from registry_service.gateway.http import (  # noqa: E402
    QuickAckHTTPConnectionPool,
    QuickAckHTTPSConnectionPool,
)
from tests.rig import MlflowServer, Postgres, create_database, free_port  # noqa: E402


def load_runs(client, experiment_id: str, n: int) -> list[str]:
    from mlflow.entities import Metric, Param, RunTag

    rng = random.Random(7)
    ids = []
    now = int(time.time() * 1000)
    for i in range(n):
        run_id = client.create_run(experiment_id).info.run_id
        auc = rng.uniform(0.6, 0.95)
        client.log_batch(
            run_id,
            metrics=[
                Metric("auc", auc, now, 0),
                Metric("loss", 1 - auc, now, 0),
                Metric("latency_ms", rng.uniform(1, 20), now, 0),
            ],
            params=[Param("depth", str(i % 8)), Param("lr", "0.1"), Param("seed", str(i))],
            tags=[RunTag("team", "risk" if i % 3 else "growth"), RunTag("trial", str(i))],
        )
        client.set_terminated(run_id)
        ids.append(run_id)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    workdir = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    pg = Postgres.start()
    server = service = None
    try:
        mlflow_db = create_database(pg.url, "mlflow")
        server = MlflowServer.start(mlflow_db)
        client = MlflowClient(server.uri)
        experiment_id = client.create_experiment("bench-search")
        started = time.perf_counter()
        run_ids = load_runs(client, experiment_id, args.runs)
        print(f"loaded {args.runs} runs in {time.perf_counter() - started:.1f} s")

        env, cli = migrated_service_env(pg.url, server.uri, workdir)
        viewer = token(cli, env, "analyst", "viewer")
        modes = {
            "remote (HTTP)": env,
            "direct-store": {
                **env,
                "MLFLOW_TRACKING_URI": mlflow_db,
                "REGISTRY_MLFLOW_SERVER_URL": server.uri,
                "REGISTRY_DATA_DIR": str(workdir / "direct"),
            },
        }
        mlflow_api = f"{server.uri}/api/2.0/mlflow"
        ours, theirs = requests.Session(), requests.Session()
        ours.headers.update(viewer)
        # The baseline gets the same delayed-ACK fix our gateway uses towards MLflow,
        # so it is MLflow at its fastest, not MLflow plus a 40 ms stall.
        adapter = requests.adapters.HTTPAdapter()
        adapter.poolmanager.pool_classes_by_scheme = {
            "http": QuickAckHTTPConnectionPool,
            "https": QuickAckHTTPSConnectionPool,
        }
        theirs.mount("http://", adapter)

        def get(url, **params):
            return lambda: ours.get(url, params=params, timeout=30).raise_for_status()

        def mlflow_search(max_results=50, **body):
            """MLflow's runs/search in the experiment, best auc first."""
            body = {
                "experiment_ids": [experiment_id],
                "order_by": ["metrics.auc DESC"],
                "max_results": max_results,
                **body,
            }
            return lambda: theirs.post(
                f"{mlflow_api}/runs/search", json=body, timeout=30
            ).raise_for_status()

        five = run_ids[:5]
        print(f"\n{args.trials} sequential calls each, kept-alive connections; ms")
        # One deployment at a time, each timed next to MLflow's own call.
        for mode, mode_env in modes.items():
            port = free_port()
            service = start_service(mode_env, port)
            api = f"http://127.0.0.1:{port}/api/v1"
            print(f"-- {mode}")
            pairs = [
                (
                    "runs ordered by auc, page of 50",
                    mlflow_search(),
                    get(f"{api}/experiments/{experiment_id}/runs", order_by="auc", max_results=50),
                ),
                (
                    "runs filtered (team, auc > 0.9) ordered by auc",
                    mlflow_search(filter="tags.team = 'risk' AND metrics.auc > 0.9"),
                    get(
                        f"{api}/experiments/{experiment_id}/runs",
                        filter="tags.team = 'risk' AND metrics.auc > 0.9",
                        order_by="auc",
                        max_results=50,
                    ),
                ),
                (
                    "best run by auc (finished only)",
                    mlflow_search(max_results=1, filter="attributes.status = 'FINISHED'"),
                    get(f"{api}/experiments/{experiment_id}/best-run", metric="auc"),
                ),
                (
                    "one run",
                    lambda: theirs.get(
                        f"{mlflow_api}/runs/get", params={"run_id": run_ids[0]}, timeout=30
                    ).raise_for_status(),
                    get(f"{api}/runs/{run_ids[0]}"),
                ),
                (
                    "compare 5 runs (baseline: 5 runs/get)",
                    lambda: [
                        theirs.get(
                            f"{mlflow_api}/runs/get", params={"run_id": r}, timeout=30
                        ).raise_for_status()
                        for r in five
                    ],
                    get(f"{api}/runs/compare", run_ids=",".join(five)),
                ),
            ]
            for label, baseline, endpoint in pairs:
                base = summary(f"MLflow: {label}", timed(baseline, args.trials))
                mine = summary(f"ours:   {label}", timed(endpoint, args.trials))
                print(
                    f"{'ratio ours/MLflow':<58} p50 {mine['p50'] / base['p50']:7.2f}  "
                    f"p95 {mine['p95'] / base['p95']:7.2f}\n"
                )
            stop(service)
            service = None
    finally:
        if service is not None:
            stop(service)
        if server is not None:
            server.stop()
        pg.stop()


if __name__ == "__main__":
    main()
