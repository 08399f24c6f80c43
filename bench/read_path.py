"""GET one model version: MLflow's REST call against ours, remote and direct-store, in one run.

PostgreSQL holds MLflow's backend and our tables; MLflow runs `mlflow server` with its
default workers. Our service (gunicorn, 2 workers x 8 threads) runs twice: reaching MLflow
over HTTP, and in direct-store mode (MLflow's store read in-process from its database,
`REGISTRY_MLFLOW_SERVER_URL` for artifacts). Latency is per request on a new connection
(as most clients call) and on a kept-alive one; throughput from --clients kept-alive
clients. The targets are ratios against MLflow's fresh-connection figures.

    python bench/read_path.py [--requests 300] [--seconds 5] [--clients 8] [--runs 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.promotion_latency import migrated_service_env, token  # noqa: E402
from bench.runs_latency import load_runs  # noqa: E402
from bench.version_latency import row, sequential, start_service, stop, throughput  # noqa: E402
from tests.conftest import write_model_dir  # noqa: E402
from tests.rig import MlflowServer, Postgres, create_database, free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    work = Path(tempfile.mkdtemp(prefix="read-path-bench-"))
    pg = Postgres.start()
    server = None
    services = []
    try:
        mlflow_db = create_database(pg.url, "mlflow")
        server = MlflowServer.start(mlflow_db, workers=None)
        client = MlflowClient(server.uri)
        experiment = client.create_experiment("read-path")
        run_ids = load_runs(client, experiment, args.runs)
        with tempfile.TemporaryDirectory() as tmp:
            client.log_artifacts(run_ids[0], str(write_model_dir(Path(tmp))), "model")

        env, cli = migrated_service_env(pg.url, server.uri, work)
        viewer = token(cli, env, "reader", "viewer")
        direct_env = {
            **env,
            "MLFLOW_TRACKING_URI": mlflow_db,
            "REGISTRY_MLFLOW_SERVER_URL": server.uri,
            "REGISTRY_DATA_DIR": str(work / "direct"),
        }
        remote_port, direct_port = free_port(), free_port()
        services.append(start_service(env, remote_port))
        services.append(start_service(direct_env, direct_port))
        # Registered through the service, as its users do: the lineage is recorded.
        import requests

        writer = token(cli, env, "writer", "requester")
        base_url = f"http://127.0.0.1:{remote_port}/api/v1/models"
        requests.post(base_url, headers=writer, json={"name": "read-path-model"}, timeout=60)
        requests.post(
            f"{base_url}/read-path-model/versions",
            headers=writer,
            json={"run_id": run_ids[0]},
            timeout=60,
        ).raise_for_status()

        version = "/api/v1/models/read-path-model/versions/1"
        best = f"/api/v1/experiments/{experiment}/best-run?metric=auc"
        mlflow_version = f"{server.uri}/api/2.0/mlflow/model-versions/get"
        n, secs, clients = args.requests, args.seconds, args.clients
        print(
            f"{n} sequential requests per row after warm-up; req/s from {clients} kept-alive "
            f"clients for {secs:.0f} s; PostgreSQL for both; 2 cores\n"
        )
        query = "?name=read-path-model&version=1"
        theirs = row(
            "MLflow REST get-version, new connection",
            sequential(mlflow_version + query, {}, n, keep_alive=False),
            throughput(mlflow_version + query, {}, secs, clients),
        )
        row(
            "MLflow REST get-version, kept-alive",
            sequential(mlflow_version + query, {}, n, keep_alive=True),
        )
        figures = {}
        for label, port in (("remote (HTTP)", remote_port), ("direct-store", direct_port)):
            url = f"http://127.0.0.1:{port}{version}?include=run"
            row(
                f"ours GET version?include=run, {label}, new connection",
                sequential(url, viewer, n, keep_alive=False),
                throughput(url, viewer, secs, clients),
            )
            url = f"http://127.0.0.1:{port}{version}"
            figures[label] = row(
                f"ours GET version, {label}, new connection",
                sequential(url, viewer, n, keep_alive=False),
                throughput(url, viewer, secs, clients),
            )
            row(
                f"ours GET version, {label}, kept-alive",
                sequential(url, viewer, n, keep_alive=True),
            )
        for label, figure in figures.items():
            print(
                f"{label}: p95 ours/MLflow {figure['p95'] / theirs['p95']:.2f} (target <= 0.5), "
                f"req/s ours/MLflow {figure['rps'] / theirs['rps']:.2f} (target >= 2.0)"
            )
        search = (
            f"{server.uri}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment], "order_by": ["metrics.auc DESC"], "max_results": 1},
        )

        def mlflow_best():
            requests.post(search[0], json=search[1], timeout=30).raise_for_status()

        from bench.version_latency import timed

        base = row("MLflow REST runs/search best by auc, new connection", timed(mlflow_best, n))
        for label, port in (("remote (HTTP)", remote_port), ("direct-store", direct_port)):
            url = f"http://127.0.0.1:{port}{best}"
            mine = row(
                f"ours best-run, {label}, new connection",
                sequential(url, viewer, n, keep_alive=False),
            )
            print(f"  ratio p95 {mine['p95'] / base['p95']:.2f} (target <= 1.0)")
    finally:
        for service in services:
            stop(service)
        if server is not None:
            server.stop()
        pg.stop()


if __name__ == "__main__":
    main()
